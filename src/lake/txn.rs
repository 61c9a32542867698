//! Writing the lake: the writer lock, recovery, conversion of a lake of the old layout, and
//! transactions that commit files to the Delta tables and then the lake's next version.
//!
//! A transaction stages its files under `_staging/<id>/`, moves them to their partition
//! directories (where no reader looks: readers read the files a table version lists), commits
//! each table it changes as one Delta commit at the version it read (never retried blindly: a
//! version taken by another writer fails the commit), and finally writes the lake's next log
//! entry with create-if-absent. A failure before that entry undoes the table commits it made;
//! a writer killed before it leaves table versions no entry names, which the next writer undoes
//! (see [`WriteLock`]). Files of undone commits are removed by the next vacuum.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use datafusion::prelude::SessionContext;
use deltalake_core::kernel::Action;
use serde::{Deserialize, Serialize};

use super::delta::{self, DataFile, Operation};
use super::log::{self, Entry, LakeLog};
use super::snapshot::{AsOf, Snapshot};
use super::{Lake, QUARANTINE, STAGING, Table, ids, sync_dir};
use crate::error::{Error, Result};
use crate::event;

/// Tables in the order a transaction commits them: the events last, so that a reader of the
/// tables' latest Delta versions (another tool, not through the lake's log) never sees an
/// indexed label whose event it cannot see.
const COMMIT_ORDER: [Table; 4] = [
    Table::Reviews,
    Table::Labels,
    Table::LabeledEvents,
    Table::Events,
];

/// The lake's writer lock. While it is held no other promptgate process on this machine writes
/// the lake; the Delta commits at an expected version and the create-if-absent log entry keep
/// two writers that do get past it (another machine on a shared disk) from both committing.
pub struct WriteLock {
    _file: File,
    /// Of a lake on object storage: the writer lease (see `lease`).
    lease: Option<super::lease::Lease>,
    lake: Lake,
    base: Snapshot,
}

impl Lake {
    /// Takes the lake's writer lock (waiting for another writer to finish if need be), creates
    /// or converts the lake's tables, undoes what an interrupted writer left, and reads the
    /// version this writer builds on.
    pub async fn lock(&self) -> Result<WriteLock> {
        self.ensure_layout()?;
        // The lock is on the lake's directory itself: a lock file can be deleted under a
        // running writer, the directory cannot without removing the lake.
        // Of a lake on object storage: its local work directory, so one writer per machine
        // stages there; writers on other machines are kept apart by the conditional puts of
        // the Delta commits and the lake's log entry.
        let file = super::lock_exclusive_dir(self.root())?;
        let lease = match &self.remote {
            Some(r) => Some(super::lease::Lease::acquire(r.clone()).await?),
            None => None,
        };
        self.clean_staging()?;
        if LakeLog(self).latest().await?.is_none() {
            convert(self).await?;
        }
        recover(self).await?;
        upgrade_schemas(self).await?;
        let base = Snapshot::load(self, &AsOf::Latest).await?;
        Ok(WriteLock {
            _file: file,
            lease,
            lake: self.clone(),
            base,
        })
    }

    /// Removes what interrupted writers left in staging. A lake of the old layout may hold a
    /// transaction whose manifest was written: it is rolled forward first, as that layout's
    /// writers promised, before the lake is converted.
    fn clean_staging(&self) -> Result<()> {
        let staging = self.root().join(STAGING);
        let legacy = self.remote().is_none() && log::latest(self.root())?.is_none();
        for entry in super::read_dir(&staging)? {
            let dir = entry.path();
            if legacy
                && let Ok(text) = fs::read_to_string(dir.join(LEGACY_MANIFEST))
                && let Ok(m) = serde_json::from_str::<LegacyManifest>(&text)
            {
                apply_legacy_moves(self.root(), &dir, &m.moves)?;
            }
            let _ = fs::remove_dir_all(&dir);
        }
        Ok(())
    }
}

const LEGACY_MANIFEST: &str = "COMMIT.json";

