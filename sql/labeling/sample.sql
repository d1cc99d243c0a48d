-- labeling.sample: the documents the teacher labels, each with the round it joined in and why.
-- Round 0 is the first `sample_size` documents of labeling.pool (all of the sample under
-- sample.strategy random; the seed round under uncertainty). Later rounds are appended by
-- sql/labeling/sample_round.sql. Growing the sample keeps every document already chosen.
-- Variables: sample_size (documents in round 0).
CREATE OR REPLACE TABLE labeling.sample AS
SELECT
    p.pool_rank AS sample_rank,
    p.doc_id,
    c.split,
    c.gold_label,
    0 AS round,
    'random' AS picked_by,
    NULL::DOUBLE AS student_margin
FROM labeling.pool p JOIN raw.corpus c USING (doc_id)
WHERE p.pool_rank <= getvariable('sample_size')
ORDER BY p.pool_rank;
