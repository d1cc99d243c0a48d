-- ops.contract_results: every evaluation of a data contract (llambert/contracts.py), one row per
-- contract per table (and batch, for partitioned tables) per check run. `engine` says how it ran:
-- great_expectations (row-level expectations of data_contracts/<table>.json on a frame pulled from
-- DuckDB; `sampled` when the table was larger than checks.max_validated_rows) or sql (aggregates
-- over every row). `failing_examples` holds up to 10 offending rows as JSON.
-- Reads the staged frame `staged_contract_results` (the table's columns but checked_at, by name;
-- details and failing_examples as JSON text).
INSERT INTO ops.contract_results BY NAME
SELECT * REPLACE (details::JSON AS details, failing_examples::JSON AS failing_examples)
FROM staged_contract_results;

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
CREATE TABLE IF NOT EXISTS ops.contract_results (
    checked_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    run_id VARCHAR,
    table_name VARCHAR NOT NULL,
    partition VARCHAR,
    contract VARCHAR NOT NULL,
    passed BOOLEAN NOT NULL,
    skipped BOOLEAN NOT NULL DEFAULT FALSE,
    blocking BOOLEAN NOT NULL,
    engine VARCHAR NOT NULL,
    observed DOUBLE,
    bound DOUBLE,
    rows_checked BIGINT,
    rows_failing BIGINT,
    sampled BOOLEAN NOT NULL DEFAULT FALSE,
    description VARCHAR NOT NULL,
    details JSON,
    failing_examples JSON
);
