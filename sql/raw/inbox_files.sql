-- raw.inbox_files: an inbox file that became a batch (partition), with what ingesting it gave
-- (llambert/inbox.py:register_batch, after the batch's raw tables are written). Reads the staged frame
-- `staged_inbox_file` (batch, file_sha256, file_name, stored_path, bytes, detected_at: the batch's
-- manifest). Re-running a batch replaces its row.
INSERT OR REPLACE INTO raw.inbox_files BY NAME
SELECT
    f.* REPLACE (f.detected_at::TIMESTAMP AS detected_at),
    (
        SELECT count(*) FROM raw.occurrences AS o
        WHERE o.batch = f.batch
    )
    + (
        SELECT count(*) FROM raw.rejected AS r
        WHERE r.batch = f.batch
    ) AS input_rows,
    (
        SELECT count(*) FROM raw.rejected AS r
        WHERE r.batch = f.batch
    ) AS rejected_rows,
    (
        SELECT count(*) FROM raw.corpus AS c
        WHERE c.batch = f.batch
    ) AS new_documents,
    (
        SELECT count(DISTINCT o.doc_id)
        FROM raw.occurrences AS o
        WHERE
            o.batch = f.batch
            AND o.doc_id IN (
                SELECT c.doc_id FROM raw.corpus AS c
                WHERE c.batch <> f.batch
            )
    ) AS known_documents,
    current_timestamp AS ingested_at
FROM staged_inbox_file AS f;

-- @ddl: the durable table (llambert.warehouse.ensure_schemas runs this on every write connection).
-- Inbox files that became batches (partitions): the file, its content hash, and what ingesting
-- it gave. Written by the raw.inbox_files asset; re-running a batch replaces its row.
CREATE TABLE IF NOT EXISTS raw.inbox_files (
    batch VARCHAR PRIMARY KEY,
    file_sha256 VARCHAR NOT NULL,
    file_name VARCHAR NOT NULL,
    stored_path VARCHAR NOT NULL,
    bytes BIGINT NOT NULL,
    detected_at TIMESTAMP NOT NULL,
    input_rows BIGINT NOT NULL,
    rejected_rows BIGINT NOT NULL,
    new_documents BIGINT NOT NULL,
    known_documents BIGINT NOT NULL,
    ingested_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
