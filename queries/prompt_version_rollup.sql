-- Volume rollup per prompt version for one route and env, largest first.
-- Parameters: $route, $env
--   promptgate sql -f queries/prompt_version_rollup.sql --param route=support --param env=prod
SELECT
    prompt_version,
    COUNT(*) AS n,
    AVG(duration_ms) AS avg_duration_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_duration_ms,
    AVG(tokens_in) AS avg_tokens_in,
    AVG(tokens_out) AS avg_tokens_out,
    AVG(CASE WHEN status = 'flagged' THEN 1 ELSE 0 END) AS flagged_rate
FROM llm_events
WHERE route = $route AND env = $env
GROUP BY prompt_version
ORDER BY n DESC
