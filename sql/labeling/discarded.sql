-- labeling.discarded: answers that name no label or several, kept with the raw answer and why.
CREATE OR REPLACE TABLE labeling.discarded AS
SELECT
    m.doc_id,
    m.raw_text,
    m.normalized_answer,
    m.matched_labels,
    m.discard_reason AS reason,
    s.sample_rank
FROM labeling.answer_matches AS m
INNER JOIN labeling.sample AS s USING (doc_id)
WHERE m.discard_reason IS NOT NULL
ORDER BY s.sample_rank;
