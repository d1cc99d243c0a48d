-- labeling.llm_cache: every answer ever paid for (llambert/teacher/runner.py), committed with the run's
-- counts in one transaction. Reads the staged frame `staged_answers` (the table's columns, the teacher's
-- label distribution as two lists probs_keys / probs_values, NULL for generate-mode answers).
-- A key already cached keeps its first answer.
INSERT OR IGNORE INTO labeling.llm_cache
(
    cache_key, model_identity, backend, mode, decoding, prompt_hash, raw_text, label_probs,
    prompt_tokens, completion_tokens, latency_s, run_id
)
SELECT
    cache_key,
    model_identity,
    backend,
    mode,
    decoding,
    prompt_hash,
    raw_text,
    CASE WHEN probs_keys IS NULL THEN NULL ELSE map(probs_keys, probs_values) END,
    prompt_tokens,
    completion_tokens,
    latency_s,
    run_id
FROM staged_answers;

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- Every answer ever paid for, keyed by (model identity, decoding parameters, rendered prompt).
CREATE TABLE IF NOT EXISTS labeling.llm_cache (
    cache_key VARCHAR PRIMARY KEY,
    model_identity VARCHAR NOT NULL,
    backend VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    decoding VARCHAR NOT NULL,
    prompt_hash VARCHAR NOT NULL,
    raw_text VARCHAR,
    label_probs MAP (VARCHAR, DOUBLE),
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s DOUBLE,
    run_id VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
