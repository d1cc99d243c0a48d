-- The SQL gates of predictions.labels (how the engine runs them: data_contracts/raw.corpus.gates.sql).
-- All of them judge the champion's predictions, for one batch (or the whole corpus).

-- setup
SET VARIABLE champion = NULL;

-- setup
-- requires: students.champion
SET VARIABLE champion = (SELECT min(checkpoint_id) FROM students.champion);

-- setup
SET VARIABLE scope = coalesce('in batch ' || getvariable('partition'), 'in the corpus');

-- setup
-- Each of the task's labels (in task order) with its count and share of the batch's predictions
-- (rows: total counts predictions of labels outside the task too) and of the other batches'.
CREATE OR REPLACE TEMP VIEW predicted_label_shares AS
WITH names AS (
    SELECT
        unnest(getvariable('label_ids')) AS label_id,
        unnest(getvariable('label_names')) AS label,
        generate_subscripts(getvariable('label_names'), 1) AS pos
),

champion AS (
    SELECT
        label,
        in_partition(batch) AS this_batch,
        count(*) AS n
    FROM predictions.labels
    WHERE checkpoint_id = getvariable('champion')
    GROUP BY ALL
),

counts AS (
    SELECT
        names.pos,
        names.label,
        coalesce(sum(c.n) FILTER (WHERE c.this_batch), 0)::BIGINT AS rows,
        coalesce(sum(c.n) FILTER (WHERE NOT c.this_batch AND getvariable('partition') IS NOT NULL), 0)::BIGINT
            AS other_rows
    FROM names LEFT JOIN champion AS c ON names.label_id = c.label
    GROUP BY ALL
),

totals AS (
    SELECT
        coalesce(sum(n) FILTER (WHERE this_batch), 0)::BIGINT AS total,
        coalesce(sum(n) FILTER (WHERE NOT this_batch AND getvariable('partition') IS NOT NULL), 0)::BIGINT
            AS other_total
    FROM champion
)

SELECT
    counts.*,
    totals.*,
    CASE WHEN total > 0 THEN rows / total ELSE 0.0 END AS share,
    CASE WHEN other_total > 0 THEN other_rows / other_total ELSE 0.0 END AS other_share
FROM counts CROSS JOIN totals;

-- gate: coverage
WITH counts AS (
    SELECT
        count(*) AS n,
        count(*) FILTER (
            WHERE NOT EXISTS (
                SELECT 1 FROM predictions.labels AS p
                WHERE p.doc_id = c.doc_id AND p.checkpoint_id = getvariable('champion')
            )
        ) AS missing
    FROM raw.corpus AS c
    WHERE in_partition(c.batch)
)

SELECT
    getvariable('champion') IS NOT NULL AND missing = 0 AS passed,
    CASE
        WHEN getvariable('champion') IS NULL THEN 'no champion yet (students.champion is empty)'
        ELSE
            format(
                '{:,} of {:,} documents {} have a prediction from champion {}', n - missing, n,
                getvariable('scope'), getvariable('champion')
            )
    END AS description,
    CASE WHEN n > 0 THEN (n - missing) / n ELSE 1.0 END AS observed,
    1.0 AS bound,
    n AS rows_checked,
    missing AS rows_failing
FROM counts;

-- failing: coverage
SELECT
    c.doc_id,
    c.batch,
    c.split,
    left(c.text, 60) AS text_start
FROM raw.corpus AS c
WHERE
    in_partition(c.batch)
    AND NOT EXISTS (
        SELECT 1 FROM predictions.labels AS p
        WHERE p.doc_id = c.doc_id AND p.checkpoint_id = getvariable('champion')
    )
ORDER BY c.doc_id
LIMIT getvariable('max_examples');

-- gate: collapse
-- requires: labeling.parsed_labels
WITH teacher AS (
    SELECT
        label_name AS label,
        count(*) AS n
    FROM labeling.parsed_labels
    GROUP BY label_name
),

shares AS (
    SELECT
        s.pos,
        s.label,
        s.rows,
        s.total,
        s.share AS predicted_share,
        coalesce(t.n, 0) / nullif((SELECT sum(n) FROM teacher), 0) AS teacher_share
    FROM predicted_label_shares AS s LEFT JOIN teacher AS t ON s.label = t.label
),

