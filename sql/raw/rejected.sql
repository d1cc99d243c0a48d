-- raw.rejected: input rows that could not be used, with their reason. Re-running a batch
-- replaces its rows. Reads the staged frame `staged_rejected`.
DELETE FROM raw.rejected WHERE batch = getvariable('batch');
INSERT INTO raw.rejected (batch, source, source_file, source_row, source_id, split, text, gold_label, reason)
SELECT getvariable('batch'), source, source_file, source_row, source_id, split, text, gold_label, reason
FROM staged_rejected;
