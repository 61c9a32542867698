//! Staged rollouts: a plan of canary steps, each gated by the judge.
//!
//! Registry state in, judge verdict in, new state out: [`start`] adds a rollout to a
//! [`State`], [`apply_verdict`] moves it by a verdict (promote → next step, or the canary
//! becomes the env's default after the last step before 100%; abort → back on the baseline;
//! continue or invalid → hold). Neither reads the lake nor runs the judge; `promptgate rollout
//! step` does that and hands the verdict over.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::registry::state::{Change, DefaultServed, Stamp, State, check_name, format_us};

/// The default plan, in percent of units.
pub const DEFAULT_PLAN: [f64; 5] = [1.0, 5.0, 25.0, 50.0, 100.0];

/// One step of a plan: a share of units (by bucket), or a fixed cohort of units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Cohort,
    Percent(f64),
}

impl Step {
    /// Share of buckets (out of 10,000) in the canary; 0 for a cohort step.
    pub fn share_bps(self) -> u32 {
        match self {
            Step::Cohort => 0,
            Step::Percent(p) => (p * 100.0).round() as u32,
        }
    }
    /// The share as a fraction, for the judge's sample-ratio check; none for a cohort.
    pub fn expected_share(self) -> Option<f64> {
        match self {
            Step::Cohort => None,
            Step::Percent(p) => Some(p / 100.0),
        }
    }
    pub fn label(self) -> String {
        match self {
            Step::Cohort => "cohort".to_string(),
            Step::Percent(p) => format!("{p}%"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    Active,
    Completed,
    Aborted,
    Killed,
}

impl RolloutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStatus::Active => "active",
            RolloutStatus::Completed => "completed",
            RolloutStatus::Aborted => "aborted",
            RolloutStatus::Killed => "killed",
        }
    }
}

/// The judge's verdict on one step, as the rollout and the audit log keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepVerdict {
    /// `promote`, `abort`, `continue` or `invalid`.
    pub verdict: String,
    pub exit_code: i32,
    /// The judge's reason (it names the rule or check that decided).
    pub reason: String,
    pub n_baseline: u64,
    pub n_canary: u64,
    /// The step judged (0-based) and its share.
    pub step: usize,
    pub share: String,
    pub at: String,
}

/// A rollout of `canary` over `baseline` on one route and env.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Unique per route; part of every unit's bucket.
    pub id: String,
    pub env: String,
    pub baseline: String,
    pub canary: String,
    pub steps: Vec<Step>,
    /// Current step (0-based).
    pub step: usize,
    pub status: RolloutStatus,
    pub started_at: String,
    pub started_us: i64,
    /// When the current step began: the judge looks at events from here on.
    pub step_started_at: String,
    pub step_started_us: i64,
    /// Registry revision that started it (a kill switch set later ends it; one set earlier
    /// does not stop it).
    pub started_revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// The judge policy (TOML text, kept so later steps judge alike); none = the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<String>,
    /// Units of the cohort step, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cohort: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<StepVerdict>,
}

impl Rollout {
    /// What is wrong with a rollout read from a state file, if anything: every step, index and
    /// share the code relies on, so no hand-edited state reaches an index or arithmetic panic.
    pub fn problem(&self) -> Option<String> {
        if self.steps.is_empty() {
            return Some("has no steps".into());
        }
        if self.step >= self.steps.len() {
            return Some(format!(
                "is at step {} of a plan of {} steps",
                self.step + 1,
                self.steps.len()
            ));
        }
        if !self.cohort.is_sorted_by(|a, b| a < b) {
            return Some("has cohort units that are not sorted and distinct".into());
        }
        for s in &self.steps {
            if let Step::Percent(p) = s
                && !(p.is_finite() && *p > 0.0 && *p <= 100.0)
            {
                return Some(format!("has a step of {p}% (steps are shares in (0, 100])"));
            }
        }
        None
    }