#[derive(Serialize, Deserialize)]
struct LegacyManifest {
    /// (staged path, final path), relative to the lake root.
    moves: Vec<(PathBuf, PathBuf)>,
}

/// Rolls forward a transaction of the old layout. Only moves from inside that transaction's
/// own staging directory to a table's partition or the quarantine are followed: a manifest
/// naming anything else (a path outside the lake, `..`) is ignored whole.
fn apply_legacy_moves(root: &Path, tx_dir: &Path, moves: &[(PathBuf, PathBuf)]) -> Result<()> {
    let staging_rel = tx_dir.strip_prefix(root).unwrap_or(tx_dir);
    let safe = |p: &Path| {
        p.is_relative()
            && p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
    };
    let allowed_dest = |p: &Path| {
        let first = p.components().next().and_then(|c| c.as_os_str().to_str());
        first.is_some_and(|f| f == QUARANTINE || Table::from_name(f).is_some())
    };
    if !moves.iter().all(|(from, to)| {
        safe(from) && safe(to) && from.starts_with(staging_rel) && allowed_dest(to)
    }) {
        eprintln!(
            "warning: ignored the unfinished commit in {}: its manifest names paths outside the lake",
            tx_dir.display()
        );
        return Ok(());
    }
    for (from, to) in moves {
        let (from, to) = (root.join(from), root.join(to));
        if fs::symlink_metadata(&from).is_err() {
            continue; // already moved before an interruption
        }
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
        }
        fs::rename(&from, &to).map_err(|e| Error::io("cannot commit", &to, e))?;
        if let Some(parent) = to.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Gives a lake without a log its Delta tables and version 0: a new lake gets three empty
/// tables; a lake of the old layout gets its files added in place (nothing is rewritten), and
/// each table's row count is checked against the files' before the version is written.
async fn convert(lake: &Lake) -> Result<()> {
    if lake.remote().is_some() {
        return create_remote(lake).await;
    }
    let mut tables = BTreeMap::new();
    let mut converted = 0u64;
    let new_lake = Table::ALL.iter().all(|t| {
        !delta::is_table(&lake.table_dir(*t))
            && lake
                .legacy_data_files(*t, None)
                .map_or(true, |f| f.is_empty())
    });
    for table in Table::ALL {
        let dir = lake.table_dir(table);
        let url = lake.table_url(table)?;
        if delta::is_table(&dir) {
            // Converted by a run that died before writing the lake's first version.
            tables.insert(table.name().to_string(), delta::latest_version(&url).await?);
            continue;
        }
        // A lake of the old layout without the labeled-events index gets it at its next ingest;
        // the reviews table comes with the first scored review.
        if (table == Table::LabeledEvents && !new_lake && !dir.is_dir())
            || (table == Table::Reviews && !dir.is_dir())
        {
            continue;
        }
        let files = lake.legacy_data_files(table, None)?;
        let mut adds = Vec::with_capacity(files.len());
        let mut expected = 0u64;
        for f in &files {
            let rel = f
                .strip_prefix(&dir)
                .expect("file of the table")
                .to_string_lossy()
                .into_owned();
            let day = table.partitioned().then(|| super::partition_day(&rel));
            let add = delta::add_action(f, &rel, day, true).map_err(|e| {
                Error::runtime(format!("cannot convert the lake to Delta Lake: {e}")).with_hint(
                    format!(
                        "move the unreadable file out of {} and run again",
                        dir.display()
                    ),
                )
            })?;
            expected += add
                .stats
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|v| v["numRecords"].as_u64())
                .unwrap_or(0);
            adds.push(add);
        }
        let version = delta::create(&url, table, adds).await?;
        if !files.is_empty() {
            let counted = count_rows(&url, table, version).await?;
            if counted != expected {
                let _ = fs::remove_dir_all(dir.join(delta::LOG_DIR));
                return Err(Error::runtime(format!(
                    "converting {} to Delta Lake: the table reads {counted} rows but its files hold {expected}; nothing was changed",
                    dir.display()
                )));
            }
            converted += expected;
        }
        tables.insert(table.name().to_string(), version);
    }
    let entry = Entry {
        version: 0,
        timestamp_ms: log::now_ms(),
        operation: if new_lake { "create" } else { "convert" }.into(),
        tables,
    };
    if !LakeLog(lake).write(&entry).await? {
        return Err(
            Error::runtime("another writer converted the lake at the same time")
                .with_hint("run the command again"),
        );
    }
    if !new_lake {
        eprintln!(
            "converted the lake at {} to Delta Lake tables ({converted} rows, files kept in place)",
            lake.root().display()
        );
    }
    Ok(())
}

