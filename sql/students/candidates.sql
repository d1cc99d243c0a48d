-- students.candidates: every student checkpoint of the task with the champion rule's verdict on it.
-- Variables: task, champion_metric, probe_set, collapse_ratio, champion_tolerance
-- (champion_speedup is read by students.champion).
--   score       the champion metric: probe_* on the current gold probe (only checkpoints scored on it
--               compete), or val_* on each checkpoint's own held-out teacher labels (no gold in the corpus)
--   collapsed   its smallest (predicted share / true share) over the classes (add-one smoothed counts)
--               is below collapse_ratio:
--               it (almost) never predicts a class the judge set holds
--   below_floor an encoder or ensemble scoring below the best linear (TF-IDF) checkpoint: it does not
--               earn its cost
-- A collapsed, below-floor or unscored checkpoint is never eligible (students.champion reads this table).
CREATE OR REPLACE TABLE students.candidates AS
WITH scored AS (
    SELECT
        checkpoint_id,
        task,
        coalesce(kind, 'encoder') AS kind,
        base_model,
        recipe,
        label_source,
        path,
        created_at,
        n_train,
        n_val,
        probe_n,
        docs_per_s,
        min_share_ratio,
        CASE getvariable('champion_metric')
            WHEN 'probe_accuracy' THEN probe_accuracy
            WHEN 'probe_f1' THEN probe_f1
            WHEN 'val_f1' THEN val_f1
            ELSE val_accuracy
        END AS score
    FROM students.checkpoints
    WHERE
        task = getvariable('task')
        AND (
            NOT starts_with(getvariable('champion_metric'), 'probe_')
            OR probe_set IS NOT DISTINCT FROM getvariable('probe_set')
        )
),

judged AS (
    SELECT
        *,
        score IS NULL AS unscored,
        coalesce(min_share_ratio, 1.0) < coalesce(getvariable('collapse_ratio'), 0.0) AS collapsed
    FROM scored
),

floor AS (
    SELECT max(score) AS floor_score FROM judged
    WHERE kind = 'linear' AND NOT collapsed AND NOT unscored
),

verdicts AS (
    SELECT
        j.*,
        f.floor_score,
        j.kind <> 'linear' AND f.floor_score IS NOT NULL AND coalesce(j.score < f.floor_score, FALSE) AS below_floor
    FROM judged AS j CROSS JOIN floor AS f
)

SELECT
    v.* EXCLUDE (v.unscored),
    not(v.unscored OR v.collapsed OR v.below_floor) AS eligible,
    CASE
        WHEN v.unscored THEN 'not scored on the current judge set'
        WHEN v.collapsed
            THEN
                format(
                    'collapsed: predicts a class at {:.2f} x its true share (bound {})',
                    v.min_share_ratio, getvariable('collapse_ratio')
                )
        WHEN v.below_floor THEN format('below the linear floor: {:.4f} < {:.4f}', v.score, v.floor_score)
        ELSE 'eligible'
    END AS verdict
FROM verdicts AS v
ORDER BY v.score DESC NULLS LAST, v.created_at ASC, v.checkpoint_id ASC;
