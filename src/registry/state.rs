//! The registry's state — one JSON document a person can read — and the changes that can be
//! made to it. Every change is a method on [`State`] that checks its inputs, changes nothing on
//! error, and returns the [`Change`]s to record in the audit log; writing them down is the
//! store's job ([`super::Registry::update`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Format version of `state.json`.
pub const STATE_FORMAT: u32 = 1;

/// Every route the registry knows, with its versions, defaults, overrides, kills and rollouts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// Incremented by every write; the audit entries of a write carry it.
    pub revision: u64,
    /// Length of the audit log this state was committed with. Bytes past it were appended by a
    /// writer that crashed before committing; the next writer cuts them off.
    pub audit_bytes: u64,
    pub routes: BTreeMap<String, RouteState>,
}

/// One route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteState {
    /// Registered prompt versions (immutable once added).
    pub versions: BTreeMap<String, PromptVersion>,
    /// The route's default, for every env without an env default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Per-env defaults (`set-default --env`), set by hand or by a completed rollout.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_defaults: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
    /// Active kill switches, keyed by env (`*` for every env of the route).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kills: BTreeMap<String, Kill>,
    /// Every rollout of the route, active or finished, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<crate::rollout::Rollout>,
    /// Each time a version became a default (by hand or by a completed rollout), for the
    /// last-known-good rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_history: Vec<DefaultServed>,
    /// Versions taken out of service by a kill switch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub killed: Vec<KilledVersion>,
}

/// A registered prompt version: its text is stored by content under `prompts/<sha256>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptVersion {
    /// Lowercase hex SHA-256 of the prompt file's bytes.
    pub sha256: String,
    pub bytes: u64,
    pub added_at: String,
    pub added_by: String,
}

/// A version pinned for one env, or one tier of one env.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    pub env: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    pub version: String,
}

/// An active kill switch: all traffic of its scope goes to `version` (the last-known-good).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kill {
    pub version: String,
    /// The versions it took out of service.
    pub killed: Vec<String>,
    pub revision: u64,
    pub at: String,
    pub actor: String,
    pub why: String,
}

/// `version` became a default (of `env`, or of the whole route when `env` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefaultServed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    pub version: String,
    pub revision: u64,
}

/// `version` was killed (in `env`, or in every env when `None`) at `revision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KilledVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    pub version: String,
    pub revision: u64,
}

/// The key of a kill switch covering every env of a route.
pub const ALL_ENVS: &str = "*";

/// One thing a write changed, for the audit log (the store adds revision, time and actor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub action: String,
    pub route: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// The judge's verdict, for rollout steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::rollout::StepVerdict>,
    /// What else happened, in words (e.g. "lifted the kill switch on env prod").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Change {
    pub fn new(action: &str, route: &str) -> Self {
        Change {
            action: action.into(),
            route: route.into(),
            env: None,
            tier: None,
            before: None,
            after: None,
            rollout: None,
            verdict: None,
            notes: Vec::new(),
        }
    }
}

/// Who did a write and why, and when (the same for every change of one write).
#[derive(Debug, Clone)]
pub struct Stamp {
    pub revision: u64,
    pub at_us: i64,
    pub actor: String,
    pub why: Option<String>,
}

/// Checks a user-supplied name (route, env, tier, version): non-empty, at most 200 bytes, no
/// control characters, no surrounding whitespace.
pub fn check_name(what: &str, value: &str) -> Result<()> {
    let problem = if value.is_empty() {
        Some("is empty")
    } else if value.len() > 200 {
        Some("is longer than 200 bytes")
    } else if value.chars().any(char::is_control) {
        Some("contains a control character")
    } else if value.trim() != value {
        Some("has leading or trailing whitespace")
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::usage(format!("{what} {value:?} {p}"))),
        None => Ok(()),
    }
}

/// Whether `given` (from an event or a person) names the registered `sha256`: a lowercase or
/// uppercase hex prefix of it of at least 8 characters, or the whole of it.
pub fn sha_matches(sha256: &str, given: &str) -> bool {
    given.len() >= 8
        && given.len() <= sha256.len()
        && given.bytes().all(|b| b.is_ascii_hexdigit())
        && sha256.as_bytes()[..given.len()].eq_ignore_ascii_case(given.as_bytes())
}

