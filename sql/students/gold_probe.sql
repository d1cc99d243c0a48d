-- students.gold_probe: a fixed set of gold-labeled train documents that no recipe trains on, so
-- every checkpoint of the task is scored on the very same documents. Validation splits are held
-- out of each recipe's own training labels (LLM labels for llambert, gold for baseline) and are not
-- comparable across recipes; the probe is. Seeded and stable: pipeline.ensure_gold_probe keeps the
-- table while (seed, size) are unchanged, so new batches never move documents in or out of it.
CREATE OR REPLACE TABLE students.gold_probe AS
WITH gold AS (
    SELECT
        doc_id,
        gold_label
    FROM raw.corpus
    WHERE split = 'train' AND gold_label IS NOT NULL AND NOT gold_conflict
)

SELECT
    doc_id,
    gold_label,
    getvariable('probe_params') AS probe_params
FROM gold
ORDER BY md5(getvariable('probe_seed')::VARCHAR || ':probe:' || doc_id)
-- at most a fifth of the gold documents, so small corpora keep most of theirs for training
LIMIT least(getvariable('probe_size'), (SELECT count(all_gold.doc_id) FROM gold AS all_gold) // 5);
