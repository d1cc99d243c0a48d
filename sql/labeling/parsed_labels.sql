-- labeling.parsed_labels: sampled documents whose answer names exactly one of the task's
-- labels. This is the student's training data.
CREATE OR REPLACE TABLE labeling.parsed_labels AS
SELECT
    m.doc_id,
    m.label,
    m.label_name,
    m.probability,
    m.raw_text,
    s.sample_rank,
    s.split,
    s.gold_label
FROM labeling.answer_matches AS m
INNER JOIN labeling.sample AS s USING (doc_id)
WHERE m.discard_reason IS NULL
ORDER BY s.sample_rank;
