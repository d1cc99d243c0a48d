-- students.retrain_requests: a retrain asked for by an audit (llambert/audit.py: enough new labels, or
-- agreement below the bound), one per (champion, batch). Reads the staged frame `staged_retrain_request`
-- (checkpoint_id, batch, reason, new_labels, agreement); a repeated request replaces the earlier one.
INSERT OR REPLACE INTO students.retrain_requests BY NAME
SELECT
    *,
    current_timestamp AS requested_at
FROM staged_retrain_request;

-- @withdraw: a re-audit that no longer warrants it withdraws the batch's request.
-- Variables: checkpoint_id, batch.
DELETE FROM students.retrain_requests
WHERE checkpoint_id = getvariable('checkpoint_id') AND batch = getvariable('batch');

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- A retrain asked for by an audit (enough new labels, or agreement below the bound); one per
-- (champion, batch). It is answered once a checkpoint newer than the request exists.
CREATE TABLE IF NOT EXISTS students.retrain_requests (
    checkpoint_id VARCHAR NOT NULL,
    batch VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    new_labels INTEGER NOT NULL,
    agreement DOUBLE,
    requested_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (checkpoint_id, batch)
);
