//! The audit log: one JSON object per line in `audit.ndjson`, appended by every write and
//! never rewritten. An entry is a [`Change`] stamped with the state revision it produced, the
//! time, the actor and the reason given.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::state::Change;
use crate::error::{Error, Result};

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub revision: u64,
    pub at: String,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(flatten)]
    pub change: Change,
}

/// Appends `entries` to the log at `path` and fsyncs it, after cutting off anything past
/// `committed` bytes (left by a writer that crashed before its state commit). Returns the
/// log's new length, which the state then records as committed.
pub(crate) fn append(path: &Path, committed: u64, entries: &[AuditEntry]) -> Result<u64> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("cannot open", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?
        .len();
    if len < committed {
        return Err(Error::runtime(format!(
            "{} is shorter ({len} bytes) than the registry state says ({committed})",
            path.display()
        ))
        .with_hint(
            "the audit log was truncated by hand; restore it from the registry's git history",
        ));
    }
    if len > committed {
        f.set_len(committed)
            .map_err(|e| Error::io("cannot truncate", path, e))?;
    }
    let mut buf = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut buf, e).expect("audit entry serializes");
        buf.push(b'\n');
    }
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(committed))
        .and_then(|_| f.write_all(&buf))
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("cannot append to", path, e))?;
    Ok(committed + buf.len() as u64)
}

/// The committed entries of the log at `path` (the first `committed` bytes), oldest first.
pub(crate) fn read(path: &Path, committed: u64) -> Result<Vec<AuditEntry>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && committed == 0 => return Ok(vec![]),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    parse(&bytes, committed, &path.display().to_string())
}

/// The entries in the first `committed` bytes of an audit log's `bytes` (read from `name`).
pub(crate) fn parse(bytes: &[u8], committed: u64, name: &str) -> Result<Vec<AuditEntry>> {
    let end = (committed as usize).min(bytes.len());
    bytes[..end]
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            serde_json::from_slice(l).map_err(|e| {
                Error::runtime(format!("{name} line {}: {e}", i + 1)).with_hint(
                    "the audit log was edited by hand; restore it from the registry's git history",
                )
            })
        })
        .collect()
}

/// Creates the log if missing (so the directory shows what it will hold).
pub(crate) fn touch(path: &Path) -> Result<()> {
    if !path.exists() {
        File::create(path).map_err(|e| Error::io("cannot create", path, e))?;
    }
    Ok(())
}
