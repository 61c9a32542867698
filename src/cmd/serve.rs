//! `promptgate serve`: the registry over HTTP (see [`crate::serve`]).
//!
//! Binds loopback by default; any other address only with a bearer token
//! (`PROMPTGATE_TOKEN`), which every request must then carry. Exit codes: 0 after a clean
//! shutdown (Ctrl-C or SIGTERM), 1 cannot bind or serve, 2 usage error.

use std::net::SocketAddr;

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::serve::{ServeState, router};

/// Serves until Ctrl-C or SIGTERM. The token comes from `PROMPTGATE_TOKEN` (never a flag, so it
/// does not show in `ps`).
pub async fn run(reg: Registry, addr: &str) -> Result<i32> {
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
    reg.load()?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::runtime(format!("cannot listen on {addr}: {e}"))
            .with_hint("is another server on that port? pick another with --addr")
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::runtime(format!("cannot listen on {addr}: {e}")))?;
    eprintln!(
        "promptgate serve: listening on http://{local} (registry {}{})",
        reg.location(),
        if token.is_some() {
            ", bearer token required"
        } else {
            ""
        }
    );
    let app = router(ServeState::new(reg, token));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| Error::runtime(format!("server failed: {e}")))?;
    eprintln!("promptgate serve: stopped");
    Ok(0)
}

/// Resolves on Ctrl-C or SIGTERM.
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
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
