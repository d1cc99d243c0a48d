-- The warehouse's durable tables. Models in the folders beside this file fill them; tables
-- that a model rebuilds whole (CREATE OR REPLACE) are declared in that model instead.

-- One row per distinct text (doc_id = md5 of the exact UTF-8 text). `batch` is the Dagster
-- partition the text first arrived in; a text seen again is counted in raw.occurrences.
CREATE TABLE IF NOT EXISTS raw.corpus (
    doc_id      VARCHAR PRIMARY KEY,
    batch       VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    split       VARCHAR NOT NULL,
    text        VARCHAR NOT NULL,
    gold_label  BIGINT,
    n_copies    INTEGER NOT NULL,
    gold_conflict BOOLEAN NOT NULL DEFAULT false,
    ingested_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Every input row that was accepted, with the doc_id its text maps to.
CREATE TABLE IF NOT EXISTS raw.occurrences (
    batch       VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    source_file VARCHAR NOT NULL,
    source_row  BIGINT NOT NULL,
    source_id   VARCHAR,
    split       VARCHAR NOT NULL,
    doc_id      VARCHAR NOT NULL,
    gold_label  BIGINT
);

-- Input rows that could not be used, kept whole with the reason.
CREATE TABLE IF NOT EXISTS raw.rejected (
    batch       VARCHAR NOT NULL,
    source      VARCHAR,
    source_file VARCHAR,
    source_row  BIGINT,
    source_id   VARCHAR,
    split       VARCHAR,
    text        VARCHAR,
    gold_label  BIGINT,
    reason      VARCHAR NOT NULL,
    rejected_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Every answer ever paid for, keyed by (model identity, decoding parameters, rendered prompt).
CREATE TABLE IF NOT EXISTS labeling.llm_cache (
    cache_key         VARCHAR PRIMARY KEY,
    model_identity    VARCHAR NOT NULL,
    backend           VARCHAR NOT NULL,
    mode              VARCHAR NOT NULL,
    decoding          VARCHAR NOT NULL,
    prompt_hash       VARCHAR NOT NULL,
    raw_text          VARCHAR,
    label_probs       MAP(VARCHAR, DOUBLE),
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_s         DOUBLE,
    run_id            VARCHAR,
    created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Which cache entry answers which document under the current teacher configuration.
CREATE TABLE IF NOT EXISTS labeling.llm_requests (
    doc_id         VARCHAR NOT NULL,
    cache_key      VARCHAR NOT NULL,
    model_identity VARCHAR NOT NULL,
    prompt_version VARCHAR NOT NULL,
    prompt_hash    VARCHAR NOT NULL,
    decoding       VARCHAR NOT NULL,
    PRIMARY KEY (doc_id, cache_key)
);

-- One row per teacher run: what it cost and what labeling everything would cost. The row is written
-- when the run starts (status 'running') and updated before each batch is sent, in the transaction
-- that commits the answers received so far: prompts = asked (counted before sending, so a batch lost
-- in flight is counted), answered = answers committed, tokens = those of every answer received.
-- A run that raised is 'failed'; one whose process died (kill -9, power loss) is marked 'killed' by
-- the next teacher run (finished_at is then its last accounting).
CREATE TABLE IF NOT EXISTS labeling.llm_runs (
    run_id            VARCHAR PRIMARY KEY,
    model_identity    VARCHAR NOT NULL,
    backend           VARCHAR NOT NULL,
    mode              VARCHAR NOT NULL,
    requested         INTEGER NOT NULL,
    cached            INTEGER NOT NULL,
    prompts           INTEGER NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    seconds           DOUBLE NOT NULL,
    prompts_per_s     DOUBLE,
    started_at        TIMESTAMP NOT NULL,
    finished_at       TIMESTAMP NOT NULL DEFAULT current_timestamp
);
-- Added by issue 13 (ALTER keeps warehouses made before it; their rows were all finished runs).
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS status VARCHAR DEFAULT 'done';
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS answered INTEGER;
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS pid INTEGER;
ALTER TABLE labeling.llm_runs ADD COLUMN IF NOT EXISTS host VARCHAR;
UPDATE labeling.llm_runs SET answered = prompts WHERE answered IS NULL AND status = 'done';

-- One row per teacher run: LLM alone versus LlamBERT over the whole corpus
-- (sql/labeling/cost_projection.sql fills it; refreshed by evaluation.report once the student has run).
CREATE TABLE IF NOT EXISTS labeling.cost_projection (
    run_id                VARCHAR PRIMARY KEY,
    model_identity        VARCHAR,
    backend               VARCHAR,
    mode                  VARCHAR,
    prompts               INTEGER,
    prompt_tokens         BIGINT,
    completion_tokens     BIGINT,
    seconds               DOUBLE,
    prompts_per_s         DOUBLE,
    throughput_from_run   VARCHAR,
    sample_docs           BIGINT,
    discarded             BIGINT,
    discard_rate          DOUBLE,
    corpus_docs           BIGINT,
    avg_prompt_tokens     DOUBLE,
    avg_completion_tokens DOUBLE,
    student_docs_per_s    DOUBLE,
    llm_only_hours        DOUBLE,
    llambert_hours        DOUBLE,
    price_in_per_1m       DOUBLE,
    price_out_per_1m      DOUBLE,
    llm_only_cost         DOUBLE,
    llambert_llm_cost     DOUBLE,
    created_at            TIMESTAMP DEFAULT current_timestamp
);

-- One row per fine-tuned student.
CREATE TABLE IF NOT EXISTS students.checkpoints (
    checkpoint_id  VARCHAR PRIMARY KEY,
    task           VARCHAR NOT NULL,
    base_model     VARCHAR NOT NULL,
    recipe         VARCHAR NOT NULL,
    label_source   VARCHAR NOT NULL,
    n_train        INTEGER NOT NULL,
    n_val          INTEGER NOT NULL,
    training_config JSON NOT NULL,
    metrics        JSON NOT NULL,
    val_accuracy   DOUBLE,
    val_f1         DOUBLE,
    path           VARCHAR NOT NULL,
    train_seconds  DOUBLE NOT NULL,
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
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
-- docs_per_s: measured labeling the judge set; min_share_ratio: min over classes of predicted / true share.
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS kind VARCHAR;
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS docs_per_s DOUBLE;
ALTER TABLE students.checkpoints ADD COLUMN IF NOT EXISTS min_share_ratio DOUBLE;

-- Per-epoch training curve of each checkpoint.
CREATE TABLE IF NOT EXISTS students.training_log (
    checkpoint_id VARCHAR NOT NULL,
    epoch         INTEGER NOT NULL,
    train_loss    DOUBLE,
    val_loss      DOUBLE,
    val_accuracy  DOUBLE,
    val_f1        DOUBLE,
    seconds       DOUBLE
);

-- The student's label for every document, per checkpoint.
CREATE TABLE IF NOT EXISTS predictions.labels (
    doc_id        VARCHAR NOT NULL,
    batch         VARCHAR NOT NULL,
    checkpoint_id VARCHAR NOT NULL,
    label         BIGINT NOT NULL,
    probability   DOUBLE NOT NULL,
    predicted_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (doc_id, checkpoint_id)
);

-- Seconds and rows of each stage of each run, for the report and the cost views.
CREATE TABLE IF NOT EXISTS ops.stage_runs (
    stage      VARCHAR NOT NULL,
    partition  VARCHAR,
    rows       BIGINT,
    seconds    DOUBLE NOT NULL,
    details    JSON,
    run_id     VARCHAR,
    finished_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Inbox files that became batches (partitions): the file, its content hash, and what ingesting
-- it gave. Written by the raw.inbox_files asset; re-running a batch replaces its row.
CREATE TABLE IF NOT EXISTS raw.inbox_files (
    batch           VARCHAR PRIMARY KEY,
    file_sha256     VARCHAR NOT NULL,
    file_name       VARCHAR NOT NULL,
    stored_path     VARCHAR NOT NULL,
    bytes           BIGINT NOT NULL,
    detected_at     TIMESTAMP NOT NULL,
    input_rows      BIGINT NOT NULL,
    rejected_rows   BIGINT NOT NULL,
    new_documents   BIGINT NOT NULL,
    known_documents BIGINT NOT NULL,
    ingested_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- The teacher's labels for the student's least confident documents of a batch (the audit).
-- Parsed labels (label NOT NULL) join the student's training pool. Re-auditing a batch replaces its rows.
CREATE TABLE IF NOT EXISTS labeling.audit_labels (
    batch               VARCHAR NOT NULL,
    doc_id              VARCHAR NOT NULL,
    checkpoint_id       VARCHAR NOT NULL,
    student_label       BIGINT NOT NULL,
    student_probability DOUBLE NOT NULL,
    model_identity      VARCHAR NOT NULL,
    prompt_version      VARCHAR NOT NULL,
    raw_text            VARCHAR,
    label               BIGINT,
    label_name          VARCHAR,
    discard_reason      VARCHAR,
    audited_at          TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (batch, doc_id)
);

-- One row per audited batch: student-teacher agreement on its least confident documents.
CREATE TABLE IF NOT EXISTS labeling.audit_runs (
    batch             VARCHAR PRIMARY KEY,
    checkpoint_id     VARCHAR NOT NULL,
    model_identity    VARCHAR NOT NULL,
    k                 INTEGER NOT NULL,
    audited           INTEGER NOT NULL,
    parsed            INTEGER NOT NULL,
    agreed            INTEGER NOT NULL,
    agreement         DOUBLE,
    teacher_prompts   INTEGER NOT NULL,
    teacher_cached    INTEGER NOT NULL,
    retrain_requested BOOLEAN NOT NULL,
    seconds           DOUBLE NOT NULL,
    audited_at        TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- A retrain asked for by an audit (enough new labels, or agreement below the bound); one per
-- (champion, batch). It is answered once a checkpoint newer than the request exists.
CREATE TABLE IF NOT EXISTS students.retrain_requests (
    checkpoint_id VARCHAR NOT NULL,
    batch         VARCHAR NOT NULL,
    reason        VARCHAR NOT NULL,
    new_labels    INTEGER NOT NULL,
    agreement     DOUBLE,
    requested_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (checkpoint_id, batch)
);
