-- The SQL gates of raw.corpus (data_contracts/raw.corpus.json names them). The engine
-- (llambert/contracts.py) runs, per gate, the first `-- gate:` block whose `-- requires:` tables
-- exist: one row with passed and description (and observed, bound, rows_checked, rows_failing,
-- skipped, show_rows, details), then the first `-- failing:` block that returns rows: the offending
-- rows, shown when the gate fails (or when show_rows). Variables: partition (the batch, or NULL),
-- max_examples, the checks.* bounds; in_partition(batch) is true for the batch being checked.

-- gate: rows_accounted
WITH counts AS (
    SELECT
        (
            SELECT count(*) FROM raw.occurrences
            WHERE in_partition(batch)
        ) AS occ,
        (
            SELECT count(*) FROM raw.rejected
            WHERE in_partition(batch)
        ) AS rej,
        (
            SELECT least(count(*), getvariable('max_examples')) FROM raw.occurrences AS o
            WHERE in_partition(o.batch) AND o.doc_id NOT IN (SELECT doc_id FROM raw.corpus)
        ) AS orphans,
        (
            SELECT nullif(details, '{}'::JSON) FROM ops.stage_runs
            WHERE stage = 'ingest' AND partition IS NOT DISTINCT FROM getvariable('partition')
            ORDER BY finished_at DESC LIMIT 1
        ) AS record
),

problems AS (
    SELECT
        *,
        list_filter([
            CASE
                WHEN record IS NOT NULL AND occ IS DISTINCT FROM (record ->> 'accepted_rows')::BIGINT
                    THEN format(
                        'raw.occurrences has {:,} rows, the reader accepted {:,}',
                        occ, (record ->> 'accepted_rows')::BIGINT
                    )
            END,
            CASE
                WHEN record IS NOT NULL AND rej IS DISTINCT FROM (record ->> 'rejected_rows')::BIGINT
                    THEN format(
                        'raw.rejected has {:,} rows, the reader rejected {:,}',
                        rej, (record ->> 'rejected_rows')::BIGINT
                    )
            END,
            CASE
                WHEN (record ->> 'input_rows') IS NOT NULL AND occ + rej <> (record ->> 'input_rows')::BIGINT
                    THEN format('{:,} rows stored of {:,} read', occ + rej, (record ->> 'input_rows')::BIGINT)
            END,
            CASE WHEN orphans > 0 THEN orphans || '+ occurrences point at no document of raw.corpus' END
        ], p -> p IS NOT NULL) AS problems
    FROM counts
)

SELECT
    problems,
    len(problems) = 0 AS passed,
    CASE
        WHEN len(problems) > 0 THEN array_to_string(problems, '; ')
        ELSE
            format('{:,} input rows: {:,} accepted, {:,} rejected', occ + rej, occ, rej)
            || CASE WHEN record IS NULL THEN ' (no ingest record to compare with)' ELSE '' END
    END AS description,
    occ + rej AS observed,
    occ + rej AS rows_checked,
    orphans AS rows_failing,
    json_object('occurrences', occ, 'rejected', rej, 'ingest_record', coalesce(record, '{}'::JSON)) AS details
FROM problems;

-- failing: rows_accounted
SELECT
    o.batch,
    o.source_file,
    o.source_row,
    o.doc_id
FROM raw.occurrences AS o
WHERE in_partition(o.batch) AND o.doc_id NOT IN (SELECT doc_id FROM raw.corpus)
ORDER BY o.source_file ASC, o.source_row ASC
LIMIT getvariable('max_examples');

-- failing: rows_accounted
SELECT unnest(problems) AS problem FROM verdict;

-- gate: rejected_share
WITH counts AS (
    SELECT
        (
            SELECT count(*) FROM raw.occurrences
            WHERE in_partition(batch)
        ) AS occ,
        (
            SELECT count(*) FROM raw.rejected
            WHERE in_partition(batch)
        ) AS rej,
        getvariable('max_rejected_share') AS bound
),

reasons AS (
    SELECT
        split_part(reason, ':', 1) AS code,
        count(*) AS n
    FROM raw.rejected
    WHERE in_partition(batch)
    GROUP BY split_part(reason, ':', 1)
),

shares AS (
    SELECT
        *,
        CASE WHEN occ + rej > 0 THEN rej / (occ + rej) ELSE 0.0 END AS share
    FROM counts
)

SELECT
    share <= bound AS passed,
    format(
        '{:,} of {:,} input rows rejected ({}, bound {})', rej, occ + rej,
        printf('%.1f%%', 100 * share), printf('%.0f%%', 100 * bound)
    )
    || coalesce(
        ': ' || (SELECT string_agg(code || ' ' || format('{:,}', n), ', ' ORDER BY n DESC, code ASC) FROM reasons),
        ''
    ) AS description,
    share AS observed,
    bound,
    occ + rej AS rows_checked,
    rej AS rows_failing,
    rej > 0 AS show_rows,
    json_object('reasons', coalesce(
        (SELECT to_json(map_from_entries(list((code, n) ORDER BY n DESC, code ASC))) FROM reasons), '{}'::JSON
    )) AS details
FROM shares;

-- failing: rejected_share
SELECT
    source_file,
    source_row,
    source_id,
    reason,
    left(text, 60) AS text_start
FROM raw.rejected
WHERE in_partition(batch)
ORDER BY source_file, source_row
LIMIT getvariable('max_examples');
