-- views.discard_reasons: everything that was dropped, and why: input rows rejected at ingest
-- (raw.rejected) and teacher answers the parser could not use (labeling.discarded), with
-- each reason's share of its stage and one example.
CREATE OR REPLACE VIEW views.discard_reasons AS
WITH dropped AS (
    SELECT
        'ingest' AS stage,
        batch,
        reason,
        left(coalesce(text, ''), 120) AS example
    FROM raw.rejected
    UNION ALL
    SELECT
        'teacher_answer',
        NULL,
        reason,
        coalesce(raw_text, '(no answer)')
    FROM labeling.discarded
),

totals AS (
    SELECT
        'ingest' AS stage,
        (SELECT count(*) FROM raw.occurrences) + (SELECT count(*) FROM raw.rejected) AS total
    UNION ALL
    SELECT
        'teacher_answer',
        (SELECT count(*) FROM labeling.llm_responses)
)

SELECT
    d.stage,
    d.reason,
    count(*) AS rows,
    round(count(*) / nullif(any_value(t.total), 0), 4) AS share_of_stage,
    any_value(t.total) AS stage_rows,
    min(d.example) AS example
FROM dropped AS d INNER JOIN totals AS t USING (stage)
GROUP BY d.stage, d.reason
ORDER BY d.stage, count(*) DESC;
