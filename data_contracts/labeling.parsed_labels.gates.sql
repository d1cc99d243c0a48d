-- The SQL gates of labeling.parsed_labels (how the engine runs them: data_contracts/raw.corpus.gates.sql).

-- setup
-- Each of the task's labels (in task order) with its count and share of the parsed labels.
CREATE OR REPLACE TEMP VIEW parsed_label_shares AS
WITH names AS (
    SELECT
        unnest(getvariable('label_names')) AS label,
        generate_subscripts(getvariable('label_names'), 1) AS pos
),

counts AS (
    SELECT
        label_name AS label,
        count(*) AS n
    FROM labeling.parsed_labels
    GROUP BY label_name
),

total AS (SELECT coalesce(sum(n), 0)::BIGINT AS total FROM counts)

SELECT
    names.pos,
    names.label,
    coalesce(counts.n, 0) AS rows,
    total.total,
    CASE WHEN total.total > 0 THEN coalesce(counts.n, 0) / total.total ELSE 0.0 END AS share
FROM names
LEFT JOIN counts ON names.label = counts.label
CROSS JOIN total;

-- setup
-- This run's shares against those the previous label_balance result recorded.
CREATE OR REPLACE TEMP VIEW parsed_label_shift AS
WITH previous AS (
    SELECT (
        SELECT details -> 'shares' FROM ops.contract_results
        WHERE
            table_name = 'labeling.parsed_labels' AND contract = 'label_balance' AND NOT skipped
            AND partition IS NULL
        ORDER BY checked_at DESC LIMIT 1
    ) AS shares
),

now AS (
    SELECT
        pos,
        label,
        share
    FROM parsed_label_shares
    WHERE total > 0
),

previous_keys AS (
    SELECT
        shares,
        unnest(json_keys(shares)) AS label,
        generate_subscripts(json_keys(shares), 1) AS pos
    FROM previous
    WHERE (SELECT count(*) FROM now) > 0
),

before AS (
    SELECT
        label,
        1000 + pos AS pos,
        (shares ->> label)::DOUBLE AS share
    FROM previous_keys
),

both_labels AS (
    SELECT
        label,
        pos
    FROM now
    UNION ALL
    SELECT
        label,
        pos
    FROM before
),

labels AS (
    SELECT
        label,
        min(pos) AS pos
    FROM both_labels
    GROUP BY label
)

SELECT
    l.pos,
    l.label,
    coalesce(b.share, 0.0) AS share_before,
    coalesce(n.share, 0.0) AS share_now,
    abs(coalesce(n.share, 0.0) - coalesce(b.share, 0.0)) AS shift,
    (SELECT count(*) FROM before) > 0 AS compared,
    (SELECT shares FROM previous) AS previous_shares
FROM labels AS l
LEFT JOIN now AS n ON l.label = n.label
LEFT JOIN before AS b ON l.label = b.label;

-- gate: answers_accounted
WITH counts AS (
    SELECT
        (SELECT count(*) FROM labeling.llm_responses) AS n,
        (
            SELECT count(*) FROM labeling.llm_responses
            WHERE
                (doc_id IN (SELECT doc_id FROM labeling.parsed_labels))
                = (doc_id IN (SELECT doc_id FROM labeling.discarded))
        ) AS lost,
        (
            SELECT count(*) FROM (
                SELECT doc_id FROM labeling.parsed_labels
                WHERE doc_id NOT IN (SELECT doc_id FROM labeling.llm_responses)
                UNION ALL
                SELECT doc_id FROM labeling.discarded
                WHERE doc_id NOT IN (SELECT doc_id FROM labeling.llm_responses)
            ) AS stray_rows
        ) AS stray
)

SELECT
    lost + stray = 0 AS passed,
    CASE
        WHEN lost + stray = 0 THEN format('{:,} answers: each parsed or discarded exactly once', n)
        ELSE format('{:,} answers parsed and discarded both or neither; {:,} rows without an answer', lost, stray)
    END AS description,
    n AS rows_checked,
    lost + stray AS rows_failing
FROM counts;

-- failing: answers_accounted
WITH lost AS (
    SELECT
        0 AS part,
        r.sample_rank,
        r.doc_id::VARCHAR AS doc_id,
        left(r.raw_text, 60)::VARCHAR AS raw_text,
        (r.doc_id IN (SELECT doc_id FROM labeling.parsed_labels))::VARCHAR AS parsed,
        (r.doc_id IN (SELECT doc_id FROM labeling.discarded))::VARCHAR AS discarded
    FROM labeling.llm_responses AS r
),

stray AS (
    SELECT
        1 AS part,
        doc_id,
        'parsed_labels' AS found_in
    FROM labeling.parsed_labels
    WHERE doc_id NOT IN (SELECT doc_id FROM labeling.llm_responses)
    UNION ALL
    SELECT
        2 AS part,
        doc_id,
        'discarded' AS found_in
    FROM labeling.discarded
    WHERE doc_id NOT IN (SELECT doc_id FROM labeling.llm_responses)
)

SELECT * EXCLUDE (part, sample_rank) FROM (
    SELECT * FROM lost
    WHERE parsed = discarded
    UNION ALL BY NAME
    SELECT * FROM stray
) AS failing
ORDER BY part ASC, sample_rank ASC
LIMIT getvariable('max_examples');

-- gate: label_balance
WITH minority AS (
    SELECT
        label,
        share,
        rows,
        total
    FROM parsed_label_shares
    ORDER BY share, pos LIMIT 1
)