/// Rows of a table version, counted by reading its id column through a Delta scan (not from
/// the log's statistics, which came from the same footers).
/// Creates a lake on object storage: the tables of a new lake, then its version 0. A prefix
/// that holds tables but no lake log is refused (a copy of a lake of the old layout, or of a
/// lake whose log was not copied): converting it needs the local lake.
async fn create_remote(lake: &Lake) -> Result<()> {
    let r = lake.remote().expect("a remote lake");
    let mut tables = BTreeMap::new();
    for table in [Table::Events, Table::Labels, Table::LabeledEvents] {
        let url = lake.table_url(table)?;
        let version = match delta::exists(&url).await? {
            // Created by a run that died before writing the lake's first version.
            true => delta::latest_version(&url).await?,
            false if r.has_dir(table.name()).await? => {
                return Err(Error::input(format!(
                    "{} holds files of {} but no lake log: it is not a promptgate lake of this version",
                    r.url(),
                    table.name()
                ))
                .with_hint("write to an empty prefix, or copy a converted local lake there (README: \"A lake on S3\")"));
            }
            false => delta::create(&url, table, Vec::new()).await?,
        };
        tables.insert(table.name().to_string(), version);
    }
    let entry = Entry {
        version: 0,
        timestamp_ms: log::now_ms(),
        operation: "create".into(),
        tables,
    };
    if !LakeLog(lake).write(&entry).await? {
        return Err(
            Error::runtime("another writer created the lake at the same time")
                .with_hint("run the command again"),
        );
    }
    Ok(())
}

/// Gives the tables of a lake an older promptgate wrote the columns added since (nullable all,
/// so the files already there read them as null): one Delta metadata commit per such table,
/// then a lake version naming them. Readers of the versions before read the new columns as
/// null too (see [`delta::register`]), so queries see one schema either side of the upgrade.
async fn upgrade_schemas(lake: &Lake) -> Result<()> {
    let log = LakeLog(lake);
    let Some(latest) = log.latest().await? else {
        return Ok(());
    };
    let mut tables = latest.tables.clone();
    let mut added = Vec::new();
    for table in Table::ALL {
        let Some(v) = latest.table(table) else {
            continue;
        };
        let url = lake.table_url(table)?;
        if let Some((version, columns)) = delta::add_missing_columns(&url, table, v).await? {
            tables.insert(table.name().into(), version);
            added.push(format!("{} gained {}", table.name(), columns.join(", ")));
        }
    }
    if added.is_empty() {
        return Ok(());
    }
    next_entry(
        &log,
        &latest,
        "upgrade schema",
        tables,
        "while its schema was upgraded",
    )
    .await?;
    eprintln!(
        "upgraded the lake's schema to this promptgate's: {} (files written before read it as null)",
        added.join("; ")
    );
    Ok(())
}

/// Writes the lake's entry after `latest` for table versions this writer committed under its
/// lock (recovery, a schema upgrade); another writer that wrote it first is an error saying
/// `when`.
async fn next_entry(
    log: &LakeLog<'_>,
    latest: &Entry,
    operation: &str,
    tables: BTreeMap<String, u64>,
    when: &str,
) -> Result<()> {
    let entry = Entry {
        version: latest.version + 1,
        timestamp_ms: log::now_ms(),
        operation: operation.into(),
        tables,
    };
    if !log.write(&entry).await? {
        return Err(
            Error::runtime(format!("another writer changed the lake {when}"))
                .with_hint("run the command again"),
        );
    }
    Ok(())
}

