//! `lake doctor`: what lies in a local lake beside its versions, and what to do about it.
//!
//! Every command already ignores or works around these (a stray name in a log is not an entry,
//! a damaged checkpoint is read around, an interrupted writer's staging is removed by the next
//! writer); the doctor lists them so an operator can see what a crash, a full disk or a hand
//! left behind. It reads only: it changes nothing and takes no lock.

use std::path::Path;

use serde::Serialize;

use super::{Lake, STAGING, Table, delta, log, txn};
use crate::error::{Error, Result};

/// One thing found, and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The file or directory, relative to the lake.
    pub path: String,
    /// `stray`, `damaged` (a commit: restore it from a backup), `damaged-checkpoint` (read
    /// around), `set-aside` or `staging`.
    pub kind: &'static str,
    /// What is wrong with it, or what it is.
    pub what: String,
    /// What to do.
    pub action: String,
}

/// What `lake doctor` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DoctorReport {
    pub findings: Vec<Finding>,
    /// Data files the current version does not read (replaced by a compaction, or written by
    /// a writer that never committed): what `lake vacuum` deletes after the retention period.
    pub unneeded_files: usize,
    pub unneeded_bytes: u64,
    /// Why the lake's current version cannot be read, when it cannot (then the unneeded files
    /// are not counted).
    pub unreadable: Option<String>,
}

impl DoctorReport {
    /// Whether something needs a person: a damaged commit, which no command can read around,
    /// or a current version that cannot be read.
    pub fn needs_repair(&self) -> bool {
        self.unreadable.is_some() || self.findings.iter().any(|f| f.kind == "damaged")
    }
}

/// Looks through the local lake at `lake`.
pub async fn doctor(lake: &Lake) -> Result<DoctorReport> {
    lake.require_existing()?;
    let root = lake.root();
    let mut out = DoctorReport::default();
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };

    // The lake's own log: only `NNNNNNNNNNNNNNNNNNNN.json` are entries.
    let log_dir = root.join(log::LOG_DIR);
    for name in names(&log_dir)? {
        if !log::is_entry_name(&name) {
            out.findings.push(Finding {
                path: rel(&log_dir.join(&name)),
                kind: "stray",
                what: "not an entry of the lake's log (only names of twenty digits and .json are); every command ignores it".into(),
                action: "delete it, or move it out of the log".into(),
            });
        }
    }

    for table in Table::ALL {
        let dir = lake.table_dir(table);
        let delta_log = dir.join(delta::LOG_DIR);
        if !delta_log.is_dir() {
            continue;
        }
        for name in names(&delta_log)? {
            let path = delta_log.join(&name);
            if let Some(what) = delta::damaged_file(&path) {
                let checkpoint = delta::is_checkpoint(&name);
                out.findings.push(Finding {
                    path: rel(&path),
                    kind: if checkpoint { "damaged-checkpoint" } else { "damaged" },
                    what: if checkpoint {
                        format!("{what}; readers read the table through the commits before it")
                    } else {
                        what
                    },
                    action: if checkpoint {
                        "the next ingest, compact or vacuum moves it aside and writes a new checkpoint".into()
                    } else {
                        "restore this commit from a backup: every version after it needs it".into()
                    },
                });
            } else if !delta::is_log_name(&name) {
                out.findings.push(Finding {
                    path: rel(&path),
                    kind: "stray",
                    what: "not a commit or checkpoint of the table (a temporary file of an interrupted writer, or a file put there by hand); Delta readers ignore it".into(),
                    action: "delete it".into(),
                });
            }
        }
    }

    let aside = root.join(delta::DAMAGED_DIR);
    if aside.is_dir() {
        for table in names(&aside)? {
            for name in names(&aside.join(&table))? {
                out.findings.push(Finding {
                    path: rel(&aside.join(&table).join(&name)),
                    kind: "set-aside",
                    what: "a damaged checkpoint a writer moved out of the table's log (the table was read through its commits)".into(),
                    action: "nothing needs it: delete it once you have looked".into(),
                });
            }
        }
    }

    let staging = root.join(STAGING);
    if staging.is_dir() {
        for name in names(&staging)? {
            out.findings.push(Finding {
                path: rel(&staging.join(&name)),
                kind: "staging",
                what: "files of a writer that was interrupted (or is running now) before its commit; no version reads them".into(),
                action: "the next ingest, compact or vacuum removes it".into(),
            });
        }
    }

    let snapshot = match super::Snapshot::load(lake, &super::AsOf::Latest).await {
        Ok(s) => s,
        Err(e) => {
            out.unreadable = Some(e.to_string());
            return Ok(out);
        }
    };
    let now = log::now_ms().saturating_add(1);
    for table in Table::ALL {
        for f in txn::vacuum_candidates(lake, &snapshot, table, now).await? {
            out.unneeded_files += 1;
            out.unneeded_bytes += f.size;
        }
    }
    Ok(out)
}

/// The names in `dir`, sorted (none if it does not exist).
fn names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list", dir, e)),
    };
    let mut out: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    Ok(out)
}
