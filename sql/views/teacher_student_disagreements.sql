-- views.teacher_student_disagreements: sampled documents where the champion student's label
-- differs from the teacher's parsed label, the student's most confident disagreements first.
-- Where the document has a gold label, `right` says who got it right.
CREATE OR REPLACE VIEW views.teacher_student_disagreements AS
WITH names AS (
    SELECT DISTINCT
        label_id,
        name
    FROM labeling.task_labels
)

SELECT
    t.doc_id,
    t.label_name AS teacher_label,
    s_name.name AS student_label,
    round(p.probability, 4) AS student_probability,
    g_name.name AS gold_label,
    CASE
        WHEN t.gold_label IS NULL THEN NULL
        WHEN t.gold_label = t.label THEN 'teacher'
        WHEN t.gold_label = p.label THEN 'student'
        ELSE 'neither'
    END AS "right",
    t.raw_text AS teacher_answer,
    left(c.text, 200) AS text_start
FROM labeling.parsed_labels AS t
INNER JOIN predictions.labels AS p
    ON t.doc_id = p.doc_id AND p.checkpoint_id = (SELECT checkpoint_id FROM students.champion)
INNER JOIN raw.corpus AS c ON t.doc_id = c.doc_id
LEFT JOIN names AS s_name ON p.label = s_name.label_id
LEFT JOIN names AS g_name ON t.gold_label = g_name.label_id
WHERE p.label <> t.label
ORDER BY p.probability DESC, t.doc_id ASC;
