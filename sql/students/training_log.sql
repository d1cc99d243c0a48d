-- students.training_log: the per-epoch training curve of each checkpoint (llambert.pipeline.train_checkpoint).
-- Reads the staged frame `staged_training_log` (checkpoint_id, epoch, train_loss, val_loss,
-- val_accuracy, val_f1, seconds).
INSERT INTO students.training_log BY NAME
SELECT *
FROM staged_training_log;

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- Per-epoch training curve of each checkpoint.
CREATE TABLE IF NOT EXISTS students.training_log (
    checkpoint_id VARCHAR NOT NULL,
    epoch INTEGER NOT NULL,
    train_loss DOUBLE,
    val_loss DOUBLE,
    val_accuracy DOUBLE,
    val_f1 DOUBLE,
    seconds DOUBLE
);
