//! `promptgate rollout start|step|status`: staged rollouts gated by the judge.
//!
//! Exit codes: `start` and `status`: 0 ok, 1 refused (nothing changed), 2 usage error.
//! `step`: the judge's — 0 promote, 1 abort, 3 continue, 4 invalid — and 2 for any error, never
//! 1, so a broken invocation cannot be mistaken for an abort.

use std::io::Write;
use std::path::PathBuf;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use super::judge::{JudgeArgs, evaluate};
use crate::error::{Error, Result};
use crate::judge::{Decision, Policy};
use crate::lake::Lake;
use crate::query::{self, ArmEvents};
use crate::registry::state::check_name;
use crate::registry::{Registry, format_us, sha_matches};
use crate::report::{self, Subject, VerdictFormat};
use crate::rollout::{self, Rollout, StartSpec, StepAction, StepVerdict};

use super::registry::{ListFormat, WriteMeta};

/// Options of `rollout start`.
#[derive(Debug, Clone)]
pub struct StartArgs {
    pub route: String,
    pub env: String,
    pub canary: String,
    pub plan: Option<String>,
    pub policy: Option<PathBuf>,
    pub pins: Vec<String>,
    pub cohort_units: Option<PathBuf>,
    pub id: Option<String>,
}

fn w(e: std::io::Error) -> Error {
    Error::runtime(format!("cannot write output: {e}"))
}

pub fn start(reg: &Registry, a: StartArgs, meta: &WriteMeta) -> Result<i32> {
    check_name("route", &a.route)?;
    check_name("env", &a.env)?;
    check_name("canary", &a.canary)?;
    for p in &a.pins {
        check_name("--pin attribute", p)?;
    }
    let policy = match &a.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::io("cannot read policy", path, e)
                    .with_hint("see `promptgate judge --print-default-policy`")
            })?;
            Policy::from_toml(&text).map_err(|e| {
                Error::usage(format!("{}: {e}", path.display()))
                    .with_hint("see `promptgate judge --print-default-policy`")
            })?;
            Some(text)
        }
        None => None,
    };
    let cohort = match &a.cohort_units {
        Some(path) => Some(read_cohort(path)?),
        None => None,
    };
    let plan = match &a.plan {
        Some(p) => rollout::parse_plan(p, cohort.is_some())?,
        None => rollout::DEFAULT_PLAN.to_vec(),
    };
    let spec = StartSpec {
        route: a.route.clone(),
        env: a.env.clone(),
        canary: a.canary.clone(),
        plan,
        policy,
        pins: a.pins.clone(),
        cohort,
        id: a.id.clone(),
    };
    let ro = reg.update(&meta.actor, meta.why.as_deref(), |s, st| {
        let (ro, c) = rollout::start(s, spec, st)?;
        Ok((ro, vec![c]))
    })?;
    let mut out = super::stdout();
    writeln!(
        out,
        "started rollout {} on {} (env {}): {} over baseline {}\n  plan: {}\n  now: {}\n  next, once traffic has arrived: promptgate rollout step --route {} --env {}",
        ro.id,
        a.route,
        a.env,
        ro.canary,
        ro.baseline,
        ro.steps
            .iter()
            .map(|s| s.label())
            .collect::<Vec<_>>()
            .join(" -> "),
        step_label(&ro),
        a.route,
        a.env
    )
    .map_err(w)?;
    super::flush(&mut out)?;
    Ok(0)
}

/// One unit id per line; blank lines and `#` comments are skipped.
fn read_cohort(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io("cannot read --cohort-units", path, e))?;
    let mut units = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let u = line.trim();
        if u.is_empty() || u.starts_with('#') {
            continue;
        }
        if u.chars().any(char::is_control) {
            return Err(Error::usage(format!(
                "{} line {}: unit id contains a control character",
                path.display(),
                i + 1
            )));
        }
        units.push(u.to_string());
    }
    if units.is_empty() {
        return Err(
            Error::usage(format!("--cohort-units: {} names no unit", path.display()))
                .with_hint("one unit id per line"),
        );
    }
    Ok(units)
}

fn step_label(r: &Rollout) -> String {
    format!(
        "step {}/{} ({}) since {}",
        r.step + 1,
        r.steps.len(),
        r.current_step().label(),
        r.step_started_at
    )
}

