-- predictions.labels (predictions.storage: table): the champion student's label and probability per document.
-- Input: staged_predictions (doc_id, batch, checkpoint_id, label, probability): a chunk of the local engine
-- (a registered frame) or a Ray job's staged Parquet (a view; llambert/predictions_store.py:load_staged).
-- One row per (doc_id, checkpoint_id): re-running a chunk or a load replaces, never duplicates.
-- (storage: parquet writes the same rows as files; the view over them is made in predictions_store.prepare.)
INSERT OR REPLACE INTO predictions.labels BY NAME
SELECT
    doc_id,
    batch,
    checkpoint_id,
    label,
    probability
FROM staged_predictions;

-- @delete: forget one batch's predictions by one checkpoint (`predict --replace`). Variables: batch, checkpoint_id.
DELETE FROM predictions.labels
WHERE batch = getvariable('batch') AND checkpoint_id = getvariable('checkpoint_id');

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- The student's label for every document, per checkpoint.
CREATE TABLE IF NOT EXISTS predictions.labels (
    doc_id VARCHAR NOT NULL,
    batch VARCHAR NOT NULL,
    checkpoint_id VARCHAR NOT NULL,
    label BIGINT NOT NULL,
    probability DOUBLE NOT NULL,
    predicted_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (doc_id, checkpoint_id)
);
