-- views.least_confident_predictions: the champion student's predictions, least confident
-- first (probability of the chosen label). The documents to review by hand, or to send to
-- the teacher next.
CREATE OR REPLACE VIEW views.least_confident_predictions AS
WITH names AS (
    SELECT DISTINCT
        label_id,
        name
    FROM labeling.task_labels
)

SELECT
    p.doc_id,
    p.batch,
    c.split,
    n.name AS label,
    round(p.probability, 4) AS probability,
    g.name AS gold_label,
    left(c.text, 200) AS text_start
FROM predictions.labels AS p
INNER JOIN raw.corpus AS c ON p.doc_id = c.doc_id
LEFT JOIN names AS n ON p.label = n.label_id
LEFT JOIN names AS g ON c.gold_label = g.label_id
WHERE p.checkpoint_id = (SELECT checkpoint_id FROM students.champion)
ORDER BY p.probability ASC, p.doc_id ASC;
