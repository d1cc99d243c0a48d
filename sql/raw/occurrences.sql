-- raw.occurrences: every accepted input row of a batch, mapped to its doc_id.
-- Reads the staged frame `staged_rows` (columns of llambert.corpus.readers.CORPUS_SCHEMA).
-- Re-running a batch replaces its rows.
DELETE FROM raw.occurrences
WHERE batch = getvariable('batch');
INSERT INTO raw.occurrences
SELECT
    getvariable('batch'),
    source,
    source_file,
    source_row,
    source_id,
    split,
    md5(text),
    gold_label
FROM staged_rows;

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- Every input row that was accepted, with the doc_id its text maps to.
CREATE TABLE IF NOT EXISTS raw.occurrences (
    batch VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    source_file VARCHAR NOT NULL,
    source_row BIGINT NOT NULL,
    source_id VARCHAR,
    split VARCHAR NOT NULL,
    doc_id VARCHAR NOT NULL,
    gold_label BIGINT
);
