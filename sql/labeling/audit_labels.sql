-- labeling.audit_labels: the teacher's labels for the champion's least confident documents of a batch
-- (llambert/audit.py), parsed by the task's parser (labeling.parse_answers, sql/labeling/answer_matches.sql).
-- Reads `staged_audit_docs` (doc_id, student_label, student_probability) and the teacher's cached answers
-- under the current teacher configuration. Variables: batch, checkpoint_id, model_identity, prompt_version,
-- decoding. Re-auditing a batch replaces its rows.
DELETE FROM labeling.audit_labels
WHERE batch = getvariable('batch');
INSERT INTO labeling.audit_labels BY NAME
WITH audit_answers AS (  -- noqa: ST03
    SELECT
        d.doc_id,
        c.raw_text,
        c.label_probs
    FROM staged_audit_docs AS d
    INNER JOIN labeling.llm_requests AS q
        ON
            d.doc_id = q.doc_id
            AND q.model_identity = getvariable('model_identity')
            AND q.prompt_version = getvariable('prompt_version')
            AND q.decoding = getvariable('decoding')
    INNER JOIN labeling.llm_cache AS c USING (cache_key)
    QUALIFY row_number() OVER (PARTITION BY d.doc_id ORDER BY c.created_at) = 1
)

SELECT
    getvariable('batch') AS batch,
    d.doc_id,
    getvariable('checkpoint_id') AS checkpoint_id,
    d.student_label,
    d.student_probability,
    getvariable('model_identity') AS model_identity,
    getvariable('prompt_version') AS prompt_version,
    m.raw_text,
    m.label,
    m.label_name,
    m.discard_reason
FROM staged_audit_docs AS d
INNER JOIN labeling.parse_answers('audit_answers') AS m USING (doc_id);

-- @clear: a batch with nothing to audit keeps no rows. Variables: batch.
DELETE FROM labeling.audit_labels
WHERE batch = getvariable('batch');

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- The teacher's labels for the student's least confident documents of a batch (the audit).
-- Parsed labels (label NOT NULL) join the student's training pool. Re-auditing a batch replaces its rows.
CREATE TABLE IF NOT EXISTS labeling.audit_labels (
    batch VARCHAR NOT NULL,
    doc_id VARCHAR NOT NULL,
    checkpoint_id VARCHAR NOT NULL,
    student_label BIGINT NOT NULL,
    student_probability DOUBLE NOT NULL,
    model_identity VARCHAR NOT NULL,
    prompt_version VARCHAR NOT NULL,
    raw_text VARCHAR,
    label BIGINT,
    label_name VARCHAR,
    discard_reason VARCHAR,
    audited_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (batch, doc_id)
);
