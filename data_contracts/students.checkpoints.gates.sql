-- The SQL gates of students.checkpoints (how the engine runs them: data_contracts/raw.corpus.gates.sql).
-- is_dir(path) is the engine's: whether a checkpoint's folder exists.

-- gate: champion
-- requires: students.champion students.candidates
WITH champion AS (
    SELECT
        min(checkpoint_id) AS checkpoint_id,
        arg_min(path, checkpoint_id) AS path,
        count(*) > 0 AS named
    FROM students.champion
),

verdict AS (
    SELECT
        *,
        named AND coalesce(is_dir(path), FALSE) AS ok,
        CASE WHEN NOT named THEN (
            SELECT count(*) FROM students.candidates
            WHERE NOT eligible
        ) ELSE 0 END AS rejected
    FROM champion
)

SELECT
    ok AS passed,
    CASE
        WHEN ok THEN format('champion {} at {}', checkpoint_id, path)
        WHEN NOT named AND rejected > 0
            THEN
                format(
                    'no eligible student: all {} candidates collapsed or scored below the linear floor '
                    || '(see students.candidates). Check the teacher''s labels (labeling.parsed_labels), raise '
                    || 'sample.size, or use student.kind: linear', rejected
                )
        WHEN NOT named THEN 'no champion: students.champion is empty or missing'
        ELSE format('champion {}: folder {} is missing', checkpoint_id, path)
    END AS description,
    1 AS rows_checked,
    CASE WHEN ok THEN 0 ELSE 1 END AS rows_failing
FROM verdict;

-- gate: champion
SELECT
    FALSE AS passed,
    'no champion: students.champion is empty or missing' AS description,
    1 AS rows_checked,
    1 AS rows_failing;

-- failing: champion
-- requires: students.champion students.candidates
SELECT
    checkpoint_id,
    kind,
    round(score, 4) AS score,
    round(min_share_ratio, 3) AS min_share_ratio,
    round(floor_score, 4) AS floor_score,
    verdict
FROM students.candidates
WHERE NOT eligible AND NOT EXISTS (SELECT 1 FROM students.champion)
ORDER BY created_at DESC;

-- failing: champion
-- requires: students.champion
SELECT
    (SELECT min(checkpoint_id) FROM students.champion) AS checkpoint_id,
    (SELECT arg_min(path, checkpoint_id) FROM students.champion) AS path;

-- failing: champion
SELECT
    NULL::VARCHAR AS checkpoint_id,
    NULL::VARCHAR AS path;

-- gate: student_teacher_agreement
WITH newest AS (
    SELECT
        any_value(checkpoint_id) AS checkpoint_id,
        any_value(label_source) AS label_source,
        any_value(n_val) AS n_val,
        any_value(val_accuracy) AS acc
    FROM (
        SELECT * FROM students.checkpoints
        ORDER BY created_at DESC LIMIT 1
    ) AS newest_row
),

judged AS (
    SELECT
        *,
        coalesce(starts_with(label_source, 'llm') AND n_val > 0 AND acc IS NOT NULL, FALSE) AS judged,
        getvariable('min_student_teacher_agreement') AS bound
    FROM newest
)

SELECT
    NOT judged OR acc >= bound AS passed,
    NOT judged AS skipped,
    CASE
        WHEN NOT judged THEN 'skipped: the newest checkpoint has no held-out LLM labels'
        ELSE
            format(
                'checkpoint {} agrees with the teacher on {} of {:,} held-out LLM labels (bound {})',
                checkpoint_id, printf('%.1f%%', 100 * acc), n_val, printf('%.0f%%', 100 * bound)
            )
    END AS description,
    CASE WHEN judged THEN acc END AS observed,
    bound,
    CASE WHEN judged THEN n_val END AS rows_checked,
    CASE WHEN judged THEN round_even((1 - acc) * n_val, 0)::BIGINT END AS rows_failing
FROM judged;

-- failing: student_teacher_agreement
SELECT
    checkpoint_id,
    label_source,
    n_val,
    val_accuracy
FROM students.checkpoints
ORDER BY created_at DESC
LIMIT 1;