/// Runs the judge on the current step and acts on its verdict; returns the judge's exit code
/// (every error is 2).
pub async fn step(
    lake: &Lake,
    reg: &Registry,
    route: &str,
    env: &str,
    format: VerdictFormat,
    meta: &WriteMeta,
) -> i32 {
    match run_step(lake, reg, route, env, format, meta).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

#[derive(Serialize)]
struct StepReport<'a> {
    rollout: &'a Rollout,
    action: &'a StepAction,
    summary: String,
    arms: &'a [ArmEvents],
    registry_mismatch: &'a [String],
    exit_code: i32,
    judge: serde_json::Value,
}

/// What one `rollout step` found and did.
pub(crate) struct StepOutcome {
    /// The rollout as it was judged, and as it is after the action.
    pub before: Rollout,
    pub after: Rollout,
    pub verdict: crate::judge::Verdict,
    /// The decision acted on: the judge's, or invalid when events do not match the registry.
    pub decided: StepVerdict,
    pub action: StepAction,
    pub arms: Vec<ArmEvents>,
    pub mismatch: Vec<String>,
    /// What else the step did (e.g. lifted a kill switch on completion).
    pub notes: Vec<String>,
}

/// What the judge says about one step of a rollout, with the events of its arms; read-only.
pub(crate) struct StepAssessment {
    pub verdict: crate::judge::Verdict,
    pub arms: Vec<ArmEvents>,
    /// Arms whose events carry a prompt_sha other than the registry's, in words.
    pub mismatch: Vec<String>,
}

impl StepAssessment {
    /// The decision to act on, and why: the judge's, or invalid when the events do not match
    /// the registry.
    pub(crate) fn decision(&self) -> (Decision, String) {
        if self.mismatch.is_empty() {
            (self.verdict.verdict, self.verdict.reason.clone())
        } else {
            (
                Decision::Invalid,
                format!(
                    "events do not match the registry: {}",
                    self.mismatch.join("; ")
                ),
            )
        }
    }
}

/// The rollout's stored policy, or the default one.
pub(crate) fn rollout_policy(r: &Rollout) -> Result<Policy> {
    match &r.policy {
        Some(text) => Policy::from_toml(text)
            .map_err(|e| Error::input(format!("rollout {}'s stored policy: {e}", r.id))),
        None => Ok(Policy::default()),
    }
}

/// The judge's arguments for step `step` of rollout `r` on `route`: its arms, env and pins,
/// the step's share (for the sample-ratio check), and events from `since_us` (the step's
/// start) to `until_us` (none: now).
pub(crate) fn step_judge_args(
    r: &Rollout,
    route: &str,
    step: usize,
    since_us: i64,
    until_us: Option<i64>,
) -> JudgeArgs {
    JudgeArgs {
        as_of: None,
        route: route.to_string(),
        baseline: r.baseline.clone(),
        canary: r.canary.clone(),
        env: Some(r.env.clone()),
        policy: None,
        since_us: Some(since_us),
        until_us,
        expected_share: r.steps[step.min(r.steps.len() - 1)].expected_share(),
        // The cohort stays on the canary at every share (see `Rollout::in_cohort`).
        srm_exclude: r.cohort.clone(),
        pins: r.pins.clone(),
        format: VerdictFormat::Json,
    }
}

/// Arms whose events carry a prompt_sha that is not (a prefix of) the registry's SHA-256 of
/// their version, in words. Events without a prompt_sha are not counted here.
pub(crate) fn registry_mismatch(
    arms: &[ArmEvents],
    versions: &std::collections::BTreeMap<String, crate::registry::state::PromptVersion>,
) -> Vec<String> {
    arms.iter()
        .filter_map(|a| {
            let sha = a.prompt_sha.as_deref()?;
            let registered = &versions.get(&a.version)?.sha256;
            (!sha_matches(registered, sha)).then(|| {
                format!(
                    "{} events of {} carry prompt_sha {sha:?}, not the registry's {}",
                    a.events,
                    a.version,
                    &registered[..12]
                )
            })
        })
        .collect()
}

/// Judges step `step` of rollout `r` (of `route`, as registered in `state`) over events from
/// `since_us` to `until_us`, and checks its arms' prompt_sha against the registry. Changes
/// nothing: `rollout step` acts on the result, `checklist` reports it.
pub(crate) async fn assess_step(
    lake: &Lake,
    state: &crate::registry::State,
    route: &str,
    r: &Rollout,
    step: usize,
    since_us: i64,
    until_us: Option<i64>,
) -> Result<StepAssessment> {
    let versions = &state.route(route)?.versions;
    let policy = rollout_policy(r)?;
    let args = step_judge_args(r, route, step, since_us, until_us);
    let ctx = query::judge_session(lake).await?;
    let verdict = evaluate(&ctx, &args, &policy).await?;
    // Events must carry the registry's prompt for their version (a prefix of its SHA-256):
    // an arm that ran some other text cannot vouch for the registered version.
    let arms = query::rollout_arms(&ctx, route, &r.env, &r.baseline, &r.canary, since_us).await?;
    let mismatch = registry_mismatch(&arms, versions);
    Ok(StepAssessment {
        verdict,
        arms,
        mismatch,
    })
}