pub(crate) fn unknown_route(route: &str) -> Error {
    Error::input(format!("unknown route {route:?}")).with_hint(
        "register a prompt version first: `promptgate registry add --route R --version V --file PROMPT.txt`",
    )
}

impl State {
    pub fn empty() -> Self {
        State {
            format: STATE_FORMAT,
            ..State::default()
        }
    }

    pub fn route(&self, route: &str) -> Result<&RouteState> {
        self.routes.get(route).ok_or_else(|| unknown_route(route))
    }

    pub fn route_mut(&mut self, route: &str) -> Result<&mut RouteState> {
        self.routes
            .get_mut(route)
            .ok_or_else(|| unknown_route(route))
    }

    /// Registers `version` of `route` with the SHA-256 `sha256`. Same content again: no change
    /// (`Ok(None)`); other content: an error, as versions are immutable.
    pub fn add_version(
        &mut self,
        route: &str,
        version: &str,
        sha256: &str,
        bytes: u64,
        stamp: &Stamp,
    ) -> Result<Option<Change>> {
        check_name("route", route)?;
        check_name("version", version)?;
        let r = self.routes.entry(route.to_string()).or_default();
        if let Some(existing) = r.versions.get(version) {
            if existing.sha256 == sha256 {
                return Ok(None);
            }
            let err = Error::input(format!(
                "version {version:?} of route {route:?} is already registered with other content (sha256 {}, this file has {})",
                &existing.sha256[..12],
                &sha256[..12]
            ))
            .with_hint("versions are immutable: register the new text under a new version name");
            return Err(err);
        }
        r.versions.insert(
            version.to_string(),
            PromptVersion {
                sha256: sha256.to_string(),
                bytes,
                added_at: format_us(stamp.at_us),
                added_by: stamp.actor.clone(),
            },
        );
        let mut c = Change::new("add", route);
        c.after = Some(format!("{version} (sha256 {})", &sha256[..12]));
        Ok(Some(c))
    }

    /// Makes `version` the default of `route` (of `env` only, when given). Lifts the kill
    /// switch of that scope (every kill of the route when `env` is `None`).
    pub fn set_default(
        &mut self,
        route: &str,
        env: Option<&str>,
        version: &str,
        stamp: &Stamp,
    ) -> Result<Option<Change>> {
        check_name("route", route)?;
        check_name("version", version)?;
        if let Some(e) = env {
            check_name("env", e)?;
        }
        let r = self.route_mut(route)?;
        r.require_version(route, version)?;
        let before = match env {
            Some(e) => r.env_defaults.get(e).cloned(),
            None => r.default.clone(),
        };
        let lifted = r.lift_kills(env);
        if before.as_deref() == Some(version) && lifted.is_empty() {
            return Ok(None);
        }
        match env {
            Some(e) => {
                r.env_defaults.insert(e.to_string(), version.to_string());
            }
            None => r.default = Some(version.to_string()),
        }
        r.default_history.push(DefaultServed {
            env: env.map(str::to_string),
            version: version.to_string(),
            revision: stamp.revision,
        });
        let mut c = Change::new("set-default", route);
        c.env = env.map(str::to_string);
        c.before = before;
        c.after = Some(version.to_string());
        c.notes = lifted;
        if let Some(e) = env
            && r.kills.contains_key(ALL_ENVS)
        {
            c.notes.push(format!(
                "the kill switch on every env of the route is still on, so env {e:?} still serves {}; run set-default without --env to lift it",
                r.kills[ALL_ENVS].version
            ));
        }
        Ok(Some(c))
    }

