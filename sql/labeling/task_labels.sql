-- labeling.task_labels: the task's labels and the words that name them (the answer parser's
-- vocabulary, sql/labeling/answer_matches.sql), with the task's match rule ('contains' | 'word').
-- Reads the staged frame `staged_task_labels` (label_id, name, word, match), made from the task file
-- by llambert.warehouse.write_task_labels. Rebuilt whole each time.
CREATE OR REPLACE TABLE labeling.task_labels AS
SELECT
    label_id,
    name,
    word,
    match
FROM staged_task_labels;
