-- students.checkpoints: one row per student checkpoint (llambert.pipeline.train_checkpoint).
-- Reads the staged frame `staged_checkpoints`: the new checkpoint's columns, by name (created_at is now).
INSERT INTO students.checkpoints BY NAME
SELECT *
FROM staged_checkpoints;

-- @probe_score: a checkpoint scored on the current gold probe (the fair comparison; README "Students").
-- Reads `staged_probe_scores` (checkpoint_id, probe_set, probe_n, probe_accuracy, probe_f1, docs_per_s,
-- min_share_ratio).
UPDATE students.checkpoints k
SET
    probe_set = s.probe_set, probe_n = s.probe_n, probe_accuracy = s.probe_accuracy, probe_f1 = s.probe_f1,
    docs_per_s = s.docs_per_s, min_share_ratio = s.min_share_ratio
FROM staged_probe_scores AS s
WHERE k.checkpoint_id = s.checkpoint_id;

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- One row per fine-tuned student.
CREATE TABLE IF NOT EXISTS students.checkpoints (
    checkpoint_id VARCHAR PRIMARY KEY,
    task VARCHAR NOT NULL,
    base_model VARCHAR NOT NULL,
    recipe VARCHAR NOT NULL,
    label_source VARCHAR NOT NULL,
    n_train INTEGER NOT NULL,
    n_val INTEGER NOT NULL,
    training_config JSON NOT NULL,
    metrics JSON NOT NULL,
    val_accuracy DOUBLE,
    val_f1 DOUBLE,
    path VARCHAR NOT NULL,
    train_seconds DOUBLE NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
-- Added by the recipes issue (ALTER keeps warehouses made before it). fingerprint: base model +
-- training config + hash of the training (doc_id, label) lists; equal fingerprint = reuse, no retraining.
-- probe_*: score on students.gold_probe (probe_set = hash of its doc ids), the fair comparison.
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS fingerprint VARCHAR;
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS data_sizes JSON;
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS probe_set VARCHAR;
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS probe_n INTEGER;
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS probe_accuracy DOUBLE;
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS probe_f1 DOUBLE;
-- Added by the students issue: the family (linear floor, encoder, ensemble), judged by speed and balance too.
-- docs_per_s: measured labeling the judge set;
-- min_share_ratio: min over classes of (predicted + 1) / (true + 1) counts.
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS kind VARCHAR;
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS docs_per_s DOUBLE;
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS min_share_ratio DOUBLE;
