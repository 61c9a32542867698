-- Segmented rollup for one route: one row per segment x prompt_version.
-- {segments} is replaced by the segment columns, chosen from a fixed list of schema columns
-- (never user text). Values are parameters:
--   $route (required); $env, $since, $until (NULL = no filter), and the window's days
--   $since_day and $until_day (YYYY-MM-DD, both inclusive; NULL = no filter).
SELECT
    {segments},
    prompt_version,
    COUNT(*) AS n,
    AVG(duration_ms) AS avg_duration_ms,
    percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_ms) AS p50_duration_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_duration_ms,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_duration_ms,
    AVG(tokens_in) AS avg_tokens_in,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY tokens_in) AS p95_tokens_in,
    AVG(tokens_out) AS avg_tokens_out,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY tokens_out) AS p95_tokens_out,
    AVG(CASE WHEN status = 'flagged' THEN 1.0 ELSE 0.0 END) AS flagged_rate,
    AVG(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate,
    COUNT(label) AS labeled,
    SUM(CASE WHEN label = 'bad' THEN 1.0 ELSE 0.0 END) / NULLIF(COUNT(label), 0) AS bad_label_rate
FROM llm_events_labeled
WHERE route = $route
  AND ($env IS NULL OR env = $env)
  AND ($since IS NULL OR ts >= $since)
  AND ($until IS NULL OR ts < $until)
  -- The same window in days, so that only its date= partitions are opened.
  AND ($since_day IS NULL OR date >= $since_day)
  AND ($until_day IS NULL OR date <= $until_day)
GROUP BY {segments}, prompt_version
ORDER BY {segments}, n DESC
