-- labeling.llm_requests: which cache entry answers which document under a teacher configuration
-- (llambert/teacher/runner.py:register_requests). Reads the staged frame `staged_requests`
-- (doc_id, cache_key, model_identity, prompt_version, prompt_hash, decoding); a pair already known is kept.
INSERT OR IGNORE INTO labeling.llm_requests BY NAME
SELECT *
FROM staged_requests;

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- Which cache entry answers which document under the current teacher configuration.
CREATE TABLE IF NOT EXISTS labeling.llm_requests (
    doc_id VARCHAR NOT NULL,
    cache_key VARCHAR NOT NULL,
    model_identity VARCHAR NOT NULL,
    prompt_version VARCHAR NOT NULL,
    prompt_hash VARCHAR NOT NULL,
    decoding VARCHAR NOT NULL,
    PRIMARY KEY (doc_id, cache_key)
);
