-- labeling.cost_projection: one row per teacher run — what the run cost, and what labeling the
-- whole corpus would cost with the LLM alone versus with LlamBERT (the LLM on the sample, the
-- student over the corpus). Throughput is the run's own prompts/s (or, for a run served
-- entirely from the cache, the last run of the same model, backend and mode that asked the
-- LLM); the student's docs/s is measured from ops.stage_runs ('predict'), NULL until a
-- prediction has run. Money only for priced endpoints (price per 1M tokens, from the config).
-- Variables: run_id, price_in_per_1m, price_out_per_1m.
-- (The table itself is in the @ddl section at the end of this file.)

DELETE FROM labeling.cost_projection
WHERE run_id = getvariable('run_id');

INSERT INTO labeling.cost_projection BY NAME
WITH this_run AS (
    SELECT * FROM labeling.llm_runs
    WHERE run_id = getvariable('run_id')
),

speed AS (  -- the throughput to project with: this run's, else the latest comparable paid run
    SELECT
        r.run_id AS throughput_from_run,
        r.prompts_per_s AS pps
    FROM labeling.llm_runs AS r, this_run AS t
    WHERE
        r.model_identity = t.model_identity AND r.backend = t.backend AND r.mode = t.mode
        AND r.prompts > 0 AND r.prompts_per_s > 0
    ORDER BY (r.run_id = t.run_id) DESC, r.finished_at DESC
    LIMIT 1
),

answers AS (
    SELECT
        count(*) AS sample_docs,
        count(*) FILTER (WHERE m.discard_reason IS NOT NULL) AS discarded,
        avg(r.prompt_tokens) AS avg_prompt_tokens,
        avg(r.completion_tokens) AS avg_completion_tokens
    FROM labeling.llm_responses AS r LEFT JOIN labeling.answer_matches AS m USING (doc_id)
),

student AS (
    SELECT sum(rows) / nullif(sum(seconds), 0) AS student_docs_per_s
    FROM ops.stage_runs
    WHERE stage = 'predict' AND rows > 0
),

corpus AS (
    SELECT count(*) AS corpus_docs FROM raw.corpus
)

SELECT
    t.run_id,
    t.model_identity,
    t.backend,
    t.mode,
    t.prompts,
    t.prompt_tokens,
    t.completion_tokens,
    t.seconds,
    t.prompts_per_s,
    s.throughput_from_run,
    a.sample_docs,
    a.discarded,
    a.discarded / nullif(a.sample_docs, 0) AS discard_rate,
    c.corpus_docs,
    a.avg_prompt_tokens,
    a.avg_completion_tokens,
    st.student_docs_per_s,
    c.corpus_docs / s.pps / 3600 AS llm_only_hours,
    (a.sample_docs / s.pps + c.corpus_docs / st.student_docs_per_s) / 3600 AS llambert_hours,
    getvariable('price_in_per_1m') AS price_in_per_1m,
    getvariable('price_out_per_1m') AS price_out_per_1m,
    c.corpus_docs * (
        a.avg_prompt_tokens * getvariable('price_in_per_1m')
        + a.avg_completion_tokens * getvariable('price_out_per_1m')
    ) / 1e6 AS llm_only_cost,
    a.sample_docs * (
        a.avg_prompt_tokens * getvariable('price_in_per_1m')
        + a.avg_completion_tokens * getvariable('price_out_per_1m')
    ) / 1e6 AS llambert_llm_cost
FROM this_run AS t
CROSS JOIN answers AS a
CROSS JOIN corpus AS c
CROSS JOIN student AS st
LEFT JOIN speed AS s ON TRUE;

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- One row per teacher run: LLM alone versus LlamBERT over the whole corpus
-- (sql/labeling/cost_projection.sql fills it; refreshed by evaluation.report once the student has run).
CREATE TABLE IF NOT EXISTS labeling.cost_projection (
    run_id VARCHAR PRIMARY KEY,
    model_identity VARCHAR,
    backend VARCHAR,
    mode VARCHAR,
    prompts INTEGER,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    seconds DOUBLE,
    prompts_per_s DOUBLE,
    throughput_from_run VARCHAR,
    sample_docs BIGINT,
    discarded BIGINT,
    discard_rate DOUBLE,
    corpus_docs BIGINT,
    avg_prompt_tokens DOUBLE,
    avg_completion_tokens DOUBLE,
    student_docs_per_s DOUBLE,
    llm_only_hours DOUBLE,
    llambert_hours DOUBLE,
    price_in_per_1m DOUBLE,
    price_out_per_1m DOUBLE,
    llm_only_cost DOUBLE,
    llambert_llm_cost DOUBLE,
    created_at TIMESTAMP DEFAULT current_timestamp
);
