-- raw.occurrences: every accepted input row of a batch, mapped to its doc_id.
-- Reads the staged frame `staged_rows` (columns of llambert.corpus.readers.CORPUS_SCHEMA).
-- Re-running a batch replaces its rows.
DELETE FROM raw.occurrences WHERE batch = getvariable('batch');
INSERT INTO raw.occurrences
SELECT getvariable('batch'), source, source_file, source_row, source_id, split, md5(text), gold_label
FROM staged_rows;