/// Judges the current step of the active rollout on `route`/`env` and acts on the verdict.
pub(crate) async fn judge_step(
    lake: &Lake,
    reg: &Registry,
    route: &str,
    env: &str,
    meta: &WriteMeta,
) -> Result<StepOutcome> {
    let state = reg.load()?;
    let r = state
        .route(route)?
        .active_rollout(env)
        .ok_or_else(|| {
            Error::input(format!(
                "route {route:?} has no active rollout in env {env:?}"
            ))
            .with_hint("start one: `promptgate rollout start --route R --env E --canary V`")
        })?
        .clone();
    let current = r.current_step();
    let assessment = assess_step(lake, &state, route, &r, r.step, r.step_started_us, None).await?;
    let (decision, reason) = assessment.decision();
    let exit_code = decision.exit_code();
    let StepAssessment {
        verdict,
        arms,
        mismatch,
    } = assessment;
    let decided = StepVerdict {
        verdict: decision.as_str().to_string(),
        exit_code,
        reason,
        n_baseline: verdict.n_baseline,
        n_canary: verdict.n_canary,
        step: r.step,
        share: current.label(),
        at: format_us(crate::registry::now_us()),
    };
    let sv = decided.clone();
    let (action, after, notes) = reg.update(&meta.actor, meta.why.as_deref(), |s, st| {
        let (a, ro, c) = rollout::apply_verdict(s, route, env, &r.id, r.step, sv, st)?;
        Ok(((a, ro, c.notes.clone()), vec![c]))
    })?;
    Ok(StepOutcome {
        before: r,
        after,
        verdict,
        decided,
        action,
        arms,
        mismatch,
        notes,
    })
}

async fn run_step(
    lake: &Lake,
    reg: &Registry,
    route: &str,
    env: &str,
    format: VerdictFormat,
    meta: &WriteMeta,
) -> Result<i32> {
    let o = judge_step(lake, reg, route, env, meta).await?;
    let exit_code = o.action.exit_code(o.decided.exit_code);
    let mut summary = o.action.describe(&o.after);
    for n in &o.notes {
        summary.push_str(&format!("; {n}"));
    }
    let subject = Subject {
        route,
        baseline: &o.before.baseline,
        canary: &o.before.canary,
        env: Some(env),
    };
    let mut out = super::stdout();
    match format {
        VerdictFormat::Json => {
            let mut buf = Vec::new();
            report::write_verdict(&o.verdict, &subject, VerdictFormat::Json, &mut buf)?;
            let judge: serde_json::Value =
                serde_json::from_slice(&buf).map_err(|e| Error::runtime(e.to_string()))?;
            let doc = StepReport {
                rollout: &o.after,
                action: &o.action,
                summary,
                arms: &o.arms,
                registry_mismatch: &o.mismatch,
                exit_code,
                judge,
            };
            serde_json::to_writer_pretty(&mut out, &doc)
                .map_err(|e| Error::runtime(e.to_string()))?;
            writeln!(out).map_err(w)?;
        }
        _ => {
            writeln!(
                out,
                "rollout {} on {route} (env {env}): judging {}",
                o.before.id,
                step_label(&o.before)
            )
            .map_err(w)?;
            for a in &o.arms {
                writeln!(
                    out,
                    "  {}: {} events, {} units, prompt_sha {}",
                    a.version,
                    a.events,
                    a.units,
                    a.prompt_sha.as_deref().unwrap_or("(none)")
                )
                .map_err(w)?;
            }
            report::write_verdict(&o.verdict, &subject, format, &mut out)?;
            for m in &o.mismatch {
                writeln!(out, "INVALID: {m}").map_err(w)?;
            }
            writeln!(out, "\n{summary}").map_err(w)?;
            if o.after.is_active() {
                writeln!(
                    out,
                    "next: promptgate rollout step --route {route} --env {env} (once the new step has traffic)"
                )
                .map_err(w)?;
            }
        }
    }
    super::flush(&mut out)?;
    Ok(exit_code)
}

