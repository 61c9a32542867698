-- Events and distinct units per arm of a rollout step since it began, and the prompt_sha each
-- arm's events carry (checked against the registry by prefix).
-- Parameters: $route, $env, $baseline, $canary, $since (timestamp), $since_day (YYYY-MM-DD)
--   promptgate sql -f queries/rollout_arms.sql --param route=support --param env=prod \
--     --param baseline=v1 --param canary=v2 --param since=2026-11-20T10:00:00Z --param since_day=2026-11-20
SELECT
    prompt_version,
    prompt_sha,
    COUNT(*) AS events,
    COUNT(DISTINCT unit_id) AS units
FROM llm_events
WHERE route = $route
  AND env = $env
  AND prompt_version IN ($baseline, $canary)
  AND date >= $since_day
  AND ts >= $since
GROUP BY prompt_version, prompt_sha
ORDER BY prompt_version, prompt_sha
