-- labeling.answer_matches: which of the task's labels each raw answer of the sample names.
-- The parser is the table macro labeling.parse_answers(answers_table), defined here once and used by
-- this view (over labeling.llm_responses) and by the audit (llambert/audit.py, over the audited
-- answers): `answers_table` names a table or view with doc_id, raw_text and label_probs.
-- The paper's parser: lowercase, drop punctuation and spaces, then look for each label word in what
-- is left ('contains'); tasks with short words (yes/no) may ask for whole words ('word').
-- A choice-mode answer that was none of the choices (the openai backend marks it
-- '[answer outside the choices] <raw>') names no label, whatever words it holds: 'outside_choices'.
-- labeling.task_labels (label_id, name, word) is written from the task file before this runs.
CREATE OR REPLACE MACRO labeling.parse_answers(answers_table) AS TABLE
    WITH answers AS (
        SELECT
            doc_id,
            raw_text,
            label_probs,
            starts_with(coalesce(raw_text, ''), '[answer outside the choices]') AS outside,
            lower(regexp_replace(coalesce(raw_text, ''), '[^\pL\pN]', '', 'g')) AS squashed,
            ' ' || trim(lower(regexp_replace(coalesce(raw_text, ''), '[^\pL\pN]+', ' ', 'g'))) || ' ' AS spaced
        FROM query_table(answers_table)
    ),

words AS (  -- noqa: LT02
        SELECT
            label_id,
            name,
            lower(regexp_replace(word, '[^\pL\pN]', '', 'g')) AS squashed_word,
            ' ' || trim(lower(regexp_replace(word, '[^\pL\pN]+', ' ', 'g'))) || ' ' AS spaced_word
        FROM labeling.task_labels
    ),

hits AS (  -- noqa: LT02
        SELECT
            a.doc_id,
            w.label_id,
            w.name
        FROM answers AS a
        INNER JOIN words AS w ON CASE
            WHEN (SELECT any_value(match) FROM labeling.task_labels) = 'word' THEN contains(a.spaced, w.spaced_word)
            ELSE contains(a.squashed, w.squashed_word)
        END
    ),

per_doc AS (  -- noqa: LT02
        SELECT
            doc_id,
            list(DISTINCT name ORDER BY name) AS matched,
            count(DISTINCT label_id) AS n_matched,
            min(label_id) AS label_id,
            min(name) AS label_name
        FROM hits
        GROUP BY doc_id
    )

    SELECT
        a.doc_id,
        a.raw_text,
        a.squashed AS normalized_answer,
        coalesce(p.n_matched, 0) AS n_matched,
        coalesce(p.matched, []) AS matched_labels,
        CASE WHEN p.n_matched = 1 AND NOT a.outside THEN p.label_id END AS label,
        CASE WHEN p.n_matched = 1 AND NOT a.outside THEN p.label_name END AS label_name,
        CASE WHEN p.n_matched = 1 AND NOT a.outside THEN a.label_probs[p.label_name] END AS probability,
        CASE
            WHEN a.raw_text IS NULL THEN 'no_answer'
            WHEN regexp_full_match(a.raw_text, '[\s\pZ]*') THEN 'empty_answer'  -- whitespace of any kind
            WHEN a.outside THEN 'outside_choices'
            WHEN coalesce(p.n_matched, 0) = 0 THEN 'no_label_word'
            WHEN p.n_matched > 1 THEN 'several_labels'
        END AS discard_reason
    FROM answers AS a LEFT JOIN per_doc AS p USING (doc_id);

CREATE OR REPLACE VIEW labeling.answer_matches AS
SELECT * FROM labeling.parse_answers('labeling.llm_responses');
