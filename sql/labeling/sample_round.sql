-- labeling.sample, a round of sample.strategy uncertainty: the teacher step appends the picks of
-- llambert/sampling.py (registered as `round_picks`: doc_id, picked_by, student_margin, pick_order).
-- A re-run of the same round replaces it; a document already sampled is never added twice, and only
-- documents of labeling.pool (so never an excluded split) can be added.
-- Variables: round.
DELETE FROM labeling.sample WHERE round >= getvariable('round');
INSERT INTO labeling.sample
SELECT
    (SELECT coalesce(max(sample_rank), 0) FROM labeling.sample) + row_number() OVER (ORDER BY r.pick_order) AS sample_rank,
    r.doc_id,
    c.split,
    c.gold_label,
    getvariable('round') AS round,
    r.picked_by,
    r.student_margin
FROM round_picks r
JOIN labeling.pool p USING (doc_id)
JOIN raw.corpus c USING (doc_id)
WHERE r.doc_id NOT IN (SELECT doc_id FROM labeling.sample)
ORDER BY r.pick_order;
