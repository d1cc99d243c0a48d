-- views.label_balance_by_batch: per corpus batch (Dagster partition), how the champion
-- student's labels are spread, beside the gold labels where the batch has them. A batch whose
-- shares drift far from the others is worth a look.
CREATE OR REPLACE VIEW views.label_balance_by_batch AS
WITH names AS (
    SELECT DISTINCT
        label_id,
        name
    FROM labeling.task_labels
),

pred AS (
    SELECT
        p.batch,
        p.label,
        count(*) AS documents,
        avg(p.probability) AS mean_probability
    FROM predictions.labels AS p
    WHERE p.checkpoint_id = (SELECT checkpoint_id FROM students.champion)
    GROUP BY ALL
),

gold AS (
    SELECT
        batch,
        gold_label AS label,
        count(*) AS gold_documents
    FROM raw.corpus
    WHERE gold_label IS NOT NULL
    GROUP BY ALL
)

SELECT
    pred.batch,
    n.name AS label,
    pred.documents,
    round(pred.documents / sum(pred.documents) OVER (PARTITION BY pred.batch), 4) AS share,
    round(pred.mean_probability, 4) AS mean_probability,
    coalesce(gold.gold_documents, 0) AS gold_documents
FROM pred
LEFT JOIN names AS n ON pred.label = n.label_id
LEFT JOIN gold ON pred.batch = gold.batch AND pred.label = gold.label
ORDER BY pred.batch, pred.label;