worst AS (
    SELECT
        *,
        predicted_share / teacher_share AS ratio
    FROM shares
    WHERE teacher_share > 0
    ORDER BY ratio, pos LIMIT 1
),

judged AS (
    SELECT
        w.*,
        coalesce((SELECT any_value(total) FROM shares), 0) > 0
        AND coalesce((SELECT bool_or(teacher_share > 0) FROM shares), FALSE) AS judged,
        getvariable('collapse_ratio') AS bound
    FROM (SELECT 1 AS one) AS one_row LEFT JOIN worst AS w ON TRUE
)

SELECT
    NOT judged OR ratio >= bound AS passed,
    NOT judged AS skipped,
    CASE
        WHEN NOT judged THEN format('skipped: no predictions {} or no teacher labels', getvariable('scope'))
        ELSE
            format(
                '''{}'': {} of the predictions {} vs {} of the teacher''s labels (ratio {}, bound {})', label,
                printf('%.1f%%', 100 * predicted_share), getvariable('scope'), printf('%.1f%%', 100 * teacher_share),
                printf('%.2f', ratio), bound::VARCHAR
            )
            || CASE
                WHEN
                    ratio >= bound THEN '' ELSE
                    ': the student collapsed; its labels are wrong. Retrain (more or '
                    || 'better-balanced labels, student.class_weight: balanced) or use student.kind: linear'
            END
    END AS description,
    CASE WHEN judged THEN ratio END AS observed,
    bound,
    CASE WHEN judged THEN total END AS rows_checked,
    CASE WHEN judged THEN CASE WHEN ratio >= bound THEN 0 ELSE rows END END AS rows_failing,
    CASE WHEN judged THEN json_object(
        'teacher_shares', (
            SELECT to_json(map_from_entries(list((label, coalesce(teacher_share, 0.0)) ORDER BY pos)))
            FROM shares
        ),
        'predicted_shares', (
            SELECT to_json(map_from_entries(list((label, predicted_share) ORDER BY pos)))
            FROM shares
        )
    ) END AS details
FROM judged;

-- gate: collapse
SELECT
    TRUE AS passed,
    TRUE AS skipped,
    'skipped: no teacher labels to compare with' AS description,
    getvariable('collapse_ratio') AS bound;

-- failing: collapse
-- requires: labeling.parsed_labels
WITH teacher AS (
    SELECT
        label_name AS label,
        count(*) AS n
    FROM labeling.parsed_labels
    GROUP BY label_name
)

SELECT
    s.label,
    round(coalesce(t.n, 0) / (SELECT sum(n) FROM teacher), 4) AS teacher_share,
    round(s.share, 4) AS predicted_share
FROM predicted_label_shares AS s LEFT JOIN teacher AS t ON s.label = t.label
ORDER BY s.pos;

-- gate: label_balance
WITH minority AS (
    SELECT
        label,
        share,
        rows,
        total
    FROM predicted_label_shares
    ORDER BY share, pos LIMIT 1
)

SELECT
    total > 0 AND share >= getvariable('min_minority_share') AS passed,
    CASE
        WHEN total > 0
            THEN format(
                'minority label ''{}'' has {} of {:,} predictions {} (bound {})', label,
                printf('%.1f%%', 100 * share), total, getvariable('scope'),
                printf('%.0f%%', 100 * getvariable('min_minority_share'))
            )
        ELSE 'no predictions ' || getvariable('scope')
    END AS description,
    share AS observed,
    getvariable('min_minority_share') AS bound,
    total AS rows_checked,
    CASE WHEN share < getvariable('min_minority_share') THEN rows ELSE 0 END AS rows_failing,
    json_object(
        'counts', (SELECT to_json(map_from_entries(list((label, rows) ORDER BY pos))) FROM predicted_label_shares),
        'shares', (SELECT to_json(map_from_entries(list((label, share) ORDER BY pos))) FROM predicted_label_shares),
        'minority_label', label
    ) AS details
FROM minority;

-- failing: label_balance
SELECT
    label,
    rows,
    round(share, 4) AS share
FROM predicted_label_shares
ORDER BY pos;

-- gate: balance_shift
WITH worst AS (
    SELECT
        label,
        abs(share - other_share) AS shift,
        total > 0 AND other_total > 0 AS compared
    FROM predicted_label_shares
    ORDER BY shift DESC, pos ASC LIMIT 1
)

SELECT
    NOT compared OR shift <= getvariable('max_balance_shift') AS passed,
    NOT compared AS skipped,
    CASE
        WHEN getvariable('partition') IS NULL THEN 'skipped: not partitioned'
        WHEN NOT compared THEN 'skipped: nothing to compare with yet (the other batches)'
        ELSE format(
            'largest shift: ''{}'' moved {} against the other batches (bound {})', label,
            printf('%.1f%%', 100 * shift), printf('%.0f%%', 100 * getvariable('max_balance_shift'))
        )
    END AS description,
    CASE WHEN compared THEN shift END AS observed,
    CASE WHEN getvariable('partition') IS NOT NULL THEN getvariable('max_balance_shift') END AS bound,
    CASE WHEN compared THEN (SELECT count(*) FROM predicted_label_shares) END AS rows_checked,
    CASE WHEN compared THEN (
        SELECT count(*) FROM predicted_label_shares
        WHERE abs(share - other_share) > getvariable('max_balance_shift')
    ) END AS rows_failing,
    CASE WHEN compared THEN json_object(
        'before',
        (SELECT to_json(map_from_entries(list((label, other_share) ORDER BY pos))) FROM predicted_label_shares),
        'now', (SELECT to_json(map_from_entries(list((label, share) ORDER BY pos))) FROM predicted_label_shares)
    ) END AS details
FROM worst;

-- failing: balance_shift
SELECT
    label,
    round(other_share, 4) AS share_before,
    round(share, 4) AS share_now,
    round(abs(share - other_share), 4) AS shift
FROM predicted_label_shares
WHERE round(abs(share - other_share), 4) > getvariable('max_balance_shift')
ORDER BY pos;

-- gate: student_teacher_agreement
-- requires: labeling.parsed_labels
WITH counts AS (
    SELECT
        count(*) AS n,
        count(*) FILTER (WHERE p.label = t.label) AS agree
    FROM predictions.labels AS p
    INNER JOIN labeling.parsed_labels AS t ON p.doc_id = t.doc_id
    WHERE p.checkpoint_id = getvariable('champion') AND in_partition(p.batch)
)

SELECT
    n = 0 OR agree / n >= getvariable('min_student_teacher_agreement') AS passed,
    n = 0 AS skipped,
    CASE
        WHEN n = 0 THEN format('skipped: documents {} that the teacher labeled is empty', getvariable('scope'))
        ELSE
            format(
                '{} of {:,} documents {} that the teacher labeled agree (bound {})',
                printf('%.1f%%', 100 * agree / n), n, getvariable('scope'),
                printf('%.0f%%', 100 * getvariable('min_student_teacher_agreement'))
            )
    END AS description,
    CASE WHEN n > 0 THEN agree / n END AS observed,
    getvariable('min_student_teacher_agreement') AS bound,
    CASE WHEN n > 0 THEN n END AS rows_checked,
    CASE WHEN n > 0 THEN n - agree END AS rows_failing
FROM counts;

-- gate: student_teacher_agreement
SELECT
    TRUE AS passed,
    TRUE AS skipped,
    format('skipped: documents {} that the teacher labeled is empty', getvariable('scope')) AS description,
    getvariable('min_student_teacher_agreement') AS bound;

-- failing: student_teacher_agreement
-- requires: labeling.parsed_labels
SELECT
    p.doc_id,
    t.label_name AS teacher,
    p.label AS student,
    round(p.probability, 3) AS probability
FROM predictions.labels AS p
INNER JOIN labeling.parsed_labels AS t ON p.doc_id = t.doc_id
WHERE p.checkpoint_id = getvariable('champion') AND p.label <> t.label AND in_partition(p.batch)
ORDER BY p.doc_id
LIMIT getvariable('max_examples');