    /// Pins `version` for `env` (and `tier`), above any rollout and default.
    pub fn set_override(
        &mut self,
        route: &str,
        env: &str,
        tier: Option<&str>,
        version: &str,
    ) -> Result<Option<Change>> {
        check_name("route", route)?;
        check_name("version", version)?;
        check_name("env", env)?;
        if let Some(t) = tier {
            check_name("tier", t)?;
        }
        let r = self.route_mut(route)?;
        r.require_version(route, version)?;
        let slot = r
            .overrides
            .iter_mut()
            .find(|o| o.env == env && o.tier.as_deref() == tier);
        let before = slot.as_ref().map(|o| o.version.clone());
        if before.as_deref() == Some(version) {
            return Ok(None);
        }
        match slot {
            Some(o) => o.version = version.to_string(),
            None => r.overrides.push(Override {
                env: env.to_string(),
                tier: tier.map(str::to_string),
                version: version.to_string(),
            }),
        }
        let mut c = Change::new("override", route);
        c.env = Some(env.to_string());
        c.tier = tier.map(str::to_string);
        c.before = before;
        c.after = Some(version.to_string());
        if tier.is_none()
            && let Some(ro) = r.active_rollout(env)
        {
            c.notes.push(format!(
                "this override takes precedence over the active rollout {} of {:?}, which gets no traffic in env {env:?} while it stands",
                ro.id, ro.canary
            ));
        }
        Ok(Some(c))
    }

    /// Removes the override of `env` (and `tier`). Removing one that does not exist is an error,
    /// so a typo is not taken for success.
    pub fn clear_override(&mut self, route: &str, env: &str, tier: Option<&str>) -> Result<Change> {
        let r = self.route_mut(route)?;
        let Some(pos) = r
            .overrides
            .iter()
            .position(|o| o.env == env && o.tier.as_deref() == tier)
        else {
            return Err(Error::input(format!(
                "route {route:?} has no override for env {env:?}{}",
                tier.map(|t| format!(", tier {t:?}")).unwrap_or_default()
            ))
            .with_hint("`promptgate registry show --route R` lists the overrides"));
        };
        let removed = r.overrides.remove(pos);
        let mut c = Change::new("clear-override", route);
        c.env = Some(env.to_string());
        c.tier = tier.map(str::to_string);
        c.before = Some(removed.version);
        Ok(c)
    }

    /// The kill switch: ends every active rollout of the scope, takes the versions the scope
    /// serves out of service, and sends all its traffic to the last-known-good version.
    /// Without a last-known-good version nothing changes and the error says why.
    pub fn kill(&mut self, route: &str, env: Option<&str>, stamp: &Stamp) -> Result<Change> {
        check_name("route", route)?;
        if let Some(e) = env {
            check_name("env", e)?;
        }
        let r = self.route_mut(route)?;
        let scope = env.unwrap_or(ALL_ENVS).to_string();
        let in_scope = |e: &str| env.is_none_or(|x| x == e);
        // What the kill takes out of service: the canary of an active rollout (the new thing),
        // or else the current default. Overrides are deliberate pins (often of a known-good
        // version): they are suspended while the kill stands, not killed.
        let mut suspects: Vec<String> = Vec::new();
        let push = |v: &str, s: &mut Vec<String>| {
            if !s.iter().any(|x| x == v) {
                s.push(v.to_string());
            }
        };
        let active: Vec<usize> = r
            .rollouts
            .iter()
            .enumerate()
            .filter(|(_, ro)| ro.is_active() && in_scope(&ro.env))
            .map(|(i, _)| i)
            .collect();
        for &i in &active {
            push(&r.rollouts[i].canary, &mut suspects);
        }
        if active.is_empty() {
            match env {
                Some(e) => {
                    if let Some(v) = r.default_for(e) {
                        push(v, &mut suspects);
                    }
                }
                None => {
                    for v in r.default.iter().chain(r.env_defaults.values()) {
                        push(v, &mut suspects);
                    }
                }
            }
        }
        let Some(lkg) = r.last_known_good(env, &suspects) else {
            return Err(Error::input(format!(
                "no last-known-good version for route {route:?}{}: no earlier default that has not been killed (serving now: {})",
                env.map(|e| format!(" in env {e:?}")).unwrap_or_default(),
                if suspects.is_empty() { "nothing".to_string() } else { suspects.join(", ") }
            ))
            .with_hint("nothing was changed; to roll back by hand, `promptgate registry set-default --route R --version V` a version you trust"));
        };
        let mut ended = Vec::new();
        for &i in &active {
            let ro = &mut r.rollouts[i];
            ro.end(crate::rollout::RolloutStatus::Killed, stamp.at_us);
            ended.push(format!("ended rollout {} of {:?}", ro.id, ro.canary));
        }
        let killed: Vec<String> = suspects.into_iter().filter(|v| *v != lkg).collect();
        for v in &killed {
            r.killed.push(KilledVersion {
                env: env.map(str::to_string),
                version: v.clone(),
                revision: stamp.revision,
            });
        }
        let before = r.kills.get(&scope).map(|k| k.version.clone());
        r.kills.insert(
            scope,
            Kill {
                version: lkg.clone(),
                killed: killed.clone(),
                revision: stamp.revision,
                at: format_us(stamp.at_us),
                actor: stamp.actor.clone(),
                why: stamp.why.clone().unwrap_or_default(),
            },
        );
        let mut c = Change::new("kill", route);
        c.env = env.map(str::to_string);
        c.before = Some(if killed.is_empty() {
            before.unwrap_or_else(|| lkg.clone())
        } else {
            killed.join(", ")
        });
        c.after = Some(lkg);
        c.notes = ended;
        Ok(c)
    }
}