    pub fn is_active(&self) -> bool {
        self.status == RolloutStatus::Active
    }
    /// Whether `unit` is in the cohort (kept sorted). Cohort units are on the canary from the
    /// cohort step on, at every later share too, so no unit ever leaves the canary.
    pub fn in_cohort(&self, unit: &str) -> bool {
        self.cohort
            .binary_search_by(|u| u.as_str().cmp(unit))
            .is_ok()
    }
    pub fn current_step(&self) -> Step {
        self.steps[self.step.min(self.steps.len() - 1)]
    }
    pub(crate) fn end(&mut self, status: RolloutStatus, at_us: i64) {
        self.status = status;
        self.ended_at = Some(format_us(at_us));
    }
    fn step_label(&self, i: usize) -> String {
        format!(
            "step {}/{} ({})",
            i + 1,
            self.steps.len(),
            self.steps[i].label()
        )
    }
}

/// Parses a plan such as `1,5,25,50,100` (percent; a trailing `%` is fine). It must rise
/// strictly to 100, in steps of at least 0.01%; its first step must be 1-5% unless a cohort
/// goes first (`cohort_first`).
pub fn parse_plan(text: &str, cohort_first: bool) -> Result<Vec<f64>> {
    let hint = "a plan rises to 100 and starts at 1-5%, e.g. --plan 1,5,25,50,100";
    let mut plan = Vec::new();
    for part in text.split(',') {
        let p = part.trim().trim_end_matches('%');
        let v: f64 = p.parse().map_err(|_| {
            Error::usage(format!("--plan: {part:?} is not a percentage")).with_hint(hint)
        })?;
        if !(v.is_finite() && v > 0.0 && v <= 100.0) {
            return Err(
                Error::usage(format!("--plan: {part:?} is not a percentage in (0, 100]"))
                    .with_hint(hint),
            );
        }
        if ((v * 100.0).round() - v * 100.0).abs() > 1e-6 {
            return Err(Error::usage(format!(
                "--plan: {part:?} is finer than 0.01% (units are hashed into 10,000 buckets)"
            ))
            .with_hint(hint));
        }
        if let Some(&last) = plan.last()
            && v <= last
        {
            return Err(
                Error::usage(format!("--plan: {text:?} does not rise ({v} after {last})"))
                    .with_hint(hint),
            );
        }
        plan.push(v);
    }
    if plan.last() != Some(&100.0) {
        return Err(Error::usage(format!("--plan: {text:?} does not end at 100")).with_hint(hint));
    }
    if !cohort_first && !(1.0..=5.0).contains(&plan[0]) {
        return Err(Error::usage(format!(
            "--plan: the first step is {}%, it must be 1-5% (or a cohort, with --cohort-units)",
            plan[0]
        ))
        .with_hint(hint));
    }
    if plan.len() < 2 && !cohort_first {
        return Err(
            Error::usage(format!("--plan: {text:?} has no canary step before 100%"))
                .with_hint(hint),
        );
    }
    Ok(plan)
}

/// What `rollout start` asks for.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub route: String,
    pub env: String,
    pub canary: String,
    /// Percentages, from [`parse_plan`].
    pub plan: Vec<f64>,
    pub policy: Option<String>,
    pub pins: Vec<String>,
    /// Units of a first cohort step, if any.
    pub cohort: Option<Vec<String>>,
    /// The rollout's id; none draws `r<N>-<8 random hex>`.
    pub id: Option<String>,
}

