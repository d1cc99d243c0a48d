-- evaluation.report: how good and how costly each step was, one metric per row.
-- Teacher: its parsed labels against gold where the sampled document has gold (the gold probe),
-- overall and per gold class (recall_vs_gold_<label name>: of that class's gold documents, the
-- share the teacher named right; n = how many): a teacher that leans one way shows here even when
-- its accuracy looks fine.
-- Student: the champion's predictions against gold on every row of the evaluation split.
-- Projection: the newest teacher run's labeling.cost_projection row: hours to label the whole
-- corpus with the LLM alone versus with LlamBERT (sample by the LLM, everything by the student).
CREATE OR REPLACE TABLE evaluation.report AS
WITH champion AS (
    SELECT checkpoint_id FROM students.champion
),

teacher AS (
    SELECT
        label AS pred,
        gold_label AS gold
    FROM labeling.parsed_labels
    WHERE gold_label IS NOT NULL
),

student AS (
    SELECT
        p.label AS pred,
        o.gold_label AS gold
    FROM raw.occurrences AS o
    INNER JOIN predictions.labels AS p ON o.doc_id = p.doc_id AND p.checkpoint_id = (SELECT checkpoint_id FROM champion)
    WHERE o.split = getvariable('eval_split') AND o.gold_label IS NOT NULL
),

agreement AS (
    SELECT (t.label = p.label)::INTEGER AS agree
    FROM labeling.parsed_labels AS t
    INNER JOIN predictions.labels AS p ON t.doc_id = p.doc_id AND p.checkpoint_id = (SELECT checkpoint_id FROM champion)
),

labels AS (
    SELECT label_id FROM labeling.task_labels
),

per_label AS (
    SELECT
        'teacher' AS who,
        l.label_id,
        count(*) FILTER (WHERE pred = l.label_id AND gold = l.label_id) AS tp,
        count(*) FILTER (WHERE pred = l.label_id AND gold <> l.label_id) AS fp,
        count(*) FILTER (WHERE pred <> l.label_id AND gold = l.label_id) AS fn
    FROM teacher, labels AS l
    GROUP BY l.label_id
    UNION ALL
    SELECT
        'student',
        l.label_id,
        count(*) FILTER (WHERE pred = l.label_id AND gold = l.label_id),
        count(*) FILTER (WHERE pred = l.label_id AND gold <> l.label_id),
        count(*) FILTER (WHERE pred <> l.label_id AND gold = l.label_id)
    FROM student, labels AS l
    GROUP BY l.label_id
),

f1 AS (
    SELECT
        who,
        avg(CASE WHEN 2 * tp + fp + fn = 0 THEN 0 ELSE 2.0 * tp / (2 * tp + fp + fn) END) AS macro_f1
    FROM per_label
    GROUP BY who
),

teacher_recall AS (
    SELECT
        'recall_vs_gold_' || l.name AS metric,
        avg((t.pred = t.gold)::INTEGER) AS value,
        count(t.gold) AS n
    FROM (SELECT DISTINCT
        label_id,
        name
    FROM labeling.task_labels) AS l
    LEFT JOIN teacher AS t ON l.label_id = t.gold
    GROUP BY l.name
),

projection AS (
    SELECT * FROM labeling.cost_projection
    ORDER BY created_at DESC LIMIT 1
),

metrics AS (
    SELECT
        'teacher' AS subject,
        'accuracy_vs_gold' AS metric,
        avg((pred = gold)::INTEGER) AS value,
        count(*) AS n
    FROM teacher
    UNION ALL
    SELECT
        'teacher',
        'macro_f1_vs_gold',
        (
            SELECT macro_f1 FROM f1
            WHERE who = 'teacher'
        ),
        (SELECT count(*) FROM teacher)
    UNION ALL
    SELECT
        'teacher',
        metric,
        value,
        n
    FROM teacher_recall
    UNION ALL
    SELECT
        'teacher',
        'discard_rate',
        (SELECT count(*) FROM labeling.discarded) / nullif((SELECT count(*) FROM labeling.llm_responses), 0),
        (SELECT count(*) FROM labeling.llm_responses)
    UNION ALL
    SELECT
        'student',
        'accuracy_vs_gold',
        avg((pred = gold)::INTEGER),
        count(*)
    FROM student
    UNION ALL
    SELECT
        'student',
        'macro_f1_vs_gold',
        (
            SELECT macro_f1 FROM f1
            WHERE who = 'student'
        ),
        (SELECT count(*) FROM student)
    UNION ALL
    SELECT
        'student',
        'agreement_with_teacher',
        avg(agree),
        count(*)
    FROM agreement
    UNION ALL
    SELECT
        'corpus',
        'documents',
        count(*),
        count(*)
    FROM raw.corpus
    UNION ALL
    SELECT
        'corpus',
        'documents_labeled',
        count(*),
        count(*)
    FROM predictions.labels
    WHERE checkpoint_id = (SELECT checkpoint_id FROM champion)
    UNION ALL
    SELECT
        'projection',
        'llm_only_hours',
        llm_only_hours,
        corpus_docs
    FROM projection
    UNION ALL
    SELECT
        'projection',
        'llambert_hours',
        llambert_hours,
        corpus_docs
    FROM projection
    UNION ALL
    SELECT
        'projection',
        'llm_only_over_llambert',
        llm_only_hours / nullif(llambert_hours, 0),
        corpus_docs
    FROM projection
)

SELECT
    subject,
    metric,
    value,
    n,
    NULL::DOUBLE AS seconds
FROM metrics
UNION ALL
SELECT
    'stage',
    stage,
    sum(rows),
    count(*),
    sum(seconds)
FROM (
    SELECT DISTINCT ON (stage) * FROM ops.stage_runs
    ORDER BY stage ASC, finished_at DESC
) AS latest
GROUP BY stage;