impl RouteState {
    pub fn require_version(&self, route: &str, version: &str) -> Result<&PromptVersion> {
        self.versions.get(version).ok_or_else(|| {
            Error::input(format!(
                "version {version:?} is not registered for route {route:?} (registered: {})",
                if self.versions.is_empty() {
                    "none".to_string()
                } else {
                    self.versions.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
            .with_hint("register it first: `promptgate registry add --route R --version V --file PROMPT.txt`")
        })
    }

    /// The default that serves `env`: its env default, else the route's.
    pub fn default_for(&self, env: &str) -> Option<&str> {
        self.env_defaults
            .get(env)
            .or(self.default.as_ref())
            .map(String::as_str)
    }

    /// The active rollout of `env`, if any (at most one by construction).
    pub fn active_rollout(&self, env: &str) -> Option<&crate::rollout::Rollout> {
        self.rollouts.iter().find(|r| r.is_active() && r.env == env)
    }

    pub fn active_rollout_mut(&mut self, env: &str) -> Option<&mut crate::rollout::Rollout> {
        self.rollouts
            .iter_mut()
            .find(|r| r.is_active() && r.env == env)
    }

    /// The kill switch covering `env`: its own, else the route-wide one.
    pub fn kill_for(&self, env: &str) -> Option<&Kill> {
        self.kills.get(env).or_else(|| self.kills.get(ALL_ENVS))
    }

    /// The most recent version that became a default of the scope (`env`, or the whole route)
    /// and has not been killed since, other than `exclude`.
    pub fn last_known_good(&self, env: Option<&str>, exclude: &[String]) -> Option<String> {
        self.default_history
            .iter()
            .rev()
            .filter(|d| match (env, d.env.as_deref()) {
                (_, None) => true,
                (Some(e), Some(de)) => e == de,
                (None, Some(_)) => false,
            })
            .find(|d| {
                !exclude.contains(&d.version)
                    && !self.killed.iter().any(|k| {
                        k.version == d.version
                            && k.revision >= d.revision
                            && match (env, k.env.as_deref()) {
                                (_, None) | (None, Some(_)) => true,
                                (Some(e), Some(ke)) => e == ke,
                            }
                    })
            })
            .map(|d| d.version.clone())
    }

    /// Removes the kill switch of `env` (every kill when `None`); says what it lifted.
    pub(crate) fn lift_kills(&mut self, env: Option<&str>) -> Vec<String> {
        let keys: Vec<String> = match env {
            Some(e) => self.kills.keys().filter(|k| *k == e).cloned().collect(),
            None => self.kills.keys().cloned().collect(),
        };
        keys.into_iter()
            .map(|k| {
                self.kills.remove(&k);
                if k == ALL_ENVS {
                    "lifted the kill switch on every env of the route".to_string()
                } else {
                    format!("lifted the kill switch on env {k:?}")
                }
            })
            .collect()
    }
}

/// `us` (µs since the Unix epoch) as RFC 3339 UTC with microseconds.
pub fn format_us(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| us.to_string())
}

/// The current time in µs since the Unix epoch.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(rev: u64) -> Stamp {
        Stamp {
            revision: rev,
            at_us: 1_700_000_000_000_000 + rev as i64,
            actor: "t".into(),
            why: Some("test".into()),
        }
    }

