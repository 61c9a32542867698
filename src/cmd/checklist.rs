//! `promptgate checklist`: the release checklist of a prompt change, filled from the registry,
//! the lake (through the judge) and the review.
//!
//! Exit codes: 0 every required check passes (judge promote or in progress without abort,
//! prompt_sha and pins check, review ship), 1 otherwise, 2 any usage or input error (never 1,
//! so a broken invocation cannot pass for a failed check).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::judge::Policy;
use crate::lake::Lake;
use crate::query;
use crate::registry::state::{ALL_ENVS, check_name};
use crate::registry::{Registry, State};
use crate::report::checklist::{
    self as render, CanaryPlan, Checklist, ChecklistFormat, ReviewResult, Rollback, RolloutPlan,
    VersionRef, Why,
};
use crate::review::ReviewDir;
use crate::rollout::{Rollout, RolloutStatus};

use super::judge::{JudgeArgs, evaluate};
use super::rollout::{StepAssessment, assess_step, rollout_policy};

/// Options of `promptgate checklist`.
#[derive(Debug, Clone)]
pub struct ChecklistArgs {
    pub route: String,
    pub baseline: String,
    pub canary: String,
    pub env: Option<String>,
    pub review: Option<String>,
    pub why: Option<String>,
    /// The judge's window without a rollout: events from here on (default: the canary's first).
    pub since_us: Option<i64>,
    pub format: ChecklistFormat,
}

/// The metrics of "Expected impact": quality (bad labels), cost (tokens), latency (p95). Report
/// only: they describe the canary, the rollout's own policy decides.
const IMPACT_RULES_TOML: &str = r#"
[[rules]]
metric = "bad_label_rate"
max_ratio = 1.1
report_only = true

[[rules]]
metric = "avg_tokens_in"
max_ratio = 1.1
report_only = true

[[rules]]
metric = "avg_tokens_out"
max_ratio = 1.1
report_only = true

[[rules]]
metric = "p95_duration_ms"
max_ratio = 1.1
report_only = true
"#;

