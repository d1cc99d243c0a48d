-- students.training_examples: the labeled documents the configured recipe trains on, phase by
-- phase (the paper's four set-ups). Documents of students.gold_probe are never trained on.
--   baseline        gold labels of the train split
--   llambert        LLM labels of the sampled documents that are in the train split
--   llambert_extra  LLM labels of every sampled document (train + the unlabeled extra pool),
--                   plus parsed audit labels of later batches
--   combined        phase 1: llambert_extra's LLM labels; phase 2: baseline's gold labels
-- Variables: recipe, confidence ('none' | 'weight' | 'filter'), min_confidence.
CREATE OR REPLACE TABLE students.training_examples AS
WITH probe AS (
    SELECT doc_id FROM students.gold_probe
),

llm_pool AS (
    -- label_probs: the teacher's distribution (choice mode) for soft labels; NULL for generate-mode answers.
    SELECT
        p.doc_id,
        p.label,
        c.split,
        p.sample_rank AS ord,
        'sample' AS origin,
        r.label_probs
    FROM labeling.parsed_labels AS p INNER JOIN raw.corpus AS c USING (doc_id)
    LEFT JOIN labeling.llm_responses AS r USING (doc_id)
    UNION ALL
    -- Audit labels of new batches (llambert/audit.py); a document already in the sample keeps its sample label.
    SELECT
        a.doc_id,
        a.label,
        c.split,
        1000000000 + row_number() OVER (ORDER BY a.batch, a.doc_id) AS ord,
        'audit' AS origin,
        NULL::MAP (VARCHAR, DOUBLE) AS label_probs
    FROM labeling.audit_labels AS a INNER JOIN raw.corpus AS c USING (doc_id)
    WHERE a.label IS NOT NULL AND a.doc_id NOT IN (SELECT doc_id FROM labeling.parsed_labels)
),

llm AS (
    SELECT
        'llm' AS phase,
        1 AS phase_order,
        doc_id,
        label,
        split,
        origin,
        ord,
        label_probs
    FROM llm_pool
    WHERE
        doc_id NOT IN (SELECT doc_id FROM probe)
        AND (getvariable('recipe') <> 'llambert' OR split = 'train')
        -- student.confidence = 'filter': drop the teacher's least confident labels (answers with probabilities only)
        AND NOT (
            getvariable('confidence') = 'filter' AND label_probs IS NOT NULL
            AND list_max(map_values(label_probs)) / greatest(list_sum(map_values(label_probs)), 1e-12)
            < getvariable('min_confidence')
        )
),

gold AS (
    SELECT
        'gold' AS phase,
        2 AS phase_order,
        doc_id,
        gold_label AS label,
        split,
        'gold' AS origin,
        row_number() OVER (ORDER BY md5(doc_id)) AS ord,
        NULL::MAP (VARCHAR, DOUBLE) AS label_probs
    FROM raw.corpus
    WHERE
        split = 'train' AND gold_label IS NOT NULL AND NOT gold_conflict
        AND doc_id NOT IN (SELECT doc_id FROM probe)
)

SELECT * FROM llm
WHERE getvariable('recipe') IN ('llambert', 'llambert_extra', 'combined')
UNION ALL
SELECT * FROM gold
WHERE getvariable('recipe') IN ('baseline', 'combined')
ORDER BY phase_order, ord;
