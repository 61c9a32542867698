//! `promptgate registry add|set-default|override|kill|show|history`: the prompt registry.
//!
//! Exit codes: 0 done (or nothing to do), 1 refused (unknown route or version, a version added
//! again with other content, a kill with no last-known-good; nothing changed), 2 usage error.

use std::io::Write;
use std::path::PathBuf;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

use crate::error::{Error, Result};
use crate::registry::state::{Change, RouteState, State, check_name};
use crate::registry::{AuditEntry, Registry};

/// Output format of `show` and `history`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ListFormat {
    #[default]
    Table,
    Json,
}

/// Who writes and why (every write command takes `--actor` and `--why`).
#[derive(Debug, Clone)]
pub struct WriteMeta {
    pub actor: String,
    pub why: Option<String>,
}

/// One registry subcommand.
#[derive(Debug, Clone)]
pub enum RegistryAction {
    Add {
        route: String,
        version: String,
        file: PathBuf,
    },
    SetDefault {
        route: String,
        version: String,
        env: Option<String>,
    },
    Override {
        route: String,
        env: String,
        tier: Option<String>,
        /// `None` with `clear`.
        version: Option<String>,
        clear: bool,
    },
    Kill {
        route: String,
        env: Option<String>,
    },
    Show {
        route: Option<String>,
        format: ListFormat,
    },
    History {
        route: String,
        format: ListFormat,
    },
}

fn w(e: std::io::Error) -> Error {
    Error::runtime(format!("cannot write output: {e}"))
}

pub fn run(reg: &Registry, action: RegistryAction, meta: &WriteMeta) -> Result<i32> {
    let mut out = super::stdout();
    match action {
        RegistryAction::Add {
            route,
            version,
            file,
        } => {
            check_name("route", &route)?;
            check_name("version", &version)?;
            let bytes = std::fs::read(&file).map_err(|e| {
                Error::io("cannot read prompt file", &file, e).with_hint("pass --file PROMPT.txt")
            })?;
            if bytes.is_empty() {
                return Err(Error::input(format!("{} is empty", file.display()))
                    .with_hint("a prompt version needs its text"));
            }
            if std::str::from_utf8(&bytes).is_err() {
                return Err(
                    Error::input(format!("{} is not UTF-8 text", file.display()))
                        .with_hint("prompt texts are stored and served as UTF-8"),
                );
            }
            let len = bytes.len() as u64;
            let sha = crate::registry::sha256_hex(&bytes);
            let change = reg.update(&meta.actor, meta.why.as_deref(), |s, st| {
                let c = s.add_version(&route, &version, &sha, len, st)?;
                // Stored only once the version is accepted, before the state names it.
                reg.store_prompt(&bytes)?;
                Ok((c.clone(), c.into_iter().collect()))
            })?;
            match change {
                Some(_) => writeln!(
                    out,
                    "registered {route} {version}: sha256 {sha} ({len} bytes)"
                ),
                None => writeln!(
                    out,
                    "{route} {version} is already registered with this content (sha256 {sha}): nothing to do"
                ),
            }
            .map_err(w)?;
        }
        RegistryAction::SetDefault {
            route,
            version,
            env,
        } => {
            let c = reg.update(&meta.actor, meta.why.as_deref(), |s, st| {
                let c = s.set_default(&route, env.as_deref(), &version, st)?;
                Ok((c.clone(), c.into_iter().collect()))
            })?;
            let scope = env.map_or("all envs".to_string(), |e| format!("env {e}"));
            match c {
                Some(c) => write_change(&mut out, &format!("default of {route} ({scope})"), &c)?,
                None => writeln!(
                    out,
                    "{version} is already the default of {route} ({scope}): nothing to do"
                )
                .map_err(w)?,
            }
        }
        RegistryAction::Override {
            route,
            env,
            tier,
            version,
            clear,
        } => {
            let scope = format!(
                "override of {route} (env {env}{})",
                tier.as_deref()
                    .map(|t| format!(", tier {t}"))
                    .unwrap_or_default()
            );
            let c = reg.update(&meta.actor, meta.why.as_deref(), |s, _| {
                let c = if clear {
                    Some(s.clear_override(&route, &env, tier.as_deref())?)
                } else {
                    let v = version.as_deref().unwrap_or_default();
                    s.set_override(&route, &env, tier.as_deref(), v)?
                };
                Ok((c.clone(), c.into_iter().collect()))
            })?;
            match c {
                Some(c) => write_change(&mut out, &scope, &c)?,
                None => writeln!(out, "{scope} is already that: nothing to do").map_err(w)?,
            }
        }
        RegistryAction::Kill { route, env } => {
            let c = reg.update(&meta.actor, meta.why.as_deref(), |s, st| {
                let c = s.kill(&route, env.as_deref(), st)?;
                Ok((c.clone(), vec![c]))
            })?;
            writeln!(
                out,
                "KILLED {route} ({}): {} out of service; all traffic now on last-known-good {}",
                env.map_or("all envs".to_string(), |e| format!("env {e}")),
                c.before.as_deref().unwrap_or("-"),
                c.after.as_deref().unwrap_or("-"),
            )
            .map_err(w)?;
            for n in &c.notes {
                writeln!(out, "  {n}").map_err(w)?;
            }
            writeln!(
                out,
                "  lift it with `promptgate registry set-default --route {route} --version V{}`",
                c.env.map(|e| format!(" --env {e}")).unwrap_or_default()
            )
            .map_err(w)?;
        }
        RegistryAction::Show { route, format } => {
            let state = reg.load()?;
            if let Some(r) = &route {
                state.route(r)?;
            }
            match format {
                ListFormat::Json => {
                    let doc = match &route {
                        Some(r) => serde_json::json!({ "routes": { r: state.routes[r] } }),
                        None => serde_json::to_value(&state).expect("state serializes"),
                    };
                    serde_json::to_writer_pretty(&mut out, &doc)
                        .map_err(|e| Error::runtime(e.to_string()))?;
                    writeln!(out).map_err(w)?;
                }
                ListFormat::Table => show(&mut out, &state, route.as_deref(), reg)?,
            }
        }
        RegistryAction::History { route, format } => {
            let state = reg.load()?;
            state.route(&route)?;
            let entries: Vec<AuditEntry> = reg
                .history()?
                .into_iter()
                .filter(|e| e.change.route == route)
                .collect();
            match format {
                ListFormat::Json => {
                    serde_json::to_writer_pretty(&mut out, &entries)
                        .map_err(|e| Error::runtime(e.to_string()))?;
                    writeln!(out).map_err(w)?;
                }
                ListFormat::Table => history_table(&mut out, &entries)?,
            }
        }
    }
    super::flush(&mut out)?;
    Ok(0)
}

