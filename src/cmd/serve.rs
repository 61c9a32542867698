//! `promptgate serve`: the registry over HTTP (see [`crate::serve`]).
//!
//! Binds loopback by default; any other address only with a bearer token
//! (`PROMPTGATE_TOKEN`), which every request must then carry. Connections live under the
//! limits of [`crate::serve::listen`]. Exit codes: 0 after a shutdown (Ctrl-C or SIGTERM, once
//! requests in flight finished or the drain deadline passed), 1 cannot bind or serve, 2 usage
//! error.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::intake::{Intake, IntakeConfig};
use crate::lake::Lake;
use crate::registry::Registry;
use crate::serve::listen::{Limits, serve};
use crate::serve::{ServeState, log, router};

/// The connection limits as given on the command line.
#[derive(Debug, Clone, Copy)]
pub struct LimitArgs {
    pub header_timeout: f64,
    pub max_connections: usize,
    pub drain_timeout: f64,
}

/// Descriptors kept for everything but connections (the registry's files, the listener, stdio).
const RESERVED_FDS: u64 = 64;

impl LimitArgs {
    /// The limits, checked: timeouts of 0.1 s to a day, at least one connection, and no more
    /// connections than the process may open descriptors (less [`RESERVED_FDS`]).
    fn limits(self) -> Result<Limits> {
        let secs = |flag: &str, v: f64| -> Result<Duration> {
            if v.is_finite() && (0.1..=86_400.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(Error::usage(format!(
                    "--{flag} {v}: give seconds from 0.1 to 86400"
                )))
            }
        };
        if self.max_connections == 0 {
            return Err(Error::usage(
                "--max-connections 0: serve at least one connection",
            ));
        }
        let mut max_connections = self.max_connections;
        if let Some(fds) = open_files_limit() {
            let room =
                usize::try_from(fds.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
            if max_connections > room {
                log(&format!(
                    "--max-connections {max_connections} is more than the {fds} file descriptors this process may open allow; serving at most {room} (raise `ulimit -n` for more)"
                ));
                max_connections = room;
            }
        }
        Ok(Limits {
            header_timeout: secs("header-timeout", self.header_timeout)?,
            max_connections,
            drain_timeout: secs("drain-timeout", self.drain_timeout)?,
        })
    }
}

/// The process's open-file limit (`ulimit -n`), raised first to its hard limit where the soft
/// one is lower (as servers do); None when unknown or unlimited.
fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit; failing leaves the limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// `serve --intake` as given on the command line.
#[derive(Debug, Clone)]
pub struct IntakeArgs {
    pub commit_interval: f64,
    pub max_body_mib: f64,
    pub max_spool_mib: f64,
    pub otlp_mapping: Option<std::path::PathBuf>,
}

impl IntakeArgs {
    fn config(self) -> Result<IntakeConfig> {
        if !(self.commit_interval.is_finite() && (0.05..=3600.0).contains(&self.commit_interval)) {
            return Err(Error::usage(format!(
                "--commit-interval {}: give seconds from 0.05 to 3600",
                self.commit_interval
            )));
        }
        let mib = |flag: &str, v: f64, max: f64| -> Result<u64> {
            if v.is_finite() && v > 0.0 && v <= max {
                Ok((v * 1048576.0) as u64)
            } else {
                Err(Error::usage(format!(
                    "--{flag} {v}: give MiB above 0 and at most {max}"
                )))
            }
        };
        Ok(IntakeConfig {
            commit_interval: Duration::from_secs_f64(self.commit_interval),
            max_body_bytes: mib("max-body-mib", self.max_body_mib, 1024.0)? as usize,
            max_spool_bytes: mib("max-spool-mib", self.max_spool_mib, 1048576.0)?,
            otlp: std::sync::Arc::new(match &self.otlp_mapping {
                Some(p) => crate::ingest::otlp::OtlpMapping::load(p)?,
                None => crate::ingest::otlp::OtlpMapping::default(),
            }),
        })
    }
}

/// Serves until Ctrl-C or SIGTERM. The token comes from `PROMPTGATE_TOKEN` (never a flag, so it
/// does not show in `ps`). With `intake`, events posted are taken into `lake`.
pub async fn run(
    reg: Registry,
    addr: &str,
    limits: LimitArgs,
    lake: &Lake,
    intake: Option<IntakeArgs>,
) -> Result<i32> {
    let limits = limits.limits()?;
    let intake_config = intake.map(IntakeArgs::config).transpose()?;
    let token = std::env::var("PROMPTGATE_TOKEN").ok();
    let addr: SocketAddr = addr.parse().map_err(|_| {
        Error::usage(format!("--addr {addr:?} is not an IP address and port"))
            .with_hint("e.g. --addr 127.0.0.1:8719 (loopback) or --addr [::1]:8719")
    })?;
    if let Some(t) = &token
        && t.trim().is_empty()
    {
        return Err(Error::usage("PROMPTGATE_TOKEN is set but empty")
            .with_hint("set it to a long random secret, or unset it to serve loopback only"));
    }
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(Error::usage(format!(
            "refusing to serve on {addr} without a bearer token: anyone who can reach it could read the registry"
        ))
        .with_hint("set PROMPTGATE_TOKEN to a secret (clients send `Authorization: Bearer <it>`), or bind 127.0.0.1"));
    }
    // Fail early and clearly on a registry that cannot be read.
    ServeState::new(reg.clone(), None, None).current()?;
    let intake = match intake_config {
        Some(c) => Some(Intake::start(lake.clone(), c)?),
        None => None,
    };
    let state = ServeState::new(reg.clone(), token.clone(), intake.clone());
    let empty = state.current()?.routes.is_empty();
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::runtime(format!("cannot listen on {addr}: {e}"))
            .with_hint("is another server on that port? pick another with --addr")
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::runtime(format!("cannot listen on {addr}: {e}")))?;
    eprintln!(
        "promptgate serve: listening on http://{local} (registry {}{}{})",
        reg.location(),
        match &intake {
            Some(i) => format!(
                "; events into {} every {:?}, spool {}",
                lake.location(),
                i.config().commit_interval,
                i.spool_dir().display()
            ),
            None => String::new(),
        },
        if token.is_some() {
            ", bearer token required"
        } else {
            ""
        }
    );
    for note in intake.iter().flat_map(|i| i.take_notes()) {
        log(&note);
    }
    if empty {
        log(&format!(
            "the registry at {} holds no prompt yet: every resolve answers 404 until one is added",
            reg.location()
        ));
    }
    let stopped = serve(listener, router(state), limits, shutdown()).await;
    if stopped.shed > 0 {
        log(&format!(
            "{} connections were refused over the limit of {}",
            stopped.shed, limits.max_connections
        ));
    }
    if let Some(i) = &intake {
        log("committing what the intake spool holds");
        if !i.stop(limits.drain_timeout).await {
            log(&format!(
                "the last commit did not finish within the {:?} drain deadline; the spool keeps its events for the next start",
                limits.drain_timeout
            ));
        }
    }
    match stopped.dropped {
        0 => log("stopped"),
        n => log(&format!(
            "stopped; {n} connections were still open after the {:?} drain deadline and were closed",
            limits.drain_timeout
        )),
    }
    Ok(0)
}

/// Resolves on Ctrl-C or SIGTERM, and says which.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let signal = tokio::select! {
        () = ctrl_c => "Ctrl-C",
        () = term => "SIGTERM",
    };
    log(&format!(
        "{signal}: no new connections; finishing the requests in flight"
    ));
}
