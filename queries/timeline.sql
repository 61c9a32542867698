-- The 2am timeline of one route: per time bucket and prompt version, the events, the flagged
-- and error rates and the p95 duration. Values are parameters:
--   $route (required); $env (NULL = every env);
--   $since (inclusive) and $until (exclusive), the window, as timestamps, and its days
--   $since_day and $until_day (YYYY-MM-DD, both inclusive);
--   $since_us, the window's start in microseconds, and $bucket_us, the bucket width in
--   microseconds: bucket k holds [since + k * width, since + (k + 1) * width).
SELECT
    (CAST(ts AS BIGINT) - $since_us) / $bucket_us AS bucket,
    prompt_version,
    COUNT(*) AS n,
    AVG(CASE WHEN status = 'flagged' THEN 1.0 ELSE 0.0 END) AS flagged_rate,
    AVG(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_duration_ms
FROM llm_events
WHERE route = $route
  AND ($env IS NULL OR env = $env)
  AND ts >= $since
  AND ts < $until
  -- The same window in days, so that only its date= partitions are opened.
  AND date >= $since_day
  AND date <= $until_day
GROUP BY 1, prompt_version
ORDER BY 1, prompt_version
