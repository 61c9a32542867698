-- `timeline --at`: what one route served around an instant, per env and tier and prompt
-- version. Values are parameters: $route (required); $env (NULL = every env); $since
-- (inclusive) and $until (exclusive), the bucket centred on the instant, and their days
-- $since_day and $until_day (YYYY-MM-DD, both inclusive).
SELECT
    env,
    tier,
    prompt_version,
    COUNT(*) AS n
FROM llm_events
WHERE route = $route
  AND ($env IS NULL OR env = $env)
  AND ts >= $since
  AND ts < $until
  -- The same window in days, so that only its date= partitions are opened.
  AND date >= $since_day
  AND date <= $until_day
GROUP BY env, tier, prompt_version
ORDER BY env, tier, n DESC