SELECT
    total > 0 AND share >= getvariable('min_minority_share') AS passed,
    CASE
        WHEN total > 0
            THEN format(
                'minority label ''{}'' has {} of {:,} parsed labels (bound {})', label,
                printf('%.1f%%', 100 * share), total, printf('%.0f%%', 100 * getvariable('min_minority_share'))
            )
        ELSE 'no parsed labels'
    END AS description,
    share AS observed,
    getvariable('min_minority_share') AS bound,
    total AS rows_checked,
    CASE WHEN share < getvariable('min_minority_share') THEN rows ELSE 0 END AS rows_failing,
    json_object(
        'counts', (SELECT to_json(map_from_entries(list((label, rows) ORDER BY pos))) FROM parsed_label_shares),
        'shares', (SELECT to_json(map_from_entries(list((label, share) ORDER BY pos))) FROM parsed_label_shares),
        'minority_label', label
    ) AS details
FROM minority;

-- failing: label_balance
SELECT
    label,
    rows,
    round(share, 4) AS share
FROM parsed_label_shares
ORDER BY pos;

-- gate: balance_shift
WITH worst AS (
    SELECT
        label,
        shift
    FROM parsed_label_shift
    ORDER BY shift DESC, pos ASC LIMIT 1
),

compared AS (SELECT coalesce(bool_or(compared), FALSE) AS compared FROM parsed_label_shift)

SELECT
    NOT c.compared OR w.shift <= getvariable('max_balance_shift') AS passed,
    NOT c.compared AS skipped,
    CASE
        WHEN NOT c.compared THEN 'skipped: nothing to compare with yet (the previous run)'
        ELSE
            format(
                'largest shift: ''{}'' moved {} against the previous run (bound {})', w.label,
                printf('%.1f%%', 100 * w.shift), printf('%.0f%%', 100 * getvariable('max_balance_shift'))
            )
    END AS description,
    CASE WHEN c.compared THEN w.shift END AS observed,
    getvariable('max_balance_shift') AS bound,
    CASE WHEN c.compared THEN (SELECT count(*) FROM parsed_label_shift) END AS rows_checked,
    CASE
        WHEN c.compared
            THEN (
                SELECT count(*) FROM parsed_label_shift
                WHERE shift > getvariable('max_balance_shift')
            )
    END AS rows_failing,
    CASE WHEN c.compared THEN json_object(
        'before', (SELECT any_value(previous_shares) FROM parsed_label_shift),
        'now', (SELECT to_json(map_from_entries(list((label, share) ORDER BY pos))) FROM parsed_label_shares)
    ) END AS details
FROM compared AS c
LEFT JOIN worst AS w ON TRUE;

-- failing: balance_shift
SELECT
    label,
    round(share_before, 4) AS share_before,
    round(share_now, 4) AS share_now,
    round(shift, 4) AS shift
FROM parsed_label_shift
WHERE round(shift, 4) > getvariable('max_balance_shift')
ORDER BY pos;

-- gate: discard_rate
WITH counts AS (
    SELECT
        (SELECT count(*) FROM labeling.parsed_labels) AS parsed,
        (SELECT count(*) FROM labeling.discarded) AS discarded,
        getvariable('max_discard_rate') AS bound
),

reasons AS (
    SELECT
        reason,
        count(*) AS n
    FROM labeling.discarded
    GROUP BY reason
),

rates AS (
    SELECT
        *,
        parsed + discarded AS total,
        CASE WHEN parsed + discarded > 0 THEN discarded / (parsed + discarded) ELSE 1.0 END AS rate
    FROM counts
)

SELECT
    total > 0 AND rate <= bound AS passed,
    format(
        '{:,} of {:,} answers discarded ({}, bound {})', discarded, total,
        printf('%.1f%%', 100 * rate), printf('%.0f%%', 100 * bound)
    )
    || coalesce(': ' || (
        SELECT string_agg(reason || ' ' || format('{:,}', n), ', ' ORDER BY n DESC, reason ASC)
        FROM reasons
    ), '') AS description,
    rate AS observed,
    bound,
    total AS rows_checked,
    discarded AS rows_failing,
    discarded > 0 AS show_rows,
    json_object('reasons', coalesce(
        (SELECT to_json(map_from_entries(list((reason, n) ORDER BY n DESC, reason ASC))) FROM reasons), '{}'::JSON
    )) AS details
FROM rates;

-- failing: discard_rate
SELECT
    doc_id,
    reason,
    left(raw_text, 60) AS raw_text
FROM labeling.discarded
ORDER BY sample_rank
LIMIT getvariable('max_examples');

-- gate: teacher_gold_accuracy
WITH counts AS (
    SELECT
        count(*) AS n,
        count(*) FILTER (WHERE label = gold_label) AS agree
    FROM labeling.parsed_labels
    WHERE gold_label IS NOT NULL
)

SELECT
    n = 0 OR agree / n >= getvariable('min_teacher_gold_accuracy') AS passed,
    n = 0 AS skipped,
    CASE
        WHEN n = 0 THEN 'skipped: sampled documents with a gold label (the gold probe) is empty'
        ELSE
            format(
                '{} of {:,} sampled documents with a gold label (the gold probe) agree (bound {})',
                printf('%.1f%%', 100 * agree / n), n, printf('%.0f%%', 100 * getvariable('min_teacher_gold_accuracy'))
            )
    END AS description,
    CASE WHEN n > 0 THEN agree / n END AS observed,
    getvariable('min_teacher_gold_accuracy') AS bound,
    CASE WHEN n > 0 THEN n END AS rows_checked,
    CASE WHEN n > 0 THEN n - agree END AS rows_failing
FROM counts;

-- failing: teacher_gold_accuracy
SELECT
    doc_id,
    label_name AS teacher,
    gold_label,
    left(raw_text, 60) AS raw_text
FROM labeling.parsed_labels
WHERE gold_label IS NOT NULL AND label <> gold_label
ORDER BY sample_rank
LIMIT getvariable('max_examples');
