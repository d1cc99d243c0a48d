-- labeling.pool: every document the teacher may label, in the seeded order the sample takes them:
-- documents that occur in a pool split and in no excluded split (never test, by default).
-- pool_key is stable per (seed, document), so growing the sample only ever appends to it.
-- Variables: pool_splits, exclude_splits, sample_seed.
CREATE OR REPLACE TABLE labeling.pool AS
WITH pool AS (
    SELECT DISTINCT o.doc_id
    FROM raw.occurrences AS o
    WHERE
        list_contains(getvariable('pool_splits'), o.split)
        AND o.doc_id NOT IN (
            SELECT doc_id FROM raw.occurrences
            WHERE list_contains(getvariable('exclude_splits'), split)
        )
)

SELECT
    row_number() OVER (ORDER BY md5(getvariable('sample_seed')::VARCHAR || ':' || doc_id)) AS pool_rank,
    doc_id
FROM pool
ORDER BY pool_rank;
