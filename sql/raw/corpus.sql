-- raw.corpus: one row per distinct text. A text already stored by another batch is not stored
-- again (its new occurrences are still counted in raw.occurrences). The split is the most
-- protective one the text appears in: the evaluation split first, so a text that is in both
-- train and test is never sampled for training. Gold labels that disagree become NULL and are
-- flagged in gold_conflict.
DELETE FROM raw.corpus
WHERE batch = getvariable('batch');
INSERT INTO raw.corpus (doc_id, batch, source, split, text, gold_label, n_copies, gold_conflict)
SELECT
    md5(text) AS doc_id,
    getvariable('batch') AS batch,
    arg_min(source, source_row) AS source,
    arg_min(split, CASE WHEN split = getvariable('eval_split') THEN 0 ELSE 1 END * 1e12 + source_row) AS split,
    any_value(text) AS text,
    CASE WHEN count(DISTINCT gold_label) = 1 THEN any_value(gold_label) END AS gold_label,
    count(*)::INTEGER AS n_copies,
    count(DISTINCT gold_label) > 1 AS gold_conflict
FROM staged_rows
WHERE md5(text) NOT IN (SELECT doc_id FROM raw.corpus)
GROUP BY md5(text);

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- One row per distinct text (doc_id = md5 of the exact UTF-8 text). `batch` is the Dagster
-- partition the text first arrived in; a text seen again is counted in raw.occurrences.
CREATE TABLE IF NOT EXISTS raw.corpus (
    doc_id VARCHAR PRIMARY KEY,
    batch VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    gold_label BIGINT,
    n_copies INTEGER NOT NULL,
    gold_conflict BOOLEAN NOT NULL DEFAULT FALSE,
    ingested_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