async fn count_rows(url: &url::Url, table: Table, version: u64) -> Result<u64> {
    use futures::StreamExt;
    let t = delta::load(url, Some(version)).await?;
    let ctx = SessionContext::new();
    delta::register(&ctx, &t, table, "t", false)?;
    let mut stream = ctx
        .table("t")
        .await?
        .select(vec![datafusion::prelude::col(table.id_column())])?
        .execute_stream()
        .await?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

/// Undoes table versions that no lake version names: a writer died after some of its Delta
/// commits and before the lake's log entry that would have made them visible. Each such table
/// gets a commit back to the files of its named version, and the lake a version naming those.
async fn recover(lake: &Lake) -> Result<()> {
    let log = LakeLog(lake);
    let Some(latest) = log.latest().await? else {
        return Ok(());
    };
    let mut tables = latest.tables.clone();
    let mut undone = Vec::new();
    for table in Table::ALL {
        let url = lake.table_url(table)?;
        let exists = match lake.remote() {
            None => delta::is_table(&lake.table_dir(table)),
            Some(_) => latest.table(table).is_some() || delta::exists(&url).await?,
        };
        if !exists {
            continue;
        }
        if lake.remote().is_none() {
            for file in delta::set_aside_damaged_checkpoints(lake.root(), table).await? {
                eprintln!(
                    "moved a damaged checkpoint file of {} aside to {}",
                    table.name(),
                    file.display()
                );
            }
        }
        // A writer killed right after the commit that crossed a checkpoint interval never
        // wrote its checkpoint (or its checkpoint was damaged and moved aside): write it now,
        // whatever else recovery finds.
        let (head, checkpointed) = delta::ensure_checkpoint(&url).await?;
        if checkpointed {
            eprintln!(
                "wrote the checkpoint of {} version {head} that an interrupted writer left unwritten",
                table.name()
            );
        }
        match latest.table(table) {
            Some(v) if head > v => {
                tables.insert(table.name().into(), delta::restore(&url, Some(v)).await?);
                undone.push(table.name());
            }
            Some(_) => {}
            None => {
                // Created by a transaction that never committed: emptied, and still not part
                // of the lake (the labeled-events index is built whole by the next ingest).
                if delta::restore(&url, None).await? != head {
                    undone.push(table.name());
                }
            }
        }
    }
    if undone.is_empty() {
        return Ok(());
    }
    next_entry(&log, &latest, "recover", tables, "during recovery").await?;
    eprintln!(
        "undid an interrupted write to {} (it was never visible to readers)",
        undone.join(", ")
    );
    Ok(())
}

impl WriteLock {
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The lake version this writer builds on.
    pub fn snapshot(&self) -> &Snapshot {
        &self.base
    }

    /// Starts a transaction: a fresh staging directory that is committed or removed.
    pub fn begin(&self) -> Result<Transaction<'_>> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let dir = self.lake.root().join(STAGING).join(&id);
        fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        Ok(Transaction {
            lock: self,
            id,
            dir,
            moves: BTreeMap::new(),
            removes: Vec::new(),
            create: Vec::new(),
            committed: false,
        })
    }
}

/// Files written under staging, committed together by [`Transaction::commit`].
pub struct Transaction<'l> {
    lock: &'l WriteLock,
    id: String,
    dir: PathBuf,
    /// Staged path → path under the lake, both relative to the lake root. A map, not a list:
    /// an ingest of years of days reserves and discards tens of thousands of files.
    moves: BTreeMap<PathBuf, PathBuf>,
    removes: Vec<(Table, DataFile)>,
    create: Vec<Table>,
    committed: bool,
}

/// What a commit did.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// The lake version written, or None when the transaction changed no table.
    pub version: Option<u64>,
}

