-- views.stage_costs: what each stage cost: runs, rows, seconds and throughput over all runs,
-- the latest run on its own, and the teacher's tokens (from labeling.llm_runs).
CREATE OR REPLACE VIEW views.stage_costs AS
WITH runs AS (
    SELECT
        s.*,
        r.prompt_tokens,
        r.completion_tokens,
        row_number() OVER (PARTITION BY s.stage ORDER BY s.finished_at DESC) AS recency
    FROM ops.stage_runs AS s
    LEFT JOIN labeling.llm_runs AS r ON s.run_id = r.run_id
)

SELECT
    stage,
    count(*) AS runs,
    sum(rows)::BIGINT AS rows_total,
    round(sum(seconds), 2) AS seconds_total,
    round(sum(rows) / nullif(sum(seconds), 0), 2) AS rows_per_s,
    max(rows) FILTER (WHERE recency = 1) AS last_rows,
    round(max(seconds) FILTER (WHERE recency = 1), 2) AS last_seconds,
    sum(prompt_tokens)::BIGINT AS prompt_tokens,
    sum(completion_tokens)::BIGINT AS completion_tokens,
    max(finished_at) AS last_finished_at
FROM runs
GROUP BY stage
ORDER BY CASE stage
    WHEN 'ingest' THEN 1 WHEN 'sample' THEN 2 WHEN 'teacher' THEN 3 WHEN 'parse' THEN 4
    WHEN 'train' THEN 5 WHEN 'predict' THEN 6 ELSE 7
END, stage;
