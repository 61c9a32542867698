-- View llm_events_labeled: every event with its latest label (NULL when it has none).
-- "Latest" is by label ts; ties are broken by label_id so the answer is deterministic.
CREATE VIEW llm_events_labeled AS
SELECT
    e.*,
    l.label,
    l.labeler,
    l.ts AS label_ts
FROM llm_events e
LEFT JOIN (
    SELECT event_id, label, labeler, ts
    FROM (
        SELECT
            event_id,
            label,
            labeler,
            ts,
            ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY ts DESC, label_id DESC) AS rn
        FROM llm_labels
    ) ranked
    WHERE rn = 1
) l ON e.event_id = l.event_id
