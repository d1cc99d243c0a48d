-- labeling.parsed_labels: sampled documents whose answer names exactly one of the task's
-- labels. This is the student's training data; model_identity and answered_by (a cascade's
-- 'cascade_small' or 'teacher') say which model's answer it is.
CREATE OR REPLACE TABLE labeling.parsed_labels AS
SELECT
    m.doc_id,
    m.label,
    m.label_name,
    m.probability,
    m.raw_text,
    s.sample_rank,
    s.split,
    s.gold_label,
    r.model_identity,
    r.answered_by
FROM labeling.answer_matches AS m
INNER JOIN labeling.sample AS s USING (doc_id)
INNER JOIN labeling.llm_responses AS r USING (doc_id)
WHERE m.discard_reason IS NULL
ORDER BY s.sample_rank;
