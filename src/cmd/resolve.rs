//! `promptgate resolve`: which prompt version a request gets, as one JSON object.
//!
//! Exit codes: 0 resolved, 1 unknown route or no default for the env, 2 usage error.

use std::io::Write;

use crate::error::{Error, Result};
use crate::registry::{self, Registry, ResolveRequest};

pub fn run(reg: &Registry, req: &ResolveRequest<'_>) -> Result<i32> {
    req.check()?;
    let state = reg.load()?;
    let resolution = registry::resolve(&state, req)?;
    let mut out = super::stdout();
    serde_json::to_writer(&mut out, &resolution).map_err(|e| Error::runtime(e.to_string()))?;
    writeln!(out).map_err(|e| Error::runtime(format!("cannot write output: {e}")))?;
    super::flush(&mut out)?;
    Ok(0)
}
