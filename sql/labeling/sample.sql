-- labeling.sample: the documents the teacher labels, each with the round it joined in and why.
-- Round 0 is the first `sample_size` documents of labeling.pool (all of the sample under
-- sample.strategy random; the seed round under uncertainty). Later rounds are appended by
-- the @round section below. Growing the sample keeps every document already chosen.
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
FROM labeling.pool AS p INNER JOIN raw.corpus AS c USING (doc_id)
WHERE p.pool_rank <= getvariable('sample_size')
ORDER BY p.pool_rank;

-- @round: a round of sample.strategy uncertainty: the teacher step appends the picks of
-- llambert/sampling.py (registered as `round_picks`: doc_id, picked_by, student_margin, pick_order).
-- A re-run of the same round replaces it; a document already sampled is never added twice, and only
-- documents of labeling.pool (so never an excluded split) can be added.
-- Variables: round.
DELETE FROM labeling.sample
WHERE round >= getvariable('round');
INSERT INTO labeling.sample
SELECT
    (SELECT coalesce(max(sample_rank), 0) FROM labeling.sample)
    + row_number() OVER (ORDER BY r.pick_order) AS sample_rank,
    r.doc_id,
    c.split,
    c.gold_label,
    getvariable('round') AS round,
    r.picked_by,
    r.student_margin
FROM round_picks AS r
INNER JOIN labeling.pool USING (doc_id)
INNER JOIN raw.corpus AS c USING (doc_id)
WHERE r.doc_id NOT IN (SELECT doc_id FROM labeling.sample)
ORDER BY r.pick_order;
