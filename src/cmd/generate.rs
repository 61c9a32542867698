//! `promptgate gen`: deterministic synthetic events as NDJSON on stdout.

use crate::error::{Error, Result};
use crate::r#gen::{self as generator, GenConfig};

pub fn run(cfg: &GenConfig) -> Result<i32> {
    cfg.validate().map_err(Error::usage)?;
    let out = std::io::stdout().lock();
    match generator::write_events(cfg, out) {
        Ok(_) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Error::runtime(format!("cannot write events: {e}"))),
    }
}
