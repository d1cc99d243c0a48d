-- ops.stage_runs: seconds and rows of each stage of each run, for the report and the cost views
-- (llambert.warehouse.record_stage). Reads the staged frame `staged_stage_runs`
-- (stage, partition, rows, seconds, details as JSON text, run_id).
INSERT INTO ops.stage_runs BY NAME
SELECT * REPLACE (details::JSON AS details)
FROM staged_stage_runs;

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- Seconds and rows of each stage of each run, for the report and the cost views.
CREATE TABLE IF NOT EXISTS ops.stage_runs (
    stage VARCHAR NOT NULL,
    partition VARCHAR,
    rows BIGINT,
    seconds DOUBLE NOT NULL,
    details JSON,
    run_id VARCHAR,
    finished_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
