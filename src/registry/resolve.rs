//! Resolution: which prompt version a request gets. A pure function of the registry's
//! [`State`] and the request, so the CLI, the HTTP server and a Rust service embedding the
//! library cannot disagree.
//!
//! Precedence, first match wins:
//!
//! 1. **kill switch** of the env (or of every env) → its last-known-good version (`killed`);
//!    a rollout started *after* the kill takes part again (its arms), overrides do not;
//! 2. **tier override** (env + tier) → `override`;
//! 3. **env override** (env, any tier) → `override`;
//! 4. **active rollout** of the env → `canary` when the unit's bucket is below the step's share
//!    (or the unit is in the rollout's cohort: from its cohort step on, at every later share
//!    too), else `baseline`;
//! 5. **default**: the env's default, else the route's → `default`.
//!
//! The canary assignment is sticky and deterministic: see [`bucket`].

use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use super::state::{Kill, RouteState, State, check_name, unknown_route};
use crate::error::{Error, Result};
use crate::rollout::{Rollout, Step};

/// Buckets a unit is hashed into; a share of `p`% is the first `p * 100` of them.
pub const BUCKETS: u32 = 10_000;

/// The tier of a request that names none (the same default as an event's `tier`).
pub const DEFAULT_TIER: &str = "default";

/// Where a unit falls, in `0..10_000`, for a rollout: XXH3-64 of
/// `"promptgate-bucket-v1\0" ‖ len(route) as u64 LE ‖ route ‖ len(rollout_id) as u64 LE ‖
/// rollout_id ‖ unit` (UTF-8 bytes), modulo 10,000. It depends on nothing else, so a unit
/// keeps its bucket across calls, processes and machines; a unit is in the canary when its
/// bucket is below the step's share in basis points, so it stays there as the share grows. A
/// new rollout (new id) draws new buckets, so the same units are not always first.
///
/// ```
/// use promptgate::registry::bucket;
/// let b = bucket("support", "r0192", "user-42");
/// assert!(b < 10_000);
/// assert_eq!(b, bucket("support", "r0192", "user-42"));
/// ```
pub fn bucket(route: &str, rollout_id: &str, unit: &str) -> u32 {
    let mut h = Xxh3::new();
    h.update(b"promptgate-bucket-v1\0");
    h.update(&(route.len() as u64).to_le_bytes());
    h.update(route.as_bytes());
    h.update(&(rollout_id.len() as u64).to_le_bytes());
    h.update(rollout_id.as_bytes());
    h.update(unit.as_bytes());
    (h.digest() % u64::from(BUCKETS)) as u32
}

/// What a request asks: route, env, tier (default `"default"`) and the unit (user, session,
/// customer...) whose arm must stay the same from call to call.
#[derive(Debug, Clone, Copy)]
pub struct ResolveRequest<'a> {
    pub route: &'a str,
    pub env: &'a str,
    pub tier: Option<&'a str>,
    pub unit: &'a str,
}

/// The longest unit id a request may carry, in bytes.
pub const MAX_UNIT_BYTES: usize = 1000;

impl ResolveRequest<'_> {
    /// Refuses names the registry could never hold (see [`check_name`]) and an empty, overlong
    /// or control-character unit: the one check of `promptgate resolve` and `GET /v1/resolve`.
    pub fn check(&self) -> Result<()> {
        check_name("route", self.route)?;
        check_name("env", self.env)?;
        if let Some(t) = self.tier {
            check_name("tier", t)?;
        }
        let problem = if self.unit.is_empty() {
            Some("is empty".to_string())
        } else if self.unit.len() > MAX_UNIT_BYTES {
            Some(format!("is longer than {MAX_UNIT_BYTES} bytes"))
        } else if self.unit.chars().any(char::is_control) {
            Some("contains a control character".to_string())
        } else {
            None
        };
        match problem {
            Some(p) => Err(Error::usage(format!("unit {:?} {p}", self.unit))
                .with_hint("pass the id of the user, session or customer the request is for")),
            None => Ok(()),
        }
    }
}

/// Which rule served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedArm {
    Default,
    Override,
    Baseline,
    Canary,
    Killed,
}

impl ResolvedArm {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedArm::Default => "default",
            ResolvedArm::Override => "override",
            ResolvedArm::Baseline => "baseline",
            ResolvedArm::Canary => "canary",
            ResolvedArm::Killed => "killed",
        }
    }
}

/// The answer: the version to use, its text's SHA-256 (log it, or a prefix of at least 8
/// characters, as the event's `prompt_sha`), the arm and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolution {
    pub route: String,
    pub env: String,
    pub tier: String,
    pub unit: String,
    pub version: String,
    pub prompt_sha: String,
    pub arm: ResolvedArm,
    pub reason: String,
    /// The active rollout that decided (arms `baseline` and `canary`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
    /// The unit's bucket in that rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<u32>,
}

