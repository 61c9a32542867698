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

use super::{Lake, Table, sync_dir, write_synced_temp};
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
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io("cannot list", &d, e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(versions_named(names))
}

/// The versions among the names of files in the log directory, ascending: only names of exactly
/// twenty ASCII digits and `.json` are entries; temp files and anything else beside the log
/// (`+0000000000000000099.json` parses as a number, but is not an entry) are ignored.
fn versions_named(names: impl IntoIterator<Item = String>) -> Vec<u64> {
    let mut out: Vec<u64> = names
        .into_iter()
        .filter(|name| is_entry_name(name))
        .filter_map(|name| name[..20].parse::<u64>().ok())
        .collect();
    out.sort_unstable();
    out
}

/// Whether `name` is the name of an entry of the lake's log: twenty ASCII digits and `.json`.
pub fn is_entry_name(name: &str) -> bool {
    name.strip_suffix(".json")
        .is_some_and(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
}

/// The entry of lake version `version`.
pub fn read(root: &Path, version: u64) -> Result<Entry> {
    let path = entry_path(root, version);
    let text = fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    parse(&text, &path.display().to_string(), version)
}

/// Checks that `text`, read from `name`, is the entry of `version` and names known tables.
fn parse(text: &[u8], name: &str, version: u64) -> Result<Entry> {
    let entry: Entry = serde_json::from_slice(text).map_err(|e| {
        Error::runtime(format!("{name} is not a lake log entry: {e}"))
            .with_hint("the lake's log was changed by hand; restore the file from a backup")
    })?;
    if entry.version != version {
        return Err(
            Error::runtime(format!("{name} says it is version {}", entry.version))
                .with_hint("the lake's log was changed by hand; restore the file from a backup"),
        );
    }
    for table in entry.tables.keys() {
        if Table::from_name(table).is_none() {
            return Err(Error::runtime(format!(
                "{name} names an unknown table {table:?}"
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

/// The log of a lake wherever it is: on local disk (the functions above) or on object storage.
/// Readers go through this; writers, which only run on local lakes, use the functions above.
pub struct LakeLog<'a>(pub &'a Lake);

impl LakeLog<'_> {
    /// The lake's versions, ascending.
    pub async fn versions(&self) -> Result<Vec<u64>> {
        match self.0.remote() {
            None => versions(self.0.root()),
            Some(r) => Ok(versions_named(r.list(LOG_DIR).await?)),
        }
    }

    /// The entry of `version`.
    pub async fn read(&self, version: u64) -> Result<Entry> {
        match self.0.remote() {
            None => read(self.0.root(), version),
            Some(r) => {
                let rel = format!("{LOG_DIR}/{version:020}.json");
                let text = r.get(&rel).await?;
                parse(&text, &format!("{}{rel}", r.url()), version)
            }
        }
    }

    /// The newest entry, if the lake has a log.
    pub async fn latest(&self) -> Result<Option<Entry>> {
        match self.versions().await?.last() {
            Some(v) => Ok(Some(self.read(*v).await?)),
            None => Ok(None),
        }
    }

    /// Writes `entry` if no entry of its version exists (create-if-absent: of two writers
    /// exactly one wins); false, writing nothing, when the version was taken.
    pub async fn write(&self, entry: &Entry) -> Result<bool> {
        match self.0.remote() {
            None => write(self.0.root(), entry),
            Some(r) => {
                let bytes = serde_json::to_vec(entry).expect("entry serializes");
                r.put_if_absent(&format!("{LOG_DIR}/{:020}.json", entry.version), bytes)
                    .await
            }
        }
    }

    /// The newest entry committed at or before `ms`. Entries are committed one at a time (by
    /// writers holding the lake's lock or lease), so their times ascend with their versions: a
    /// binary search reads about log2(versions) of them, which on a store is that many requests.
    pub async fn at_time(&self, ms: i64) -> Result<Option<Entry>> {
        let versions = self.versions().await?;
        // The first position whose entry is later than `ms`.
        let (mut lo, mut hi) = (0usize, versions.len());
        let mut found = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.read(versions[mid]).await?;
            if e.timestamp_ms <= ms {
                lo = mid + 1;
                found = Some(e);
            } else {
                hi = mid;
            }
        }
        // `found` is the last entry read at or before `ms`; the one just before `lo` is wanted.
        match (lo, found) {
            (0, _) => Ok(None),
            (_, Some(e)) if e.version == versions[lo - 1] => Ok(Some(e)),
            _ => Ok(Some(self.read(versions[lo - 1]).await?)),
        }
    }
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

    #[test]
    fn only_twenty_digit_names_are_entries() {
        let names = [
            "00000000000000000001.json",
            "+0000000000000000099.json",
            " 0000000000000000098.json",
            "00000000000000000002.json.tmp",
            "0000000000000000003.json",
            "00000000000000000000.json",
        ];
        assert_eq!(versions_named(names.map(String::from)), vec![0, 1]);
    }

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
        let lake = Lake::new(root);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let at = |ms| rt.block_on(LakeLog(&lake).at_time(ms)).unwrap();
        assert_eq!(at(150), Some(entry(0, 100)));
        assert_eq!(at(99), None);
        assert_eq!(at(i64::MAX), Some(entry(1, 200)));
        // Files beside the log that are not entries are ignored.
        fs::write(dir.path().join(LOG_DIR).join("notes.txt"), "x").unwrap();
        assert_eq!(versions(root).unwrap(), vec![0, 1]);
        // Many versions: the newest at or before each time, as a scan would find it.
        for v in 2..40 {
            assert!(write(root, &entry(v, 100 * (v as i64 + 1))).unwrap());
        }
        for ms in [
            99, 100, 150, 199, 200, 201, 1_999, 2_000, 3_950, 4_000, 4_001,
        ] {
            let scan = (0..40u64)
                .map(|v| entry(v, 100 * (v as i64 + 1)))
                .rfind(|e| e.timestamp_ms <= ms);
            assert_eq!(at(ms), scan, "at {ms}");
        }
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
