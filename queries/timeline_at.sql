-- `timeline --at`: what one route served around an instant, per env and tier and prompt
-- version. Values are parameters: $route (required); $env (NULL = every env); $since
-- (inclusive) and $until (exclusive), the bucket centred on the instant.
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
GROUP BY env, tier, prompt_version
ORDER BY env, tier, n DESC
