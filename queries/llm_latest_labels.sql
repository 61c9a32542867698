-- View llm_latest_labels: each labeled event's latest label.
-- "Latest" is by label ts; ties are broken by label_id so the answer is deterministic.
-- (One ordered aggregate per event: several times faster than ROW_NUMBER() over a sort.)
CREATE VIEW llm_latest_labels AS
SELECT
    event_id,
    last_value(label ORDER BY ts, label_id) AS label,
    last_value(labeler ORDER BY ts, label_id) AS labeler,
    max(ts) AS ts
FROM llm_labels
GROUP BY event_id