    fn state_with(versions: &[&str]) -> State {
        let mut s = State::empty();
        for (i, v) in versions.iter().enumerate() {
            let sha = format!("{:064x}", i + 1);
            s.add_version("r", v, &sha, 1, &stamp(0)).unwrap();
        }
        s
    }

    #[test]
    fn sha_prefix_matching() {
        let sha = "ab".repeat(32);
        assert!(sha_matches(&sha, "abababab"));
        assert!(sha_matches(&sha, "ABABABAB"));
        assert!(sha_matches(&sha, &sha));
        assert!(!sha_matches(&sha, "abababa"), "7 characters are too few");
        assert!(!sha_matches(&sha, "abababac"));
        assert!(!sha_matches(&sha, &format!("{sha}00")));
        assert!(!sha_matches(&sha, "abababa-"));
    }

    #[test]
    fn versions_are_immutable() {
        let mut s = state_with(&["v1"]);
        let again = s.add_version("r", "v1", &format!("{:064x}", 1), 1, &stamp(1));
        assert!(matches!(again, Ok(None)));
        let before = s.clone();
        let other = s.add_version("r", "v1", &format!("{:064x}", 9), 1, &stamp(1));
        assert!(other.unwrap_err().message.contains("already registered"));
        assert_eq!(s, before);
    }

    #[test]
    fn last_known_good_skips_killed_versions_until_they_are_default_again() {
        let mut s = state_with(&["v1", "v2", "v3"]);
        s.set_default("r", None, "v1", &stamp(1)).unwrap();
        s.set_default("r", None, "v2", &stamp(2)).unwrap();
        let c = s.kill("r", None, &stamp(3)).unwrap();
        assert_eq!(c.after.as_deref(), Some("v1"));
        assert_eq!(c.before.as_deref(), Some("v2"));
        // v3 becomes default, lifting the kill; killing it again falls back to v1, not v2.
        let c = s.set_default("r", None, "v3", &stamp(4)).unwrap().unwrap();
        assert!(c.notes[0].contains("lifted"));
        let c = s.kill("r", None, &stamp(5)).unwrap();
        assert_eq!(c.after.as_deref(), Some("v1"));
        // v2 made default again is eligible again.
        s.set_default("r", None, "v2", &stamp(6)).unwrap();
        s.set_default("r", None, "v3", &stamp(7)).unwrap();
        let c = s.kill("r", None, &stamp(8)).unwrap();
        assert_eq!(c.after.as_deref(), Some("v2"));
    }

    #[test]
    fn kill_without_last_known_good_changes_nothing() {
        let mut s = state_with(&["v1"]);
        s.set_default("r", None, "v1", &stamp(1)).unwrap();
        let before = s.clone();
        let e = s.kill("r", Some("prod"), &stamp(2)).unwrap_err();
        assert!(e.message.contains("no last-known-good"), "{}", e.message);
        assert_eq!(s, before);
    }

    #[test]
    fn unknown_names_are_errors() {
        let mut s = state_with(&["v1"]);
        assert!(s.set_default("nope", None, "v1", &stamp(1)).is_err());
        let e = s.set_default("r", None, "v9", &stamp(1)).unwrap_err();
        assert!(e.message.contains("\"v9\"") && e.message.contains("v1"));
        assert!(s.clear_override("r", "prod", None).is_err());
        assert!(check_name("route", "a\nb").is_err());
        assert!(check_name("route", " a").is_err());
        assert!(check_name("route", "").is_err());
    }
}
