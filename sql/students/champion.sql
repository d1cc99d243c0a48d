-- students.champion: the checkpoint whose predictions are the product. The best checkpoint of
-- the current task by the configured validation metric; on a tie the older one stays, so a new
-- checkpoint that is not better never replaces it.
CREATE OR REPLACE TABLE students.champion AS
WITH scored AS (
    SELECT *, CASE getvariable('champion_metric') WHEN 'val_f1' THEN val_f1 ELSE val_accuracy END AS score
    FROM students.checkpoints
    WHERE task = getvariable('task')
)
SELECT
    checkpoint_id, base_model, recipe, label_source, path, score,
    getvariable('champion_metric') AS metric,
    format('best {} = {:.4f} among {} checkpoint(s) of task {}', getvariable('champion_metric'), score,
           (SELECT count(*) FROM scored), getvariable('task')) AS reason,
    current_timestamp AS chosen_at
FROM scored
ORDER BY score DESC NULLS LAST, created_at ASC
LIMIT 1;
