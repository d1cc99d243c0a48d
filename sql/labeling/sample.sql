-- labeling.sample: the documents the teacher labels. A seeded, stable random order over the
-- pool (documents that occur in a pool split and in no excluded split), so growing the sample
-- keeps every document already chosen and only adds new ones.
CREATE OR REPLACE TABLE labeling.sample AS
WITH pool AS (
    SELECT DISTINCT o.doc_id
    FROM raw.occurrences o
    WHERE list_contains(getvariable('pool_splits'), o.split)
      AND o.doc_id NOT IN (
          SELECT doc_id FROM raw.occurrences
          WHERE list_contains(getvariable('exclude_splits'), split)
      )
), ranked AS (
    SELECT doc_id, md5(getvariable('sample_seed')::VARCHAR || ':' || doc_id) AS sort_key FROM pool
)
SELECT
    row_number() OVER (ORDER BY sort_key) AS sample_rank,
    r.doc_id,
    c.split,
    c.gold_label
FROM ranked r JOIN raw.corpus c USING (doc_id)
ORDER BY sort_key
LIMIT getvariable('sample_size');
