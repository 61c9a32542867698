-- View llm_events_labeled: every event with its latest label (NULL when it has none).
CREATE VIEW llm_events_labeled AS
SELECT
    e.*,
    l.label,
    l.labeler,
    l.ts AS label_ts
FROM llm_events e
LEFT JOIN llm_latest_labels l ON e.event_id = l.event_id
