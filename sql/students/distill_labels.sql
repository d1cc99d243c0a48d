-- students.distill_labels: the soft labels a trained student gave pool documents the teacher never saw,
-- for self-distillation (student.self_distill; README "Students"): the `distilled` checkpoint (an encoder)
-- and the `distilled_linear` one (TF-IDF, the distilled ensemble's other member) trained on the teacher's
-- labels plus these. One row per (checkpoint that trained on them, document); a reused checkpoint
-- adds none. Reads the staged frame `staged_distill_labels` (checkpoint_id, source_checkpoint_id,
-- doc_id, pool_rank, label, label_probs_json).
INSERT INTO students.distill_labels BY NAME
SELECT
    checkpoint_id,
    source_checkpoint_id,
    doc_id,
    pool_rank,
    label,
    label_probs_json::JSON::MAP (VARCHAR, DOUBLE) AS label_probs
FROM staged_distill_labels;

-- @pool: the documents to pseudo-label: the first `distill_n` of labeling.pool in its seeded order that
-- the teacher was not asked about (labeling.sample) and that the gold probe does not hold (the probe
-- judges the candidates: nothing may train on it). labeling.pool never holds an excluded split (test).
SELECT
    p.pool_rank,
    p.doc_id,
    c.text
FROM labeling.pool AS p
INNER JOIN raw.corpus AS c ON p.doc_id = c.doc_id
WHERE
    p.doc_id NOT IN (SELECT s.doc_id FROM labeling.sample AS s)
    AND p.doc_id NOT IN (SELECT g.doc_id FROM students.gold_probe AS g)
ORDER BY p.pool_rank
LIMIT getvariable('distill_n');

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- Pseudo-labels of self-distillation: which checkpoint gave them, which one trained on them.
CREATE TABLE IF NOT EXISTS students.distill_labels (
    checkpoint_id VARCHAR NOT NULL,
    source_checkpoint_id VARCHAR NOT NULL,
    doc_id VARCHAR NOT NULL,
    pool_rank BIGINT,
    label INTEGER NOT NULL,
    label_probs MAP (VARCHAR, DOUBLE),
    created_at TIMESTAMP DEFAULT current_timestamp
);
