//! The lake's own log: one small JSON file per lake version, naming the Delta version of each
//! table that makes up that version of the lake.
//!
//! ```text
//! <lake>/_promptgate/log/00000000000000000007.json
//!   {"version":7,"timestamp_ms":…,"operation":"ingest","tables":{"llm_events":5,"llm_labels":2,"llm_labeled_events":3}}
//! ```
//!
//! An ingest commits to up to three Delta tables (events, labels, the labeled-events index);
//! each Delta commit is atomic, but three of them are not. The lake's version is what makes
//! them one: a writer commits its tables, then writes the next entry here with
//! create-if-absent. Readers open every table at the versions of one entry, so they see all of
//! an ingest or none of it. A table version no entry names (a writer died between its Delta
//! commits and its entry) is undone by the next writer before it writes. `--as-of` picks an
//! entry by number or time.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Table, sync_dir, write_synced_temp};
use crate::error::{Error, Result};

pub const LOG_DIR: &str = "_promptgate/log";

/// One version of the lake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u64,
    /// When it was committed, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// What wrote it: `create`, `convert`, `ingest`, `compact`.
    pub operation: String,
    /// Delta version of each table, by table name. A table that is not named does not exist
    /// in this version (a lake converted before it had the labeled-events index).
    pub tables: BTreeMap<String, u64>,
}

impl Entry {
    pub fn table(&self, table: Table) -> Option<u64> {
        self.tables.get(table.name()).copied()
    }
}

fn dir(root: &Path) -> PathBuf {
    root.join(LOG_DIR)
}

fn entry_path(root: &Path, version: u64) -> PathBuf {
    dir(root).join(format!("{version:020}.json"))
}

/// Lake versions on disk, ascending.
pub fn versions(root: &Path) -> Result<Vec<u64>> {
    let d = dir(root);
    let entries = match fs::read_dir(&d) {
        Ok(it) => it,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list", &d, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io("cannot list", &d, e))?;
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue; // temp files and anything else beside the log are not entries
        };
        if stem.len() == 20
            && let Ok(v) = stem.parse::<u64>()
        {
            out.push(v);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The entry of lake version `version`.
pub fn read(root: &Path, version: u64) -> Result<Entry> {
    let path = entry_path(root, version);
    let text = fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let entry: Entry = serde_json::from_slice(&text).map_err(|e| {
        Error::runtime(format!("{} is not a lake log entry: {e}", path.display()))
            .with_hint("the lake's log was changed by hand; restore the file from a backup")
    })?;
    if entry.version != version {
        return Err(Error::runtime(format!(
            "{} says it is version {}",
            path.display(),
            entry.version
        ))
        .with_hint("the lake's log was changed by hand; restore the file from a backup"));
    }
    for name in entry.tables.keys() {
        if Table::from_name(name).is_none() {
            return Err(Error::runtime(format!(
                "{} names an unknown table {name:?}",
                path.display()
            )));
        }
    }
    Ok(entry)
}

/// The newest entry, if the lake has a log.
pub fn latest(root: &Path) -> Result<Option<Entry>> {
    match versions(root)?.last() {
        Some(v) => Ok(Some(read(root, *v)?)),
        None => Ok(None),
    }
}

/// The newest entry committed at or before `ms`.
pub fn at_time(root: &Path, ms: i64) -> Result<Option<Entry>> {
    let mut found = None;
    for v in versions(root)? {
        let e = read(root, v)?;
        if e.timestamp_ms <= ms {
            found = Some(e);
        } else {
            break;
        }
    }
    Ok(found)
}

/// Writes `entry` if no entry of its version exists: a temp file, fsynced, then linked into
/// place (`link` fails when the name exists, so of two writers exactly one wins). Returns
/// false, writing nothing, when the version was taken.
pub fn write(root: &Path, entry: &Entry) -> Result<bool> {
    let d = dir(root);
    fs::create_dir_all(&d).map_err(|e| Error::io("cannot create", &d, e))?;
    let path = entry_path(root, entry.version);
    let bytes = serde_json::to_vec(entry).expect("entry serializes");
    let tmp = write_synced_temp(&path, &bytes)?;
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(&d)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("cannot write", &path, e)),
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: u64, ts: i64) -> Entry {
        Entry {
            version: v,
            timestamp_ms: ts,
            operation: "ingest".into(),
            tables: BTreeMap::from([("llm_events".to_string(), v)]),
        }
    }

    #[test]
    fn a_version_is_written_once_and_read_back_by_number_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(latest(root).unwrap(), None);
        assert!(write(root, &entry(0, 100)).unwrap());
        assert!(write(root, &entry(1, 200)).unwrap());
        // A second writer of version 1 loses and changes nothing.
        let mut other = entry(1, 999);
        other.operation = "compact".into();
        assert!(!write(root, &other).unwrap());
        assert_eq!(read(root, 1).unwrap(), entry(1, 200));
        assert_eq!(latest(root).unwrap(), Some(entry(1, 200)));
        assert_eq!(at_time(root, 150).unwrap(), Some(entry(0, 100)));
        assert_eq!(at_time(root, 99).unwrap(), None);
        // Files beside the log that are not entries are ignored.
        fs::write(dir.path().join(LOG_DIR).join("notes.txt"), "x").unwrap();
        assert_eq!(versions(root).unwrap(), vec![0, 1]);
    }

    #[test]
    fn a_tampered_entry_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, &entry(0, 1)).unwrap();
        fs::write(
            entry_path(root, 0),
            br#"{"version":3,"timestamp_ms":1,"operation":"x","tables":{}}"#,
        )
        .unwrap();
        let e = read(root, 0).unwrap_err().to_string();
        assert!(e.contains("says it is version 3"), "{e}");
        fs::write(
            entry_path(root, 0),
            br#"{"version":0,"timestamp_ms":1,"operation":"x","tables":{"../etc":1}}"#,
        )
        .unwrap();
        let e = read(root, 0).unwrap_err().to_string();
        assert!(e.contains("unknown table"), "{e}");
    }
}