/// Prints the checklist; returns its exit code (every error is 2).
pub async fn run(lake: &Lake, reg: &Registry, a: ChecklistArgs) -> i32 {
    match checklist(lake, reg, &a).await {
        Ok(c) => {
            let mut out = super::stdout();
            let written = match a.format {
                ChecklistFormat::Markdown => render::write_markdown(&c, &mut out),
                ChecklistFormat::Json => render::write_json(&c, &mut out),
            }
            .and_then(|()| super::flush(&mut out));
            match written {
                Ok(()) => c.exit_code,
                Err(e) => {
                    eprintln!("{e}");
                    2
                }
            }
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

/// The rollout of this change: the active one of `baseline` -> `canary` (in `env` when given),
/// else the latest.
fn find_rollout<'a>(
    rollouts: &'a [Rollout],
    baseline: &str,
    canary: &str,
    env: Option<&str>,
) -> Option<&'a Rollout> {
    let mine = |r: &&Rollout| {
        r.baseline == baseline && r.canary == canary && env.is_none_or(|e| r.env == e)
    };
    rollouts
        .iter()
        .filter(mine)
        .find(|r| r.is_active())
        .or_else(|| rollouts.iter().rev().find(mine))
}

fn parse_rfc3339_us(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Gathers everything the checklist says.
pub async fn checklist(lake: &Lake, reg: &Registry, a: &ChecklistArgs) -> Result<Checklist> {
    check_name("route", &a.route)?;
    check_name("baseline", &a.baseline)?;
    check_name("canary", &a.canary)?;
    if let Some(e) = &a.env {
        check_name("env", e)?;
    }
    if a.baseline == a.canary {
        return Err(
            Error::usage(format!("--baseline and --canary are both {:?}", a.canary))
                .with_hint("a checklist compares two different prompt versions"),
        );
    }
    if a.why.as_deref().is_some_and(|w| w.trim().is_empty()) {
        return Err(Error::usage("--why is empty").with_hint("say why, in words, or leave it out"));
    }
    let state = reg.load()?;
    let route = state.route(&a.route)?;
    let bv = route.require_version(&a.route, &a.baseline)?;
    let cv = route.require_version(&a.route, &a.canary)?;
    let rollout = find_rollout(&route.rollouts, &a.baseline, &a.canary, a.env.as_deref());
    let env = match (&a.env, rollout) {
        (Some(e), _) => e.clone(),
        (None, Some(r)) => r.env.clone(),
        (None, None) => {
            return Err(Error::usage(format!(
                "no rollout of {:?} over {:?} on route {:?} says which env to check",
                a.canary, a.baseline, a.route
            ))
            .with_hint("give --env"));
        }
    };
    let diff = render::unified_diff(
        &a.baseline,
        &reg.prompt_text(&bv.sha256)?,
        &a.canary,
        &reg.prompt_text(&cv.sha256)?,
    );
    let why = why(reg, a)?;
    let has_events = lake.require_existing().is_ok();

    // The judge on the rollout's step (the way `rollout step` judges it), read-only.
    let (plan, assessment) = match rollout {
        Some(r) => {
            // A completed rollout sits on its last step (100%); the step judged is the one
            // before. An active, aborted or killed one is judged where it is.
            let step = match r.status {
                RolloutStatus::Completed => r.last_verdict.as_ref().map_or(r.step, |v| v.step),
                _ => r.step,
            };
            let until = r.ended_at.as_deref().and_then(parse_rfc3339_us);
            let assessment = if has_events {
                Some(assess_step(lake, &state, &a.route, r, step, r.step_started_us, until).await?)
            } else {
                None
            };
            (Some(rollout_plan(r, step)), assessment)
        }
        None => (None, None),
    };
    let policy = match rollout {
        Some(r) => rollout_policy(r)?,
        None => Policy::default(),
    };

    let registered: BTreeMap<String, String> = [
        (a.baseline.clone(), bv.sha256.clone()),
        (a.canary.clone(), cv.sha256.clone()),
    ]
    .into();
    let (impact, sha) = if has_events {
        measure(lake, a, &env, rollout, &policy, &registered).await?
    } else {
        (
            render::Impact {
                window: format!("the lake at {} has no events", lake.root().display()),
                no_canary_data: true,
                segments: Vec::new(),
                intervals: String::new(),
            },
            render::sha_check(&[], &registered),
        )
    };

    let review = review_result(lake, a, &env)?;
    let rollback = rollback(&state, a, &env)?;
    // Without a promptgate rollout (traffic split by another tool), the judge compares the two
    // versions over a window, as `promptgate judge` does, with the default policy.
    let external = match (rollout, has_events) {
        (None, true) => {
            let ctx = query::judge_session(lake).await?;
            let args = window_args(a, &env, a.since_us, None);
            Some(evaluate(&ctx, &args, &Policy::default()).await?)
        }
        _ => None,
    };
    let external_window = a.since_us.map_or_else(
        || "from the canary's first event".to_string(),
        |s| format!("since {}", crate::registry::format_us(s)),
    );
    let verdict = assessment
        .as_ref()
        .map(|s: &StepAssessment| &s.verdict)
        .or(external.as_ref());
    let decided = assessment
        .as_ref()
        .map(StepAssessment::decision)
        .or_else(|| external.as_ref().map(|v| (v.verdict, v.reason.clone())));
    // A canary a kill switch took out of service cannot pass, whatever its rollout said.
    let killed = [env.as_str(), ALL_ENVS]
        .iter()
        .filter_map(|scope| route.kills.get(*scope).map(|k| (*scope, k)))
        .find(|(_, k)| k.killed.contains(&a.canary))
        .map(|(scope, k)| {
            let scope = match scope {
                ALL_ENVS => "every env".to_string(),
                e => format!("env {e}"),
            };
            format!(
                "{} is out of service: killed in {scope} at {} by {} ({}); traffic goes to {}",
                a.canary, k.at, k.actor, k.why, k.version
            )
        });
    let checks = vec![
        render::judge_check(
            plan.as_ref(),
            decided.as_ref(),
            killed.as_deref(),
            &external_window,
        ),
        sha.to_check(),
        render::pins_check(rollout.map_or(&[][..], |r| &r.pins[..]), verdict),
        render::review_check(&review),
    ];
    let mut c = Checklist {
        route: a.route.clone(),
        env,
        baseline: VersionRef {
            version: a.baseline.clone(),
            sha256: bv.sha256.clone(),
        },
        canary: VersionRef {
            version: a.canary.clone(),
            sha256: cv.sha256.clone(),
        },
        diff,
        why,
        impact,
        canary_plan: CanaryPlan {
            rollout: plan,
            stop_conditions: render::stop_conditions(&policy),
            judge: verdict
                .zip(decided.as_ref())
                .map(|(v, (d, reason))| render::judge_now(v, *d, reason)),
        },
        review,
        rollback,
        checks,
        exit_code: 1,
    };
    c.decide();
    Ok(c)
}

/// Expected impact (report-only judge rules over the rollout's events, or all events of both
/// versions without a rollout) and the prompt_sha check over the same events.
async fn measure(
    lake: &Lake,
    a: &ChecklistArgs,
    env: &str,
    rollout: Option<&Rollout>,
    policy: &Policy,
    registered: &BTreeMap<String, String>,
) -> Result<(render::Impact, render::ShaCheck)> {
    let since_us = rollout.map(|r| r.started_us);
    let until_us = rollout
        .and_then(|r| r.ended_at.as_deref())
        .and_then(parse_rfc3339_us);
    let window = match rollout {
        Some(r) => format!(
            "the rollout's events since {}{}",
            r.started_at,
            r.ended_at
                .as_deref()
                .map(|e| format!(" until {e}"))
                .unwrap_or_default()
        ),
        None => format!("all events of both versions in env {env:?}"),
    };
    let ctx = query::judge_session(lake).await?;
    let mut impact_policy = policy.clone();
    impact_policy.rules = Policy::from_toml(IMPACT_RULES_TOML)
        .map_err(|e| Error::runtime(format!("the impact rules: {e}")))?
        .rules;
    let args = window_args(a, env, since_us, until_us);
    let v = evaluate(&ctx, &args, &impact_policy).await?;
    let arms = query::rollout_arms(
        &ctx,
        &a.route,
        env,
        &a.baseline,
        &a.canary,
        since_us.unwrap_or(0),
    )
    .await?;
    Ok((
        render::impact(&v, window),
        render::sha_check(&arms, registered),
    ))
}

/// The judge's arguments for both versions' events in `env` between `since_us` and `until_us`
/// (no sample-ratio check, no pins): the impact rules' window, and the judge without a rollout.
fn window_args(
    a: &ChecklistArgs,
    env: &str,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> JudgeArgs {
    JudgeArgs {
        as_of: None,
        route: a.route.clone(),
        baseline: a.baseline.clone(),
        canary: a.canary.clone(),
        env: Some(env.to_string()),
        policy: None,
        since_us,
        until_us,
        expected_share: None,
        srm_exclude: Vec::new(),
        pins: Vec::new(),
        format: crate::report::VerdictFormat::Json,
    }
}

fn rollout_plan(r: &Rollout, step: usize) -> RolloutPlan {
    let step = step.min(r.steps.len() - 1);
    RolloutPlan {
        id: r.id.clone(),
        status: r.status.as_str().to_string(),
        steps: r.steps.iter().map(|s| s.label()).collect(),
        step: step + 1,
        share: r.steps[step].label(),
        started_at: r.started_at.clone(),
        step_started_at: r.step_started_at.clone(),
        ended_at: r.ended_at.clone(),
        pins: r.pins.clone(),
    }
}

/// `--why`, else the note given when the canary version was registered (the audit log).
fn why(reg: &Registry, a: &ChecklistArgs) -> Result<Why> {
    if let Some(w) = &a.why {
        return Ok(Why {
            text: Some(w.clone()),
            source: "--why".to_string(),
            registered: None,
        });
    }
    let prefix = format!("{} (", a.canary);
    let added = reg.history()?.into_iter().find(|e| {
        e.change.action == "add"
            && e.change.route == a.route
            && e.change
                .after
                .as_deref()
                .is_some_and(|s| s.starts_with(&prefix))
    });
    Ok(match added {
        Some(e) if e.why.as_deref().is_some_and(|w| !w.trim().is_empty()) => Why {
            text: e.why.clone(),
            source: "registry".to_string(),
            registered: Some(format!("by {} at {}", e.actor, e.at)),
        },
        _ => Why {
            text: None,
            source: "none".to_string(),
            registered: None,
        },
    })
}

/// The review's latest score, checked to be of these two versions on this route.
fn review_result(lake: &Lake, a: &ChecklistArgs, env: &str) -> Result<ReviewResult> {
    let Some(id) = &a.review else {
        return Ok(ReviewResult {
            review: None,
            done: false,
            score: None,
            note: format!(
                "no --review given; start one with `promptgate review sample --route {} --env {env}`",
                a.route
            ),
        });
    };
    let dir = ReviewDir::open(lake, id)?;
    let m = dir.manifest()?;
    if m.route != a.route {
        return Err(Error::usage(format!(
            "review {id} is of route {:?}, not {:?}",
            m.route, a.route
        )));
    }
    if let (Some(b), Some(c)) = (&m.baseline, &m.canary)
        && (b != &a.baseline || c != &a.canary)
    {
        return Err(Error::usage(format!(
            "review {id} compares {c:?} over {b:?}, not {:?} over {:?}",
            a.canary, a.baseline
        ))
        .with_hint("pass the review of this change, or leave --review out"));
    }
    let score = dir.score()?;
    let note = match &score {
        Some(_) => String::new(),
        None => format!(
            "review {id} is not scored yet: `promptgate review score --id {id} --labels FILE`"
        ),
    };
    Ok(ReviewResult {
        review: Some(id.clone()),
        done: score.is_some(),
        score,
        note,
    })
}

/// The version a kill switch would send traffic back to, and the command.
fn rollback(state: &State, a: &ChecklistArgs, env: &str) -> Result<Rollback> {
    let route = state.route(&a.route)?;
    let lkg = route.last_known_good(Some(env), std::slice::from_ref(&a.canary));
    Ok(match lkg {
        Some(v) => Rollback {
            command: Some(format!(
                "promptgate registry kill --route {} --env {env} --why \"roll back {} to {v}\"",
                a.route, a.canary
            )),
            note: format!("sends all of env {env}'s traffic to {v} and ends any rollout"),
            last_known_good: Some(v),
        },
        None => Rollback {
            last_known_good: None,
            command: None,
            note: format!(
                "no last-known-good version in env {env}: no earlier default of route {} other than {}; a kill would be refused",
                a.route, a.canary
            ),
        },
    })
}