fn write_change(out: &mut dyn Write, what: &str, c: &Change) -> Result<()> {
    writeln!(
        out,
        "{what}: {} -> {}",
        c.before.as_deref().unwrap_or("(none)"),
        c.after.as_deref().unwrap_or("(none)")
    )
    .map_err(w)?;
    for n in &c.notes {
        writeln!(out, "  {n}").map_err(w)?;
    }
    Ok(())
}

fn show(out: &mut dyn Write, state: &State, only: Option<&str>, reg: &Registry) -> Result<()> {
    if state.routes.is_empty() {
        writeln!(
            out,
            "registry {} is empty\n  add a prompt: promptgate registry add --route R --version V --file PROMPT.txt",
            reg.location()
        )
        .map_err(w)?;
        return Ok(());
    }
    for (name, r) in &state.routes {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        show_route(out, name, r)?;
    }
    Ok(())
}

fn show_route(out: &mut dyn Write, name: &str, r: &RouteState) -> Result<()> {
    writeln!(out, "route {name}").map_err(w)?;
    let mut defaults = vec![format!(
        "default: {}",
        r.default.as_deref().unwrap_or("(none)")
    )];
    defaults.extend(r.env_defaults.iter().map(|(e, v)| format!("env {e}: {v}")));
    writeln!(out, "  {}", defaults.join(", ")).map_err(w)?;
    writeln!(out, "  versions:").map_err(w)?;
    for (v, p) in &r.versions {
        writeln!(
            out,
            "    {v:<12} sha256 {}  {:>7} bytes  added {} by {}",
            &p.sha256[..12],
            p.bytes,
            p.added_at,
            p.added_by
        )
        .map_err(w)?;
    }
    for o in &r.overrides {
        writeln!(
            out,
            "  override: env {}{} -> {}",
            o.env,
            o.tier
                .as_deref()
                .map(|t| format!(", tier {t}"))
                .unwrap_or_default(),
            o.version
        )
        .map_err(w)?;
    }
    for (scope, k) in &r.kills {
        writeln!(
            out,
            "  KILL SWITCH ({}): all traffic on {} since {} by {} ({}); killed: {}",
            if scope == crate::registry::state::ALL_ENVS {
                "all envs".to_string()
            } else {
                format!("env {scope}")
            },
            k.version,
            k.at,
            k.actor,
            k.why,
            if k.killed.is_empty() {
                "-".to_string()
            } else {
                k.killed.join(", ")
            }
        )
        .map_err(w)?;
    }
    for ro in r.rollouts.iter().filter(|ro| ro.is_active()) {
        writeln!(
            out,
            "  rollout {} (env {}): {} over {}, step {}/{} ({}) since {}",
            ro.id,
            ro.env,
            ro.canary,
            ro.baseline,
            ro.step + 1,
            ro.steps.len(),
            ro.current_step().label(),
            ro.step_started_at
        )
        .map_err(w)?;
    }
    Ok(())
}

fn history_table(out: &mut dyn Write, entries: &[AuditEntry]) -> Result<()> {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "time", "actor", "action", "scope", "change", "why", "verdict",
        ]);
    for e in entries {
        let c = &e.change;
        let scope = [
            c.env.as_deref().map(|e| format!("env {e}")),
            c.tier.as_deref().map(|t| format!("tier {t}")),
            c.rollout.as_deref().map(|r| format!("rollout {r}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        let mut change = format!(
            "{} -> {}",
            c.before.as_deref().unwrap_or("(none)"),
            c.after.as_deref().unwrap_or("(none)")
        );
        for n in &c.notes {
            change.push_str(&format!("; {n}"));
        }
        let verdict = c
            .verdict
            .as_ref()
            .map(|v| {
                format!(
                    "{} (exit {}): {} [n baseline {}, canary {}]",
                    v.verdict, v.exit_code, v.reason, v.n_baseline, v.n_canary
                )
            })
            .unwrap_or_default();
        t.add_row([
            e.at.clone(),
            e.actor.clone(),
            c.action.clone(),
            scope,
            change,
            e.why.clone().unwrap_or_default(),
            verdict,
        ]);
    }
    writeln!(out, "{t}").map_err(w)
}
