-- raw.rejected: input rows that could not be used, with their reason. Re-running a batch
-- replaces its rows. Reads the staged frame `staged_rejected`.
DELETE FROM raw.rejected
WHERE batch = getvariable('batch');
INSERT INTO raw.rejected (batch, source, source_file, source_row, source_id, split, text, gold_label, reason)
SELECT
    getvariable('batch'),
    source,
    source_file,
    source_row,
    source_id,
    split,
    text,
    gold_label,
    reason
FROM staged_rejected;

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- Input rows that could not be used, kept whole with the reason.
CREATE TABLE IF NOT EXISTS raw.rejected (
    batch VARCHAR NOT NULL,
    source VARCHAR,
    source_file VARCHAR,
    source_row BIGINT,
    source_id VARCHAR,
    split VARCHAR,
    text VARCHAR,
    gold_label BIGINT,
    reason VARCHAR NOT NULL,
    rejected_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