/// Resolves `req` against `state`. Errors: an unknown route, or a route with no default for the
/// env (both name what is missing and how to fix it).
///
/// ```
/// use promptgate::registry::{ResolveRequest, State, resolve};
/// let state: State = serde_json::from_str(r#"{"format":1,"revision":2,"audit_bytes":0,
///   "routes":{"support":{"versions":{"v1":{"sha256":"aa","bytes":1,"added_at":"","added_by":""}},
///   "default":"v1"}}}"#).unwrap();
/// let r = resolve(&state, &ResolveRequest { route: "support", env: "prod", tier: None, unit: "u1" }).unwrap();
/// assert_eq!((r.version.as_str(), r.arm.as_str()), ("v1", "default"));
/// ```
pub fn resolve(state: &State, req: &ResolveRequest<'_>) -> Result<Resolution> {
    let route = state
        .routes
        .get(req.route)
        .ok_or_else(|| unknown_route(req.route))?;
    let tier = req.tier.unwrap_or(DEFAULT_TIER);
    let rollout = route.active_rollout(req.env);
    let kill = route.kill_for(req.env);
    let (version, arm, reason, rollout_id, bucket) = match (kill, rollout) {
        (Some(k), r) if r.is_none_or(|r| r.started_revision < k.revision) => (
            k.version.as_str(),
            ResolvedArm::Killed,
            kill_reason(k),
            None,
            None,
        ),
        (k, _) => match overridden(route, req.env, tier, k.is_some()) {
            Some(found) => found,
            None => match rollout {
                Some(r) => assign(req, r),
                None => default(route, req)?,
            },
        },
    };
    let sha = &route
        .versions
        .get(version)
        .ok_or_else(|| {
            Error::runtime(format!(
                "registry state names version {version:?} of route {:?}, which is not registered",
                req.route
            ))
            .with_hint(
                "the state file was edited by hand; restore it from the registry's git history",
            )
        })?
        .sha256;
    Ok(Resolution {
        route: req.route.to_string(),
        env: req.env.to_string(),
        tier: tier.to_string(),
        unit: req.unit.to_string(),
        version: version.to_string(),
        prompt_sha: sha.clone(),
        arm,
        reason,
        rollout_id,
        bucket,
    })
}

type Found<'s> = (&'s str, ResolvedArm, String, Option<String>, Option<u32>);

fn kill_reason(k: &Kill) -> String {
    format!(
        "kill switch since {} ({}): serving last-known-good {}",
        k.at, k.why, k.version
    )
}

fn overridden<'s>(route: &'s RouteState, env: &str, tier: &str, killed: bool) -> Option<Found<'s>> {
    if killed {
        // A kill suspends the overrides: all traffic on the last-known-good or the rollout.
        return None;
    }
    let by_tier = route
        .overrides
        .iter()
        .find(|o| o.env == env && o.tier.as_deref() == Some(tier));
    if let Some(o) = by_tier {
        return Some((
            &o.version,
            ResolvedArm::Override,
            format!("tier override (env {env}, tier {tier})"),
            None,
            None,
        ));
    }
    let by_env = route
        .overrides
        .iter()
        .find(|o| o.env == env && o.tier.is_none())?;
    Some((
        &by_env.version,
        ResolvedArm::Override,
        format!("env override (env {env})"),
        None,
        None,
    ))
}

fn assign<'s>(req: &ResolveRequest<'_>, r: &'s Rollout) -> Found<'s> {
    let step = r.current_step();
    let b = bucket(req.route, &r.id, req.unit);
    let (in_canary, why) = match step {
        Step::Cohort => {
            let hit = r.in_cohort(req.unit);
            (
                hit,
                if hit {
                    "in the cohort"
                } else {
                    "not in the cohort"
                }
                .to_string(),
            )
        }
        // A cohort that went first stays on the canary: the canary set only grows.
        Step::Percent(_) if r.in_cohort(req.unit) => (true, "in the cohort".to_string()),
        Step::Percent(_) => {
            let share = step.share_bps();
            let hit = b < share;
            (
                hit,
                format!("bucket {b} {} {share}", if hit { "<" } else { ">=" }),
            )
        }
    };
    let (version, arm) = if in_canary {
        (r.canary.as_str(), ResolvedArm::Canary)
    } else {
        (r.baseline.as_str(), ResolvedArm::Baseline)
    };
    let reason = format!(
        "rollout {} step {}/{} ({}): {why}",
        r.id,
        r.step + 1,
        r.steps.len(),
        step.label()
    );
    (version, arm, reason, Some(r.id.clone()), Some(b))
}

fn default<'s>(route: &'s RouteState, req: &ResolveRequest<'_>) -> Result<Found<'s>> {
    if let Some(v) = route.env_defaults.get(req.env) {
        return Ok((
            v,
            ResolvedArm::Default,
            format!("env default (env {})", req.env),
            None,
            None,
        ));
    }
    match &route.default {
        Some(v) => Ok((v, ResolvedArm::Default, "route default".into(), None, None)),
        None => Err(Error::input(format!(
            "route {:?} has no default version for env {:?}",
            req.route, req.env
        ))
        .with_hint("set one: `promptgate registry set-default --route R --version V [--env E]`")),
    }
}