impl Transaction<'_> {
    /// The transaction's id (also names its quarantine directory).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Staging directory of this transaction, for scratch files that are never committed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where this transaction stages files of `table` (Hive layout, so it can be queried).
    pub fn staged_table_dir(&self, table: Table) -> PathBuf {
        self.dir.join(table.name())
    }

    fn staged_rel(&self, staged: &Path) -> PathBuf {
        staged
            .strip_prefix(self.lock.lake.root())
            .expect("staging is inside the lake")
            .to_path_buf()
    }

    /// Reserves a new file of `table` for day `day`: returns its staged path, which the caller
    /// must have written completely before [`Transaction::commit`].
    pub fn new_file(&mut self, table: Table, day: i32) -> PathBuf {
        let rel = PathBuf::from(table.name())
            .join(format!("date={}", event::day_string(day)))
            .join(format!("part-{}.parquet", uuid::Uuid::new_v4().simple()));
        let staged = self.dir.join(&rel);
        let staged_rel = self.staged_rel(&staged);
        self.moves.insert(staged_rel, rel);
        staged
    }

    /// Moves the id-hash file of `staged` (a file from [`Transaction::new_file`]) along with it.
    pub fn add_id_hashes(&mut self, staged: &Path) {
        let staged_rel = self.staged_rel(staged);
        let Some(to) = self.moves.get(&staged_rel) else {
            return;
        };
        let to = ids::ids_path(to);
        self.moves.insert(ids::ids_path(&staged_rel), to);
    }

    /// Reserves a new file `name` of a table that is not partitioned (see
    /// [`Transaction::new_file`]).
    pub fn new_table_file(&mut self, table: Table, name: &str) -> PathBuf {
        let rel = PathBuf::from(table.name()).join(name);
        let staged = self.dir.join(&rel);
        let staged_rel = self.staged_rel(&staged);
        self.moves.insert(staged_rel, rel);
        staged
    }

    /// Gives up a file reserved with [`Transaction::new_file`] (its rows were merged into
    /// another): it is deleted, with its id-hash file, and not committed.
    pub fn discard_file(&mut self, staged: &Path) -> Result<()> {
        let staged_rel = self.staged_rel(staged);
        let hashes_rel = ids::ids_path(&staged_rel);
        self.moves.remove(&staged_rel);
        self.moves.remove(&hashes_rel);
        for path in [staged.to_path_buf(), ids::ids_path(staged)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("cannot remove", &path, e)),
            }
        }
        Ok(())
    }

    /// Adds an already-written staged directory to move to `final_rel` (the quarantine).
    pub fn add_move(&mut self, staged: &Path, final_rel: PathBuf) {
        let staged_rel = self.staged_rel(staged);
        self.moves.insert(staged_rel, final_rel);
    }

    /// Removes a file of the base version from `table` in this commit (its rows were
    /// rewritten into a file of this transaction). It stays on disk for readers of older
    /// versions until a vacuum.
    pub fn remove_file(&mut self, table: Table, file: &DataFile) {
        self.removes.push((table, file.clone()));
    }

    /// Creates `table` (empty unless this transaction adds files to it) in this commit.
    pub fn create_table(&mut self, table: Table) {
        if !self.create.contains(&table) {
            self.create.push(table);
        }
    }

    /// Makes the transaction's files part of the lake's next version (see the module docs).
    /// `operation` names it in the lake's log.
    pub async fn commit(mut self, operation: &str) -> Result<Committed> {
        let lake = self.lock.lake.clone();
        let root = lake.root().to_path_buf();
        if let Some(lease) = &self.lock.lease {
            lease.check()?;
        }
        // 1. Files to their places: moved on local disk, uploaded to object storage. Readers
        // do not see them yet: no table version lists them.
        let mut parents = HashSet::new();
        // Per table: (path in the table, day, the local file whose footer describes it).
        let mut adds: BTreeMap<usize, Vec<(String, String, PathBuf)>> = BTreeMap::new();
        // Moved outside the tables (the quarantine): taken back if the commit fails.
        let mut moved_out = Vec::new();
        let mut uploaded_out = Vec::new();
        if let Some(r) = lake.remote() {
            uploaded_out = upload_all(r, &root, &self.moves).await?;
        }
        for (from, to) in &self.moves {
            let (src, dst) = (root.join(from), root.join(to));
            let footer = match lake.remote() {
                None => {
                    if let Some(parent) = dst.parent()
                        && !parents.contains(parent)
                    {
                        fs::create_dir_all(parent)
                            .map_err(|e| Error::io("cannot create", parent, e))?;
                        parents.insert(parent.to_path_buf());
                    }
                    fs::rename(&src, &dst).map_err(|e| Error::io("cannot commit", &dst, e))?;
                    dst
                }
                // Uploaded above; the staged copy describes it.
                Some(_) => src,
            };
            if let Some((table, rel, day)) = table_file(to) {
                adds.entry(table_index(table))
                    .or_default()
                    .push((rel, day, footer));
            } else if !in_a_table(to) && lake.remote().is_none() {
                moved_out.push(footer);
            }
        }
        for p in &parents {
            sync_dir(p)?;
        }
        crash_point("files");
        // 2. One Delta commit per table changed, at the version this writer read.
        let base = self
            .lock
            .base
            .entry()
            .cloned()
            .expect("a writer's lake has a log");
        let mut tables = base.tables.clone();
        // Per table committed: its new version and the actions, to undo them if a later step fails.
        let mut done: Vec<(Table, u64, Vec<Action>)> = Vec::new();
        let now = log::now_ms();
        // Compaction rewrites rows (no data change for other readers); anything else that
        // removes files replaces rows (a review scored again).
        let compacting = operation == "compact";
        let mut result = Ok(());
        for table in COMMIT_ORDER {
            let files = adds.remove(&table_index(table)).unwrap_or_default();
            let removes: Vec<&DataFile> = self
                .removes
                .iter()
                .filter(|(t, _)| *t == table)
                .map(|(_, f)| f)
                .collect();
            let creating = base.table(table).is_none();
            if files.is_empty() && removes.is_empty() && !(creating && self.create.contains(&table))
            {
                continue;
            }
            let step = async {
                let url = lake.table_url(table)?;
                let data_change = !compacting;
                let mut actions = Vec::with_capacity(files.len() + removes.len());
                for (rel, day, footer) in &files {
                    let day = table.partitioned().then_some(day.as_str());
                    actions.push(Action::Add(delta::add_action(
                        footer,
                        rel,
                        day,
                        data_change,
                    )?));
                }
                for f in &removes {
                    actions.push(Action::Remove(delta::remove_action(f, data_change, now)));
                }
                if creating && !table_exists(&lake, table, &url).await? {
                    let adds = actions
                        .into_iter()
                        .filter_map(|a| match a {
                            Action::Add(a) => Some(a),
                            _ => None,
                        })
                        .collect();
                    let v = delta::create(&url, table, adds).await?;
                    return Ok((v, Vec::new()));
                }
                let at = match base.table(table) {
                    Some(v) => v,
                    None => delta::latest_version(&url).await?,
                };
                let op = match (removes.is_empty(), compacting) {
                    (true, _) => Operation::Append,
                    (false, true) => Operation::Compact,
                    (false, false) => Operation::Replace,
                };
                let v = delta::commit(&url, at, actions.clone(), op).await?;
                Ok((v, actions))
            };
            match step.await {
                Ok((v, actions)) => {
                    done.push((table, v, actions));
                    tables.insert(table.name().to_string(), v);
                    crash_point(table.name());
                    if let Err(e) = injected_failure(table.name()) {
                        result = Err(e);
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() && !done.is_empty() {
            // 3. The lake's next version: from here on readers see the whole transaction.
            let entry = Entry {
                version: base.version + 1,
                timestamp_ms: log::now_ms(),
                operation: operation.to_string(),
                tables,
            };
            match LakeLog(&lake).write(&entry).await {
                Ok(true) => {
                    crash_point("log");
                    self.committed = true;
                    let _ = fs::remove_dir_all(&self.dir);
                    return Ok(Committed {
                        version: Some(entry.version),
                    });
                }
                Ok(false) => {
                    result = Err(Error::runtime(format!(
                        "another writer committed version {} of the lake first",
                        entry.version
                    ))
                    .with_hint("nothing of this command was committed; run it again"));
                }
                Err(e) => result = Err(e),
            }
        }
        if let Err(e) = result {
            // An ingest that is not committed leaves no quarantine either: run again, its
            // rejects are quarantined again.
            for p in &moved_out {
                let _ = fs::remove_dir_all(p).or_else(|_| fs::remove_file(p));
            }
            if let Some(r) = lake.remote() {
                for rel in &uploaded_out {
                    let _ = r.delete(rel).await;
                }
            }
            // Undo the table commits made so far (each with the inverse of its own actions,
            // so nothing another writer committed is touched); if that fails too, the next
            // writer undoes them.
            for (table, version, actions) in done.into_iter().rev() {
                let Ok(url) = lake.table_url(table) else {
                    continue;
                };
                let _ = match actions.is_empty() {
                    true => delta::restore(&url, None).await, // a table this commit created
                    false => delta::revert(&url, version, &actions, log::now_ms()).await,
                };
            }
            return Err(e);
        }
        // Nothing to commit to any table: only the quarantine moved.
        self.committed = true;
        let _ = fs::remove_dir_all(&self.dir);
        Ok(Committed::default())
    }
}

/// Whether `table` has a Delta table (on local disk: its log directory; on object storage: a
/// commit in its log).
async fn table_exists(lake: &Lake, table: Table, url: &url::Url) -> Result<bool> {
    match lake.remote() {
        None => Ok(delta::is_table(&lake.table_dir(table))),
        Some(_) => delta::exists(url).await,
    }
}

/// Uploads every staged file or directory of `moves` (staged path, path under the lake; both
/// relative to `root`) to its place on the store, eight at a time. Returns the objects written
/// outside the tables (the quarantine), which a failed commit deletes again; if an upload fails,
/// those already written are deleted before the error is returned (table files no version
/// lists are left to a vacuum, as on local disk).
async fn upload_all(
    r: &super::Remote,
    root: &Path,
    moves: &BTreeMap<PathBuf, PathBuf>,
) -> Result<Vec<String>> {
    use futures::StreamExt;
    let slash = |p: &Path| p.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
    // (local file, object path, outside the tables)
    let mut files: Vec<(PathBuf, String, bool)> = Vec::new();
    for (from, to) in moves {
        let (src, out) = (root.join(from), !in_a_table(to));
        if !src.is_dir() {
            files.push((src, slash(to), out));
            continue;
        }
        let mut stack = vec![src.clone()];
        while let Some(dir) = stack.pop() {
            for entry in super::read_dir(&dir)? {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let sub = p.strip_prefix(&src).expect("below the staged directory");
                    files.push((p.clone(), format!("{}/{}", slash(to), slash(sub)), out));
                }
            }
        }
    }
    let results: Vec<(Result<()>, String, bool)> = futures::stream::iter(files)
        .map(|(local, rel, out)| async move { (r.upload(&local, &rel).await, rel, out) })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut written_out = Vec::new();
    let mut failed = None;
    for (res, rel, out) in results {
        match res {
            Ok(()) if out => written_out.push(rel),
            Ok(()) => {}
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed {
        for rel in &written_out {
            let _ = r.delete(rel).await;
        }
        return Err(e);
    }
    Ok(written_out)
}

/// The environment variable that kills the process at a step of every commit, for the tests
/// that prove a crash anywhere leaves the lake whole: `files` (files moved into partitions),
/// a table's name (that table's Delta commit done), `log` (the lake's version written).
pub const CRASH_ENV: &str = "PROMPTGATE_CRASH_AT";

/// `PROMPTGATE_CRASH_AT=fail:<step>` makes that step fail with an error instead (the commit
/// must then undo what it did and report that nothing was committed).
fn injected_failure(step: &str) -> Result<()> {
    match std::env::var(CRASH_ENV) {
        Ok(v) if v.strip_prefix("fail:") == Some(step) => Err(Error::runtime(format!(
            "injected failure after the {step} commit"
        ))),
        _ => Ok(()),
    }
}

fn crash_point(step: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == step) {
        // SIGKILL, as `kill -9` or a power cut would: no destructors, no flushing.
        // SAFETY: getpid and kill have no preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Whether `rel` (relative to the lake) lies inside one of the tables' directories.
fn in_a_table(rel: &Path) -> bool {
    let first = rel.components().next().and_then(|c| c.as_os_str().to_str());
    first.and_then(Table::from_name).is_some()
}

fn table_index(table: Table) -> usize {
    Table::ALL
        .iter()
        .position(|t| *t == table)
        .expect("a table")
}

/// `(table, path in the table, day)` when `rel` (relative to the lake) is a table's data file.
fn table_file(rel: &Path) -> Option<(Table, String, String)> {
    let mut parts = rel.components().map(|c| c.as_os_str().to_str());
    let first = parts.next()??;
    let table = Table::from_name(first)?;
    if !table.partitioned() {
        let name = parts.next()??;
        if parts.next().is_some() || !name.ends_with(".parquet") {
            return None;
        }
        return Some((table, name.to_string(), String::new()));
    }
    let part = parts.next()??;
    let name = parts.next()??;
    if parts.next().is_some() || !name.ends_with(".parquet") {
        return None;
    }
    let day = part.strip_prefix("date=")?.to_string();
    Some((table, format!("{part}/{name}"), day))
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.committed {
            // Files already moved to partitions but never committed are removed by a vacuum.
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A data file a vacuum may delete: its path in the table, its size, and when it left the
/// table (or, never committed, when it was written), in milliseconds.
pub(crate) struct Unneeded {
    pub rel: String,
    pub size: u64,
}

/// Files in `table`'s partitions that no version since `cutoff_ms` needs: removed from the
/// table before the cutoff, or never committed and older than it. Found by listing the table's
/// directories, or its objects on a store.
pub(crate) async fn vacuum_candidates(
    lake: &Lake,
    snapshot: &Snapshot,
    table: Table,
    cutoff_ms: i64,
) -> Result<Vec<Unneeded>> {
    let Some(t) = snapshot.table(table) else {
        return Ok(Vec::new());
    };
    let live: HashSet<&str> = t.files.iter().map(|f| f.path.as_str()).collect();
    let tombstones: HashMap<String, i64> = delta::tombstones(&t.delta).await?;
    // (path in the table, size, modified ms) of every data file there.
    let mut present: Vec<(String, u64, i64)> = Vec::new();
    match lake.remote() {
        Some(r) => {
            for (rel, size, modified) in r.list_recursive(table.name()).await? {
                present.push((rel, size, modified));
            }
        }
        None => {
            let dir = lake.table_dir(table);
            for day_dir in lake.partition_dirs(table)? {
                for entry in super::read_dir(&day_dir)? {
                    let p = entry.path();
                    let Ok(rel) = p.strip_prefix(&dir) else {
                        continue;
                    };
                    let meta = entry.metadata().ok();
                    let modified = meta
                        .as_ref()
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(i64::MAX, |d| d.as_millis() as i64);
                    present.push((
                        rel.to_string_lossy()
                            .replace(std::path::MAIN_SEPARATOR, "/"),
                        meta.map_or(0, |m| m.len()),
                        modified,
                    ));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (rel, size, modified) in present {
        let name = rel.rsplit('/').next().unwrap_or_default();
        // Data files only (their id-hash files go with them), in a partition or at the top of
        // a table that has none; nothing of the Delta log.
        let depth_ok = match table.partitioned() {
            true => rel.matches('/').count() == 1 && rel.starts_with("date="),
            false => !rel.contains('/'),
        };
        if !name.ends_with(".parquet") || name.starts_with('.') || !depth_ok {
            continue;
        }
        if live.contains(rel.as_str()) {
            continue;
        }
        let removed_at = tombstones.get(&rel).copied().unwrap_or(modified);
        if removed_at < cutoff_ms {
            out.push(Unneeded { rel, size });
        }
    }
    Ok(out)
}
