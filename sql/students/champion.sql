-- students.champion: the checkpoint whose predictions are the product, and why.
-- The rule (README "Students"), over the eligible rows of students.candidates (never collapsed,
-- never below the linear floor): take the best score; every candidate within champion_tolerance of
-- it is as good. Speed decides among the as-good only when it is material: a candidate counts as fast
-- when its docs_per_s (measured on the judge set) is within champion_speedup of the fastest as-good one,
-- and among the fast ones the higher score wins (an ensemble at 38 docs/s beats an encoder at 39 that
-- scores lower; a linear floor at 2,000 docs/s beats an encoder at 40 that scores within the tolerance);
-- then the faster, then the older checkpoint (a new checkpoint that is not better never replaces it).
-- Ensembles (kind ensemble, distilled_ensemble) within champion_ensemble_margin of the best also count as
-- as good, and among the fast as-good ones an ensemble ranks first: on a few hundred probe documents
-- differences this small are noise, while an ensemble measured on unseen test reviews beat its own encoder
-- every time (README "Students": +0.95 and +1.24 points on 22,642 fresh IMDb test reviews).
-- No eligible candidate: no row (llambert.pipeline.choose_champion raises, nothing is labeled).
CREATE OR REPLACE TABLE students.champion AS
WITH eligible AS (
    SELECT
        *,
        max(score) OVER () AS best_score,
        count(*) OVER () AS n_candidates
    FROM students.candidates
    WHERE eligible
),

judged AS (
    SELECT
        *,
        kind IN ('ensemble', 'distilled_ensemble')
        AND coalesce(getvariable('champion_ensemble_margin'), 0.0) > 0 AS ensemble_first,
        score >= best_score - coalesce(getvariable('champion_tolerance'), 0.0)
        OR (
            kind IN ('ensemble', 'distilled_ensemble')
            AND score >= best_score - coalesce(getvariable('champion_ensemble_margin'), 0.0)
        ) AS as_good
    FROM eligible
),

timed AS (
    SELECT
        *,
        coalesce(
            docs_per_s * coalesce(getvariable('champion_speedup'), 1.0)
            >= max(docs_per_s) FILTER (WHERE as_good) OVER (),
            TRUE
        ) AS fast
    FROM judged
),

ranked AS (
    SELECT
        *,
        row_number() OVER (
            ORDER BY
                as_good DESC, as_good AND fast DESC, as_good AND fast AND ensemble_first DESC, score DESC,
                docs_per_s DESC NULLS LAST, created_at ASC, checkpoint_id ASC
        ) AS rnk
    FROM timed
),

top_scored AS (
    SELECT *
    FROM ranked
    ORDER BY score DESC, created_at ASC, checkpoint_id ASC
    LIMIT 1
),

rejected AS (
    SELECT
        count(*) AS n,
        string_agg(format('{} [{}] {}', checkpoint_id, kind, verdict), '; ') AS why
    FROM students.candidates
    WHERE NOT eligible
)

SELECT
    c.checkpoint_id,
    c.kind,
    c.base_model,
    c.recipe,
    c.label_source,
    c.path,
    c.score,
    getvariable('champion_metric') AS metric,
    c.n_candidates,
    c.docs_per_s,
    c.floor_score,
    r.checkpoint_id AS runner_up,
    r.score AS runner_up_score,
    CASE
        WHEN starts_with(getvariable('champion_metric'), 'probe_')
            THEN format(
                '{} = {:.4f} on the gold probe ({} held-out train documents)',
                getvariable('champion_metric'), c.score, c.probe_n
            )
        ELSE format(
            '{} = {:.4f} on its own validation split ({} documents of its label source {}; '
            'not comparable across label sources: no gold probe)',
            getvariable('champion_metric'), c.score, c.n_val, c.label_source
        )
    END
    || CASE
        WHEN c.kind <> 'linear' AND c.floor_score IS NOT NULL
            THEN format('; linear floor {:.4f}', c.floor_score)
        ELSE ''
    END
    || CASE
        WHEN r.checkpoint_id IS NULL THEN '; the only eligible checkpoint of task ' || getvariable('task')
        ELSE format(
            '; best of {} comparable checkpoints (runner-up {} [{}]: {:.4f}{})',
            c.n_candidates, r.checkpoint_id, r.kind, r.score,
            CASE
                WHEN r.score = c.score AND r.as_good THEN ', a tie: the older one stays'
                WHEN r.as_good AND c.score < r.score AND c.ensemble_first AND NOT r.ensemble_first THEN ''
                WHEN r.as_good AND c.score < r.score AND c.score >= c.best_score - getvariable('champion_tolerance')
                    THEN format(
                        ', within {} of the best and over {}x faster: {:.0f} vs {:.0f} docs/s',
                        getvariable('champion_tolerance'), getvariable('champion_speedup'), c.docs_per_s, r.docs_per_s
                    )
                WHEN r.as_good AND c.score < r.score
                    THEN format(
                        ', an ensemble within {} of the best (champion_ensemble_margin) and over {}x faster: '
                        || '{:.0f} vs {:.0f} docs/s',
                        getvariable('champion_ensemble_margin'), getvariable('champion_speedup'), c.docs_per_s,
                        r.docs_per_s
                    )
                WHEN r.as_good AND c.score > r.score AND r.docs_per_s > c.docs_per_s
                    THEN format(
                        ', faster but by less than {}x: {:.0f} vs {:.0f} docs/s',
                        getvariable('champion_speedup'), r.docs_per_s, c.docs_per_s
                    )
                ELSE ''
            END
        )
    END
    || CASE
        WHEN c.ensemble_first AND c.score < t.score AND NOT t.ensemble_first
            THEN format(
                '; an ensemble within {} of the best ({} [{}]: {:.4f}): preferred to a single model (probe '
                || 'differences this small are noise; README "Students")',
                getvariable('champion_ensemble_margin'), t.checkpoint_id, t.kind, t.score
            )
        ELSE ''
    END
    || CASE WHEN x.n > 0 THEN format('; not eligible: {}', x.why) ELSE '' END
        AS reason,
    current_timestamp AS chosen_at
FROM ranked AS c
LEFT JOIN ranked AS r ON r.rnk = 2
LEFT JOIN top_scored AS t ON TRUE
CROSS JOIN rejected AS x
WHERE c.rnk = 1;
