-- The SQL gates of labeling.llm_responses (how the engine runs them: data_contracts/raw.corpus.gates.sql).

-- gate: coverage
WITH counts AS (
    SELECT
        (SELECT count(*) FROM labeling.sample) AS n,
        (
            SELECT count(*) FROM labeling.sample
            WHERE doc_id NOT IN (SELECT doc_id FROM labeling.llm_responses)
        ) AS missing
)

SELECT
    missing = 0 AS passed,
    format('{:,} of {:,} sampled documents have an answer', n - missing, n) AS description,
    CASE WHEN n > 0 THEN (n - missing) / n ELSE 1.0 END AS observed,
    1.0 AS bound,
    n AS rows_checked,
    missing AS rows_failing
FROM counts;

-- failing: coverage
SELECT
    s.sample_rank,
    s.doc_id,
    s.split
FROM labeling.sample AS s
WHERE s.doc_id NOT IN (SELECT doc_id FROM labeling.llm_responses)
ORDER BY s.sample_rank
LIMIT getvariable('max_examples');