/// Starts a rollout: the baseline is what the env resolves to now (its kill switch's
/// last-known-good, else its default). Refuses, changing nothing: an unregistered canary, a
/// second active rollout on the route and env, an env override (it would shadow the rollout),
/// a canary that is already the baseline.
pub fn start(state: &mut State, spec: StartSpec, stamp: &Stamp) -> Result<(Rollout, Change)> {
    check_name("env", &spec.env)?;
    let route = state.route_mut(&spec.route)?;
    route.require_version(&spec.route, &spec.canary)?;
    if let Some(r) = route.active_rollout(&spec.env) {
        return Err(Error::input(format!(
            "route {:?} already has an active rollout in env {:?}: {} of {:?} at {}",
            spec.route,
            spec.env,
            r.id,
            r.canary,
            r.step_label(r.step)
        ))
        .with_hint("let it finish, or end it with `promptgate registry kill`"));
    }
    if let Some(o) = route
        .overrides
        .iter()
        .find(|o| o.env == spec.env && o.tier.is_none())
    {
        return Err(Error::input(format!(
            "route {:?} has an env override to {:?} in env {:?}, which takes precedence over any rollout",
            spec.route, o.version, spec.env
        ))
        .with_hint("clear it first: `promptgate registry override --route R --env E --clear`"));
    }
    let baseline = match route.kill_for(&spec.env) {
        Some(k) => k.version.clone(),
        None => route
            .default_for(&spec.env)
            .ok_or_else(|| {
                Error::input(format!(
                    "route {:?} has no default version for env {:?}, so there is no baseline",
                    spec.route, spec.env
                ))
                .with_hint("set one: `promptgate registry set-default --route R --version V`")
            })?
            .to_string(),
    };
    if baseline == spec.canary {
        return Err(Error::input(format!(
            "{:?} is already what route {:?} serves in env {:?}",
            spec.canary, spec.route, spec.env
        ))
        .with_hint("roll out a different version"));
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut cohort = Vec::new();
    if let Some(mut units) = spec.cohort {
        units.sort();
        units.dedup();
        if units.is_empty() {
            return Err(Error::usage("--cohort-units: the file names no unit")
                .with_hint("one unit id per line"));
        }
        cohort = units;
        steps.push(Step::Cohort);
    }
    steps.extend(spec.plan.iter().map(|&p| Step::Percent(p)));
    let id = match spec.id {
        Some(id) => {
            check_name("--id", &id)?;
            if route.rollouts.iter().any(|r| r.id == id) {
                return Err(Error::input(format!(
                    "route {:?} already had a rollout with id {id:?}",
                    spec.route
                ))
                .with_hint("rollout ids are unique per route: pick another, or leave --id out"));
            }
            id
        }
        None => format!(
            "r{}-{}",
            route.rollouts.len() + 1,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
    };
    let rollout = Rollout {
        id,
        env: spec.env.clone(),
        baseline: baseline.clone(),
        canary: spec.canary.clone(),
        steps,
        step: 0,
        status: RolloutStatus::Active,
        started_at: format_us(stamp.at_us),
        started_us: stamp.at_us,
        step_started_at: format_us(stamp.at_us),
        step_started_us: stamp.at_us,
        started_revision: stamp.revision,
        ended_at: None,
        policy: spec.policy,
        pins: spec.pins,
        cohort,
        last_verdict: None,
    };
    route.rollouts.push(rollout.clone());
    let mut c = Change::new("rollout-start", &spec.route);
    c.env = Some(spec.env);
    c.rollout = Some(rollout.id.clone());
    c.before = Some(baseline);
    c.after = Some(format!("{} at {}", rollout.canary, rollout.step_label(0)));
    Ok((rollout, c))
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum StepAction {
    /// Promoted to the next step.
    Advanced { from: String, to: String },
    /// The last step before 100% promoted: the canary is the env's default.
    Completed { default: String },
    /// Aborted: the canary's share is 0, traffic is back on the baseline.
    Aborted { baseline: String },
    /// Continue or invalid: the step holds.
    Held { at: String },
    /// The rollout moved (another step, a kill) while the judge ran: nothing done.
    Stale { now: String },
}

impl StepAction {
    /// Exit code of `rollout step`: the verdict's, for what was done on it, except when nothing
    /// was done because the rollout changed while the judge ran (3, as for a step that holds:
    /// running `step` again judges the rollout as it is now). A promote that was not applied is
    /// never 0.
    pub fn exit_code(&self, verdict_code: i32) -> i32 {
        match self {
            StepAction::Stale { .. } => 3,
            _ => verdict_code,
        }
    }

    pub fn describe(&self, r: &Rollout) -> String {
        match self {
            StepAction::Advanced { from, to } => {
                format!("promoted: rollout {} moved from {from} to {to}", r.id)
            }
            StepAction::Completed { default } => format!(
                "promoted: rollout {} completed; {default:?} is now the default of env {:?}",
                r.id, r.env
            ),
            StepAction::Aborted { baseline } => format!(
                "aborted: rollout {} ended, canary share 0, all traffic back on {baseline:?}",
                r.id
            ),
            StepAction::Held { at } => format!("held: rollout {} stays at {at}", r.id),
            StepAction::Stale { now } => format!(
                "nothing done: rollout {} changed while the judge ran (now {now}); run step again",
                r.id
            ),
        }
    }
}

/// Acts on the judge's verdict for step `judged_step` of rollout `id` (on `route`/`env`).
/// When the rollout is no longer at that step (another `step` got there first, or a kill ended
/// it), nothing changes but the audit log, so two steps at once never advance twice.
pub fn apply_verdict(
    state: &mut State,
    route_name: &str,
    env: &str,
    id: &str,
    judged_step: usize,
    verdict: StepVerdict,
    stamp: &Stamp,
) -> Result<(StepAction, Rollout, Change)> {
    let route = state.route_mut(route_name)?;
    let Some(idx) = route.rollouts.iter().position(|r| r.id == id) else {
        return Err(Error::input(format!(
            "rollout {id} of route {route_name:?} is gone from the registry"
        )));
    };
    let mut c = Change::new("rollout-step", route_name);
    c.env = Some(env.to_string());
    c.rollout = Some(id.to_string());
    c.verdict = Some(verdict.clone());
    let r = &mut route.rollouts[idx];
    if !r.is_active() || r.step != judged_step {
        let now = if r.is_active() {
            r.step_label(r.step)
        } else {
            r.status.as_str().to_string()
        };
        c.before = Some(r.step_label(judged_step));
        c.after = Some(format!("not applied (rollout now {now})"));
        return Ok((StepAction::Stale { now }, r.clone(), c));
    }
    c.before = Some(r.step_label(r.step));
    r.last_verdict = Some(verdict.clone());
    let action = match verdict.verdict.as_str() {
        "promote" if r.step + 2 >= r.steps.len() => {
            r.step = r.steps.len() - 1;
            r.end(RolloutStatus::Completed, stamp.at_us);
            StepAction::Completed {
                default: r.canary.clone(),
            }
        }
        "promote" => {
            r.step += 1;
            r.step_started_us = stamp.at_us;
            r.step_started_at = format_us(stamp.at_us);
            StepAction::Advanced {
                from: r.step_label(r.step - 1),
                to: r.step_label(r.step),
            }
        }
        "abort" => {
            r.end(RolloutStatus::Aborted, stamp.at_us);
            StepAction::Aborted {
                baseline: r.baseline.clone(),
            }
        }
        _ => StepAction::Held {
            at: r.step_label(r.step),
        },
    };
    let rollout = r.clone();
    c.after = Some(match &action {
        StepAction::Advanced { to, .. } => to.clone(),
        StepAction::Completed { default } => format!("completed: {default} is the default"),
        StepAction::Aborted { baseline } => format!("aborted: traffic on {baseline}"),
        StepAction::Held { at } => format!("held at {at}"),
        StepAction::Stale { now } => now.clone(),
    });
    if let StepAction::Completed { default } = &action {
        route.env_defaults.insert(env.to_string(), default.clone());
        route.default_history.push(DefaultServed {
            env: Some(env.to_string()),
            version: default.clone(),
            revision: stamp.revision,
        });
        c.notes = route.lift_kills(Some(env));
    }
    Ok((action, rollout, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{ResolveRequest, ResolvedArm, resolve};

    fn stamp(rev: u64) -> Stamp {
        Stamp {
            revision: rev,
            at_us: 1_700_000_000_000_000 + rev as i64 * 1_000_000,
            actor: "t".into(),
            why: None,
        }
    }

    fn verdict(v: &str, step: usize) -> StepVerdict {
        StepVerdict {
            verdict: v.into(),
            exit_code: 0,
            reason: String::new(),
            n_baseline: 1000,
            n_canary: 50,
            step,
            share: String::new(),
            at: String::new(),
        }
    }

    fn state() -> State {
        let mut s = State::empty();
        for (i, v) in ["v1", "v2"].iter().enumerate() {
            s.add_version("r", v, &format!("{:064x}", i + 1), 1, &stamp(1))
                .unwrap();
        }
        s.set_default("r", None, "v1", &stamp(1)).unwrap();
        s
    }

    fn spec(plan: &[f64]) -> StartSpec {
        StartSpec {
            route: "r".into(),
            env: "prod".into(),
            canary: "v2".into(),
            plan: plan.to_vec(),
            policy: None,
            pins: vec![],
            cohort: None,
            id: None,
        }
    }

    #[test]
    fn plans_must_start_small_and_rise_to_100() {
        assert_eq!(
            parse_plan("1,5,25,50,100", false).unwrap(),
            DEFAULT_PLAN.to_vec()
        );
        assert_eq!(parse_plan("2%, 100%", false).unwrap(), vec![2.0, 100.0]);
        for bad in [
            "10,50,100",
            "1,5,5,100",
            "1,5,50",
            "1,x,100",
            "0,5,100",
            "1,5,101",
            "1.001,100",
            "100",
            "",
        ] {
            assert!(parse_plan(bad, false).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_plan("10,100", true).unwrap(), vec![10.0, 100.0]);
    }

    #[test]
    fn a_rollout_walks_its_plan_and_the_canary_becomes_default() {
        let mut s = state();
        let (ro, _) = start(&mut s, spec(&[1.0, 5.0, 100.0]), &stamp(2)).unwrap();
        assert!(start(&mut s, spec(&[1.0, 100.0]), &stamp(3)).is_err());
        let (a, _, _) = apply_verdict(
            &mut s,
            "r",
            "prod",
            &ro.id,
            0,
            verdict("continue", 0),
            &stamp(3),
        )
        .unwrap();
        assert!(matches!(a, StepAction::Held { .. }));
        let (a, r, _) = apply_verdict(
            &mut s,
            "r",
            "prod",
            &ro.id,
            0,
            verdict("promote", 0),
            &stamp(4),
        )
        .unwrap();
        assert!(matches!(a, StepAction::Advanced { .. }));
        assert_eq!(r.step_started_us, stamp(4).at_us);
        // A second step judged on step 0 arrives late: nothing moves.
        let (a, r, _) = apply_verdict(
            &mut s,
            "r",
            "prod",
            &ro.id,
            0,
            verdict("promote", 0),
            &stamp(5),
        )
        .unwrap();
        assert!(matches!(a, StepAction::Stale { .. }));
        // Nothing was done: never the promote's 0.
        assert_eq!(a.exit_code(0), 3);
        assert_eq!(r.step, 1);
        let (a, _, _) = apply_verdict(
            &mut s,
            "r",
            "prod",
            &ro.id,
            1,
            verdict("promote", 1),
            &stamp(6),
        )
        .unwrap();
        assert!(matches!(a, StepAction::Completed { .. }));
        let req = ResolveRequest {
            route: "r",
            env: "prod",
            tier: None,
            unit: "u1",
        };
        let res = resolve(&s, &req).unwrap();
        assert_eq!(
            (res.version.as_str(), res.arm),
            ("v2", ResolvedArm::Default)
        );
    }

    #[test]
    fn a_rollout_started_after_a_kill_runs_and_its_completion_lifts_the_kill() {
        let mut s = state();
        s.set_default("r", None, "v2", &stamp(2)).unwrap();
        s.kill("r", Some("prod"), &stamp(3)).unwrap();
        let req = |unit: &'static str| ResolveRequest {
            route: "r",
            env: "prod",
            tier: None,
            unit,
        };
        assert_eq!(resolve(&s, &req("u1")).unwrap().arm, ResolvedArm::Killed);
        // The baseline is the last-known-good; the canary gets its share despite the kill.
        let mut spec = spec(&[5.0, 100.0]);
        spec.canary = "v2".into();
        let (ro, _) = start(&mut s, spec, &stamp(4)).unwrap();
        assert_eq!(ro.baseline, "v1");
        let arms: Vec<ResolvedArm> = (0..400)
            .map(|u| {
                let unit = format!("u{u}");
                let r = ResolveRequest {
                    route: "r",
                    env: "prod",
                    tier: None,
                    unit: &unit,
                };
                resolve(&s, &r).unwrap().arm
            })
            .collect();
        assert!(arms.contains(&ResolvedArm::Canary));
        assert!(arms.contains(&ResolvedArm::Baseline));
        assert!(!arms.contains(&ResolvedArm::Killed));
        let (_, _, c) = apply_verdict(
            &mut s,
            "r",
            "prod",
            &ro.id,
            0,
            verdict("promote", 0),
            &stamp(5),
        )
        .unwrap();
        assert!(
            c.notes.iter().any(|n| n.contains("lifted the kill switch")),
            "{c:?}"
        );
        let r = resolve(&s, &req("u1")).unwrap();
        assert_eq!((r.arm, r.version.as_str()), (ResolvedArm::Default, "v2"));
    }

    #[test]
    fn abort_sends_everyone_back_to_the_baseline() {
        let mut s = state();
        let (ro, _) = start(&mut s, spec(&[5.0, 100.0]), &stamp(2)).unwrap();
        apply_verdict(
            &mut s,
            "r",
            "prod",
            &ro.id,
            0,
            verdict("abort", 0),
            &stamp(3),
        )
        .unwrap();
        for u in 0..2000 {
            let unit = format!("u{u}");
            let req = ResolveRequest {
                route: "r",
                env: "prod",
                tier: None,
                unit: &unit,
            };
            assert_eq!(resolve(&s, &req).unwrap().version, "v1");
        }
    }

    /// Whether each unit resolves to the canary of route `r` in prod.
    fn on_canary(s: &State, units: &[String]) -> Vec<bool> {
        units
            .iter()
            .map(|u| {
                let req = ResolveRequest {
                    route: "r",
                    env: "prod",
                    tier: None,
                    unit: u,
                };
                resolve(s, &req).unwrap().arm == ResolvedArm::Canary
            })
            .collect()
    }

    #[test]
    fn canary_share_is_sticky_and_matches_the_plan() {
        let mut s = state();
        let (ro, _) = start(&mut s, spec(&[1.0, 5.0, 25.0, 100.0]), &stamp(2)).unwrap();
        let units: Vec<String> = (0..100_000).map(|u| format!("user-{u}")).collect();
        let arms = |s: &State| on_canary(s, &units);
        let mut prev = arms(&s);
        for (step, share) in [(0usize, 0.01), (1, 0.05), (2, 0.25)] {
            let now = arms(&s);
            assert_eq!(now, arms(&s), "deterministic");
            let got = now.iter().filter(|&&c| c).count() as f64 / units.len() as f64;
            // 100,000 units: the binomial standard error is at most 0.0014.
            assert!((got - share).abs() < 0.006, "step {step}: share {got}");
            assert!(
                prev.iter().zip(&now).all(|(p, n)| !p || *n),
                "a canary unit left the canary as the share grew"
            );
            prev = now;
            apply_verdict(
                &mut s,
                "r",
                "prod",
                &ro.id,
                step,
                verdict("promote", step),
                &stamp(3 + step as u64),
            )
            .unwrap();
        }
    }

    #[test]
    fn a_cohort_stays_on_the_canary_through_every_later_step() {
        let mut s = state();
        let units: Vec<String> = (0..100_000).map(|u| format!("user-{u}")).collect();
        // 300 cohort units spread over the population (every 333rd).
        let cohort: Vec<String> = units.iter().step_by(333).take(300).cloned().collect();
        let mut sp = spec(&parse_plan("1,5,25,50,100", true).unwrap());
        sp.cohort = Some(cohort.clone());
        let (ro, _) = start(&mut s, sp, &stamp(2)).unwrap();
        assert_eq!(ro.steps[0], Step::Cohort);
        let canary = |s: &State| on_canary(s, &units);
        let in_cohort: Vec<bool> = units.iter().map(|u| ro.in_cohort(u)).collect();
        let mut prev = canary(&s);
        assert_eq!(prev, in_cohort, "the cohort step serves exactly the cohort");
        for (step, share) in [(1usize, 0.01), (2, 0.05), (3, 0.25), (4, 0.50)] {
            apply_verdict(
                &mut s,
                "r",
                "prod",
                &ro.id,
                step - 1,
                verdict("promote", step - 1),
                &stamp(2 + step as u64),
            )
            .unwrap();
            let now = canary(&s);
            assert!(
                prev.iter().zip(&now).all(|(p, n)| !p || *n),
                "step {step}: a canary unit left the canary"
            );
            // Outside the cohort, the step's share by bucket.
            let (hits, n) = now
                .iter()
                .zip(&in_cohort)
                .filter(|(_, c)| !**c)
                .fold((0, 0), |(h, n), (x, _)| (h + usize::from(*x), n + 1));
            let got = hits as f64 / n as f64;
            assert!((got - share).abs() < 0.006, "step {step}: share {got}");
            prev = now;
        }
    }
}
