//! Vacuum: delete the files no version of the lake within the retention period needs.
//!
//! A file leaves a table when a compaction replaces it (or a writer's unfinished commit is
//! undone); readers of the versions before still read it, and `--as-of` can go back to them.
//! After the retention period (168 hours unless `--retention-hours` or
//! `PROMPTGATE_RETENTION_HOURS` says otherwise) it is deleted with its id-hash file. Files in a
//! table's partitions that no version ever listed (left by a writer that died before its
//! commit) are deleted once they are older than the retention period. A file the current
//! version lists is never deleted.

use std::path::Path;

use serde::Serialize;

use super::{Lake, Table, ids, log, txn};
use crate::error::{Error, Result};

pub const DEFAULT_RETENTION_HOURS: u64 = 168;
pub const RETENTION_ENV: &str = "PROMPTGATE_RETENTION_HOURS";

/// The retention period: `flag`, else `PROMPTGATE_RETENTION_HOURS`, else 168 hours.
pub fn retention_hours(flag: Option<u64>) -> Result<u64> {
    if let Some(h) = flag {
        return Ok(h);
    }
    match std::env::var(RETENTION_ENV) {
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            Error::usage(format!(
                "{RETENTION_ENV}={v:?} is not a whole number of hours"
            ))
            .with_hint(format!("for example {RETENTION_ENV}=168"))
        }),
        Err(_) => Ok(DEFAULT_RETENTION_HOURS),
    }
}

/// What a vacuum deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, Default, Serialize)]
pub struct VacuumReport {
    pub files: usize,
    pub bytes: u64,
    pub retention_hours: u64,
    pub dry_run: bool,
    /// The files, relative to the lake.
    pub paths: Vec<String>,
}

/// Deletes the files of every table that no version since `retention_hours` ago needs.
pub async fn vacuum(lake: &Lake, retention_hours: u64, dry_run: bool) -> Result<VacuumReport> {
    lake.require_lake().await?;
    let lock = lake.lock().await?;
    let cutoff = log::now_ms().saturating_sub((retention_hours as i64).saturating_mul(3_600_000));
    let mut report = VacuumReport {
        retention_hours,
        dry_run,
        ..Default::default()
    };
    for table in Table::ALL {
        for file in txn::vacuum_candidates(lake, lock.snapshot(), table, cutoff).await? {
            let rel = format!("{}/{}", table.name(), file.rel);
            if !dry_run {
                let hashes = ids::ids_path(Path::new(&rel));
                for p in [rel.clone(), hashes.to_string_lossy().into_owned()] {
                    match lake.remote() {
                        Some(r) => r.delete(&p).await?,
                        None => {
                            let p = lake.root().join(&p);
                            match std::fs::remove_file(&p) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => return Err(Error::io("cannot delete", &p, e)),
                            }
                        }
                    }
                }
            }
            report.files += 1;
            report.bytes += file.size;
            report.paths.push(rel);
        }
    }
    Ok(report)
}
