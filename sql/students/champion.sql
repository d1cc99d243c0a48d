-- students.champion: the checkpoint whose predictions are the product, and why.
-- Checkpoints compete on one metric (variable champion_metric). probe_* compares them on the same
-- gold documents (students.gold_probe, identified by probe_set), so only checkpoints scored on
-- the current probe compete; val_* uses each checkpoint's own validation split, which differs
-- between label sources (the fallback when the corpus has no gold labels). The best score wins;
-- on a tie the older checkpoint stays, so a new checkpoint that is not better never replaces it.
CREATE OR REPLACE TABLE students.champion AS
WITH candidates AS (
    SELECT *,
        CASE getvariable('champion_metric')
            WHEN 'probe_accuracy' THEN probe_accuracy
            WHEN 'probe_f1' THEN probe_f1
            WHEN 'val_f1' THEN val_f1
            ELSE val_accuracy END AS score
    FROM students.checkpoints
    WHERE task = getvariable('task')
      AND (NOT starts_with(getvariable('champion_metric'), 'probe_')
           OR probe_set IS NOT DISTINCT FROM getvariable('probe_set'))
), ranked AS (
    SELECT *,
        row_number() OVER (ORDER BY score DESC NULLS LAST, created_at ASC, checkpoint_id) AS rnk,
        count(*) OVER () AS n_candidates
    FROM candidates
)
SELECT
    c.checkpoint_id, c.base_model, c.recipe, c.label_source, c.path, c.score,
    getvariable('champion_metric') AS metric,
    c.n_candidates,
    r.checkpoint_id AS runner_up,
    r.score AS runner_up_score,
    CASE WHEN starts_with(getvariable('champion_metric'), 'probe_')
         THEN format('{} = {:.4f} on the gold probe ({} held-out train documents)',
                     getvariable('champion_metric'), c.score, c.probe_n)
         ELSE format('{} = {:.4f} on its own validation split ({} documents of its label source {}; '
                     'not comparable across label sources: no gold probe)',
                     getvariable('champion_metric'), c.score, c.n_val, c.label_source) END
    || CASE WHEN r.checkpoint_id IS NULL THEN '; the only checkpoint of task ' || getvariable('task')
            ELSE format('; best of {} comparable checkpoints (runner-up {} [{}]: {:.4f}{})',
                        c.n_candidates, r.checkpoint_id, r.recipe, r.score,
                        CASE WHEN r.score = c.score THEN ', a tie: the older one stays' ELSE '' END) END
    AS reason,
    current_timestamp AS chosen_at
FROM ranked c
LEFT JOIN ranked r ON r.rnk = 2
WHERE c.rnk = 1;
