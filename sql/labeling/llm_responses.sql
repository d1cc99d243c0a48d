-- labeling.llm_responses: the teacher's raw answer for every sampled document, under the
-- current teacher configuration (model identity, prompt version, decoding parameters).
-- Answers live in labeling.llm_cache; this table is the sample's view of them.
CREATE OR REPLACE TABLE labeling.llm_responses AS
SELECT
    s.sample_rank,
    s.doc_id,
    q.model_identity,
    q.prompt_version,
    q.prompt_hash,
    q.decoding,
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
        AND q.model_identity = getvariable('model_identity')
        AND q.prompt_version = getvariable('prompt_version')
        AND q.decoding = getvariable('decoding')
INNER JOIN labeling.llm_cache AS c USING (cache_key)
ORDER BY s.sample_rank;
