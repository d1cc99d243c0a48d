-- views.confusion_matrix: gold label vs predicted label, counted. `who` = 'student': the
-- champion on every occurrence of the evaluation split that has gold (as in evaluation.report;
-- the split is the DuckDB variable eval_split, 'test' when unset);
-- `who` = 'teacher': the LLM's parsed labels on the sampled documents that have gold.
CREATE OR REPLACE VIEW views.confusion_matrix AS
WITH names AS (SELECT DISTINCT label_id, name FROM labeling.task_labels),
pairs AS (
    SELECT 'student' AS who, o.gold_label AS gold, p.label AS predicted
    FROM raw.occurrences o
    JOIN predictions.labels p
      ON p.doc_id = o.doc_id AND p.checkpoint_id = (SELECT checkpoint_id FROM students.champion)
    WHERE o.split = coalesce(getvariable('eval_split'), 'test') AND o.gold_label IS NOT NULL
    UNION ALL
    SELECT 'teacher', gold_label, label FROM labeling.parsed_labels WHERE gold_label IS NOT NULL
)
SELECT who, g.name AS gold_label, p.name AS predicted_label, count(*) AS documents
FROM pairs
LEFT JOIN names g ON g.label_id = pairs.gold
LEFT JOIN names p ON p.label_id = pairs.predicted
GROUP BY ALL
ORDER BY who, gold_label, predicted_label;
