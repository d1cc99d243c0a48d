-- labeling.audit_runs: one row per audited batch, student-teacher agreement on its least confident
-- documents (llambert/audit.py). Reads the staged frame `staged_audit_run` (the table's columns but
-- audited_at, by name). Re-auditing a batch replaces its row.
INSERT OR REPLACE INTO labeling.audit_runs BY NAME
SELECT
    *,
    current_timestamp AS audited_at
FROM staged_audit_run;

-- @clear: a batch with nothing to audit keeps no row. Variables: batch.
DELETE FROM labeling.audit_runs
WHERE batch = getvariable('batch');

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- One row per audited batch: student-teacher agreement on its least confident documents.
CREATE TABLE IF NOT EXISTS labeling.audit_runs (
    batch VARCHAR PRIMARY KEY,
    checkpoint_id VARCHAR NOT NULL,
    model_identity VARCHAR NOT NULL,
    k INTEGER NOT NULL,
    audited INTEGER NOT NULL,
    parsed INTEGER NOT NULL,
    agreed INTEGER NOT NULL,
    agreement DOUBLE,
    teacher_prompts INTEGER NOT NULL,
    teacher_cached INTEGER NOT NULL,
    retrain_requested BOOLEAN NOT NULL,
    seconds DOUBLE NOT NULL,
    audited_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
