-- labeling.llm_responses: the teacher's raw answer for every sampled document, under the
-- current teacher configuration (model identity, prompt version, decoding parameters).
-- Answers live in labeling.llm_cache; this table is the sample's view of them.
-- Variables: model_identity, prompt_version, decoding (the teacher, teacher.model); cascade_identity,
-- cascade_decoding, cascade_threshold (the cascade's small model, teacher.cascade; NULL when it is off).
-- With a cascade a document keeps the small model's answer when its top label probability is at least
-- the threshold (answered_by 'cascade_small'), else it has the teacher's (answered_by 'teacher'); a
-- document with neither (the teacher has not answered it yet) has no row. This is the one place the
-- rule lives: the teacher step reads this table to decide which documents to escalate.
CREATE OR REPLACE TABLE labeling.llm_responses AS
WITH answers AS (
    SELECT
        s.sample_rank,
        s.doc_id,
        q.model_identity,
        q.prompt_version,
        q.prompt_hash,
        q.decoding,
        CASE
            WHEN q.model_identity = getvariable('model_identity') AND q.decoding = getvariable('decoding')
                THEN 'teacher'
            ELSE 'cascade_small'
        END AS answered_by,
        c.backend,
        c.mode,
        c.raw_text,
        c.label_probs,
        c.prompt_tokens,
        c.completion_tokens,
        c.latency_s,
        c.created_at AS answered_at
    FROM labeling.sample AS s
    INNER JOIN labeling.llm_requests AS q
        ON
            s.doc_id = q.doc_id
            AND q.prompt_version = getvariable('prompt_version')
            AND (
                (q.model_identity = getvariable('model_identity') AND q.decoding = getvariable('decoding'))
                OR (
                    q.model_identity = getvariable('cascade_identity')
                    AND q.decoding = getvariable('cascade_decoding')
                )
            )
    INNER JOIN labeling.llm_cache AS c USING (cache_key)
),

confident AS (  -- the small model's sure answers: these documents are not escalated
    SELECT doc_id
    FROM answers
    WHERE
        answered_by = 'cascade_small'
        AND list_max(map_values(label_probs)) >= getvariable('cascade_threshold')
)

SELECT *
FROM answers
WHERE
    (answered_by = 'cascade_small' AND doc_id IN (SELECT doc_id FROM confident))
    OR (answered_by = 'teacher' AND doc_id NOT IN (SELECT doc_id FROM confident))
ORDER BY sample_rank;
