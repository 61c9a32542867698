-- View llm_latest_labels: each labeled event's latest label.
-- "Latest" is by label ts; ties are broken by label_id so the answer is deterministic.
CREATE VIEW llm_latest_labels AS
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