#[derive(Serialize)]
struct StatusRow {
    route: String,
    env: String,
    rollout: String,
    status: String,
    baseline: String,
    canary: String,
    step: usize,
    steps: usize,
    share: String,
    since: String,
    last_verdict: Option<StepVerdict>,
    /// Events and distinct units per arm since the step began (null without a lake).
    events_baseline: Option<u64>,
    events_canary: Option<u64>,
    units_baseline: Option<u64>,
    units_canary: Option<u64>,
    next: String,
}

/// Active rollouts (of `route`, when given), with each route's latest finished one when it has
/// no active one.
pub async fn status(
    lake: &Lake,
    reg: &Registry,
    route: Option<&str>,
    format: ListFormat,
) -> Result<i32> {
    let state = reg.load()?;
    if let Some(r) = route {
        state.route(r)?;
    }
    let ctx = match lake.require_existing() {
        Ok(()) => Some(query::lake_session(lake).await?),
        Err(_) => None,
    };
    let mut rows = Vec::new();
    for (name, rs) in &state.routes {
        if route.is_some_and(|r| r != name) {
            continue;
        }
        let mut shown: Vec<&Rollout> = rs.rollouts.iter().filter(|r| r.is_active()).collect();
        if shown.is_empty()
            && let Some(last) = rs.rollouts.last()
        {
            shown.push(last);
        }
        for ro in shown {
            let arms = match (&ctx, ro.is_active()) {
                (Some(ctx), true) => Some(
                    query::rollout_arms(
                        ctx,
                        name,
                        &ro.env,
                        &ro.baseline,
                        &ro.canary,
                        ro.step_started_us,
                    )
                    .await?,
                ),
                _ => None,
            };
            let sum = |v: &str, units: bool| {
                arms.as_ref().map(|a| {
                    a.iter()
                        .filter(|x| x.version == v)
                        .map(|x| if units { x.units } else { x.events })
                        .sum::<u64>()
                })
            };
            let next = if ro.is_active() {
                format!("promptgate rollout step --route {name} --env {}", ro.env)
            } else {
                format!(
                    "(none: {}) start another with promptgate rollout start --route {name} --env {} --canary V",
                    ro.status.as_str(),
                    ro.env
                )
            };
            rows.push(StatusRow {
                route: name.clone(),
                env: ro.env.clone(),
                rollout: ro.id.clone(),
                status: ro.status.as_str().to_string(),
                baseline: ro.baseline.clone(),
                canary: ro.canary.clone(),
                step: ro.step + 1,
                steps: ro.steps.len(),
                share: ro.current_step().label(),
                since: ro.step_started_at.clone(),
                last_verdict: ro.last_verdict.clone(),
                events_baseline: sum(&ro.baseline, false),
                events_canary: sum(&ro.canary, false),
                units_baseline: sum(&ro.baseline, true),
                units_canary: sum(&ro.canary, true),
                next,
            });
        }
    }
    let mut out = super::stdout();
    match format {
        ListFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &rows)
                .map_err(|e| Error::runtime(e.to_string()))?;
            writeln!(out).map_err(w)?;
        }
        ListFormat::Table if rows.is_empty() => {
            writeln!(
                out,
                "no rollouts\n  start one: promptgate rollout start --route R --env E --canary V"
            )
            .map_err(w)?;
        }
        ListFormat::Table => {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header([
                    "route",
                    "env",
                    "rollout",
                    "status",
                    "canary / baseline",
                    "step",
                    "since",
                    "last verdict",
                    "events b / c",
                    "units b / c",
                    "next",
                ]);
            let n = |x: Option<u64>| x.map_or("-".to_string(), |x| x.to_string());
            for r in &rows {
                t.add_row([
                    r.route.clone(),
                    r.env.clone(),
                    r.rollout.clone(),
                    r.status.clone(),
                    format!("{} / {}", r.canary, r.baseline),
                    format!("{}/{} ({})", r.step, r.steps, r.share),
                    r.since.clone(),
                    r.last_verdict
                        .as_ref()
                        .map(|v| format!("{} at {}: {}", v.verdict, v.at, v.reason))
                        .unwrap_or_else(|| "-".into()),
                    format!("{} / {}", n(r.events_baseline), n(r.events_canary)),
                    format!("{} / {}", n(r.units_baseline), n(r.units_canary)),
                    r.next.clone(),
                ]);
            }
            writeln!(out, "{t}").map_err(w)?;
        }
    }
    super::flush(&mut out)?;
    Ok(0)
}
