-- views.confusion_matrix: gold label vs predicted label, counted. `who` = 'student': the
-- champion on every occurrence of the evaluation split that has gold (as in evaluation.report;
-- the split is the DuckDB variable eval_split, 'test' when unset);
-- `who` = 'teacher': the LLM's parsed labels on the sampled documents that have gold.
CREATE OR REPLACE VIEW views.confusion_matrix AS
WITH names AS (
    SELECT DISTINCT
        label_id,
        name
    FROM labeling.task_labels
),

pairs AS (
    SELECT
        'student' AS who,
        o.gold_label AS gold,
        p.label AS predicted
    FROM raw.occurrences AS o
    INNER JOIN predictions.labels AS p
        ON o.doc_id = p.doc_id AND p.checkpoint_id = (SELECT checkpoint_id FROM students.champion)
    WHERE o.split = coalesce(getvariable('eval_split'), 'test') AND o.gold_label IS NOT NULL
    UNION ALL
    SELECT
        'teacher',
        gold_label,
        label
    FROM labeling.parsed_labels
    WHERE gold_label IS NOT NULL
)

SELECT
    who,
    g.name AS gold_label,
    p.name AS predicted_label,
    count(*) AS documents
FROM pairs
LEFT JOIN names AS g ON pairs.gold = g.label_id
LEFT JOIN names AS p ON pairs.predicted = p.label_id
GROUP BY ALL
ORDER BY who, gold_label, predicted_label;
