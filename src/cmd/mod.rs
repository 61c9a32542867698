//! One module per subcommand: each takes plain options, does the work through the domain
//! modules, prints, and returns the process exit code.

pub mod checklist;
pub mod compact;
pub mod demo;
pub mod generate;
pub mod ingest;
pub mod judge;
pub mod lake;
pub mod registry;
pub mod resolve;
pub mod review;
pub mod rollout;
pub mod rollup;
pub mod serve;
pub mod sql;
pub mod timeline;

use std::io::Write;

use crate::error::{Error, Result};

/// Standard output, buffered; a closed pipe (`| head`) is not an error worth a message.
pub(crate) fn stdout() -> std::io::BufWriter<std::io::Stdout> {
    std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())
}

pub(crate) fn flush(out: &mut dyn Write) -> Result<()> {
    match out.flush() {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::runtime(format!("cannot write output: {e}"))),
    }
}
