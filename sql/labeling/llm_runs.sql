-- labeling.llm_runs: one row per teacher run (llambert/teacher/runner.py), written when the run starts
-- and updated as it commits answers (the life of a row is told with the table at the end of this file).
-- A run begins: reads the staged frame `staged_llm_run` (run_id, model_identity, backend, mode,
-- requested, cached, started_at, pid, host, role, cascade_threshold); nothing is asked or answered yet.
INSERT INTO labeling.llm_runs BY NAME
SELECT
    *,
    0 AS prompts,
    0 AS answered,
    0 AS prompt_tokens,
    0 AS completion_tokens,
    0.0 AS seconds,
    NULL::DOUBLE AS prompts_per_s,
    current_timestamp AS finished_at,
    'running' AS status
FROM staged_llm_run;

-- @progress: the run's counts, committed with the answers due before each batch is sent (and at its end).
-- Reads `staged_llm_run` (run_id, prompts, answered, prompt_tokens, completion_tokens, seconds,
-- prompts_per_s, status).
UPDATE labeling.llm_runs r
SET
    prompts = s.prompts, answered = s.answered, prompt_tokens = s.prompt_tokens,
    completion_tokens = s.completion_tokens, seconds = s.seconds, prompts_per_s = s.prompts_per_s,
    status = s.status, finished_at = current_timestamp
FROM staged_llm_run AS s
WHERE r.run_id = s.run_id;

-- @cascade: what a cascade's small-model run decided (llambert/pipeline.py:label_sample): how many of the
-- sampled documents it was not sure enough of and escalated to the teacher. Variables: run_id, escalated,
-- escalated_share.
UPDATE labeling.llm_runs
SET escalated = getvariable('escalated'), escalated_share = getvariable('escalated_share')
WHERE run_id = getvariable('run_id');

-- @killed: 'running' rows whose process is dead. Variables: dead_runs (run ids).
UPDATE labeling.llm_runs SET status = 'killed'
WHERE list_contains(getvariable('dead_runs'), run_id);

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- One row per teacher run: what it cost and what labeling everything would cost. The row is written
-- when the run starts (status 'running') and updated before each batch is sent, in the transaction
-- that commits the answers received so far: prompts = asked (counted before sending, so a batch lost
-- in flight is counted), answered = answers committed, tokens = those of every answer received.
-- A run that raised is 'failed'; one whose process died (kill -9, power loss) is marked 'killed' by
-- the next teacher run (finished_at is then its last accounting).
CREATE TABLE IF NOT EXISTS labeling.llm_runs (
    run_id VARCHAR PRIMARY KEY,
    model_identity VARCHAR NOT NULL,
    backend VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    requested INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    prompts INTEGER NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    seconds DOUBLE NOT NULL,
    prompts_per_s DOUBLE,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
-- Added by issue 13 (ALTER keeps warehouses made before it; their rows were all finished runs).
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS status VARCHAR DEFAULT 'done';
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS answered INTEGER;
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS pid INTEGER;
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS host VARCHAR;
UPDATE labeling.llm_runs SET answered = prompts
WHERE answered IS NULL AND status = 'done';
-- Added by issue 17 (the cascade). role: 'teacher' (teacher.model) or 'cascade_small' (teacher.cascade.model);
-- cascade_threshold: NULL without a cascade; escalated / escalated_share: on a cascade_small row, the
-- sampled documents whose top label probability was below the threshold (sent on to the teacher).
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS role VARCHAR DEFAULT 'teacher';
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS cascade_threshold DOUBLE;
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS escalated INTEGER;
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS escalated_share DOUBLE;
