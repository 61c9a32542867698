//! A snapshot: one committed version of the whole lake, the only way readers see it.
//!
//! A snapshot names each table's Delta version (from one entry of the lake's log) and holds
//! that version's file list, so a query planned on it reads exactly those files: files a
//! compaction or an ingest adds later are not in the list, and files a compaction removes stay
//! on disk until a vacuum past the retention period. A lake still in the layout of before
//! Delta (no log yet) is read by listing its directories, as then; its first write converts it.

use std::path::{Path, PathBuf};

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use deltalake_core::DeltaTable;
use futures::StreamExt;

use super::delta::{self, DataFile};
use super::log::{Entry, LakeLog};
use super::remote::Remote;
use super::{Lake, Table, ids};

/// Under a remote lake's work directory: copies of its id-hash files.
const CACHE: &str = "_cache";
use crate::error::{Error, Result};

/// Which version of the lake to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    Latest,
    /// A lake version (as `promptgate lake history` lists them).
    Version(u64),
    /// The newest version committed at or before this time (milliseconds since the epoch).
    Time(i64),
}

impl AsOf {
    /// Parses `--as-of`: a version number, or a time as `--since` takes it (RFC 3339, or a
    /// `YYYY-MM-DD` date: its midnight, UTC).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Ok(v) = s.parse::<u64>() {
            return Ok(AsOf::Version(v));
        }
        if let Ok(us) = crate::event::parse_time_arg(s) {
            return Ok(AsOf::Time(us.div_euclid(1000)));
        }
        Err(Error::usage(format!("--as-of {s:?} is neither a lake version nor a time"))
            .with_hint("give a version number (`promptgate lake history` lists them), an RFC 3339 time such as 2026-11-26T12:00:00Z, or a date"))
    }
}

/// One table at the snapshot's version.
pub(crate) struct TableVersion {
    pub table: Table,
    pub version: u64,
    pub delta: DeltaTable,
    pub files: Vec<DataFile>,
}

/// A committed version of the lake.
pub struct Snapshot {
    lake: Lake,
    entry: Option<Entry>,
    tables: Vec<TableVersion>,
}

impl Snapshot {
    /// The snapshot of `lake` at `as_of`.
    pub async fn load(lake: &Lake, as_of: &AsOf) -> Result<Self> {
        let log = LakeLog(lake);
        let entry = match as_of {
            AsOf::Latest => log.latest().await?,
            AsOf::Version(v) => {
                let versions = log.versions().await?;
                if !versions.contains(v) {
                    let last = versions.last().copied();
                    return Err(Error::usage(format!(
                        "the lake has no version {v}{}",
                        last.map(|l| format!(" (its latest is {l})"))
                            .unwrap_or_default()
                    ))
                    .with_hint("`promptgate lake history` lists the lake's versions"));
                }
                Some(log.read(*v).await?)
            }
            AsOf::Time(ms) => {
                let found = log.at_time(*ms).await?;
                if found.is_none() {
                    let when = chrono::DateTime::from_timestamp_millis(*ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| ms.to_string());
                    return Err(Error::usage(format!(
                        "the lake has no version committed at or before {when}"
                    ))
                    .with_hint(
                        "`promptgate lake history` lists the lake's versions and their times",
                    ));
                }
                found
            }
        };
        if entry.is_none()
            && let Some(r) = lake.remote()
        {
            return Err(no_remote_lake(r).await);
        }
        let Some(entry) = entry else {
            if *as_of != AsOf::Latest {
                return Err(Error::usage(
                    "this lake has no versions yet: it is in the layout of before Delta Lake",
                )
                .with_hint("its next ingest or `promptgate compact` converts it"));
            }
            return Ok(Self {
                lake: lake.clone(),
                entry: None,
                tables: Vec::new(),
            });
        };
        // Each table's log is read and replayed on its own task: on a store the tables'
        // requests overlap instead of queueing, and on disk the replays share the cores.
        let loads = Table::ALL.into_iter().filter_map(|table| {
            let version = entry.table(table)?;
            let url = lake.table_url(table);
            Some(tokio::spawn(async move {
                let delta = delta::load(&url?, Some(version)).await?;
                let files = delta::files(&delta, table)?;
                Ok::<_, Error>(TableVersion {
                    table,
                    version,
                    delta,
                    files,
                })
            }))
        });
        let tables = futures::future::try_join_all(loads)
            .await
            .map_err(|e| Error::runtime(format!("reading a table's log failed: {e}")))?
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            lake: lake.clone(),
            entry: Some(entry),
            tables,
        })
    }

    /// The lake version, or None for a lake not yet converted to Delta.
    pub fn version(&self) -> Option<u64> {
        self.entry.as_ref().map(|e| e.version)
    }

    pub fn entry(&self) -> Option<&Entry> {
        self.entry.as_ref()
    }

    pub(crate) fn table(&self, table: Table) -> Option<&TableVersion> {
        self.tables.iter().find(|t| t.table == table)
    }

    /// Whether `table` exists in this version.
    pub fn has(&self, table: Table) -> bool {
        match &self.entry {
            Some(_) => self.table(table).is_some(),
            None => self.lake.table_dir(table).is_dir(),
        }
    }

    /// The Delta version of `table`, if it exists.
    pub fn table_version(&self, table: Table) -> Option<u64> {
        self.table(table).map(|t| t.version)
    }

    /// The data files of `table` (optionally of one day), as paths, sorted.
    pub fn files(&self, table: Table, day: Option<&str>) -> Result<Vec<PathBuf>> {
        if self.entry.is_none() {
            return self.lake.legacy_data_files(table, day);
        }
        let dir = self.lake.table_dir(table);
        Ok(self
            .data_files(table)
            .iter()
            .filter(|f| day.is_none_or(|d| f.day == d))
            .map(|f| dir.join(&f.path))
            .collect())
    }

    /// The files of `table` with their day, size and rows, paths relative to the lake (a
    /// lake of the old layout: from its directories and footers).
    pub fn file_records(&self, table: Table) -> Result<Vec<DataFile>> {
        let prefix = table.name();
        if self.entry.is_some() {
            return Ok(self
                .data_files(table)
                .iter()
                .map(|f| DataFile {
                    path: format!("{prefix}/{}", f.path),
                    ..f.clone()
                })
                .collect());
        }
        let dir = self.lake.table_dir(table);
        let mut out = Vec::new();
        for p in self.lake.legacy_data_files(table, None)? {
            let rel = p
                .strip_prefix(&dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let day = super::partition_day(&rel).to_string();
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            out.push(DataFile {
                path: format!("{prefix}/{rel}"),
                day,
                size,
                rows: None,
                ids_digest: None,
            });
        }
        Ok(out)
    }

    /// The files of `table` that may hold one of the ids whose hashes are `sorted` (ascending):
    /// where the table keeps id-hash files, those whose hashes match one or cannot be trusted;
    /// otherwise all. Of a lake on object storage, the id-hash files are downloaded once into
    /// the work directory (a data file's name is unique and never rewritten).
    pub async fn files_matching(&self, table: Table, sorted: &[u64]) -> Result<Vec<DataFile>> {
        if self.entry.is_none() {
            return self.file_records(table).map(|files| {
                files
                    .into_iter()
                    .map(|f| DataFile {
                        path: f.path[table.name().len() + 1..].to_string(),
                        ..f
                    })
                    .collect()
            });
        }
        let files = self.data_files(table);
        if !ids::has_id_hashes(table) {
            return Ok(files.to_vec());
        }
        let dir = self.lake.table_dir(table);
        let mut scratch = Vec::new();
        let Some(remote) = self.lake.remote() else {
            return Ok(files
                .iter()
                .filter(|f| {
                    let digest = f.ids_digest.as_deref();
                    ids::any_match(&dir.join(&f.path), digest, sorted, &mut scratch) != Some(false)
                })
                .cloned()
                .collect());
        };
        let cache = self.lake.root().join(CACHE).join(table.name());
        let local = |f: &DataFile| ids::ids_path(&cache.join(&f.path));
        let missing: Vec<&DataFile> = files.iter().filter(|f| !local(f).is_file()).collect();
        futures::stream::iter(missing)
            .for_each_concurrent(8, |f| {
                let rel = ids::ids_path(Path::new(&f.path));
                let rel = format!("{}/{}", table.name(), rel.to_string_lossy());
                let to = local(f);
                async move {
                    // Without its id-hash file a data file is read whole: not an error here.
                    let _ = remote.download(&rel, &to).await;
                }
            })
            .await;
        Ok(files
            .iter()
            .filter(|f| {
                let digest = f.ids_digest.as_deref();
                ids::any_match_in(&local(f), f.size, digest, sorted, &mut scratch) != Some(false)
            })
            .cloned()
            .collect())
    }

    /// Registers just `files` of `table` (from [`Snapshot::files_matching`]: paths relative to
    /// the table; no `date` column) under `name`.
    pub fn register_files(
        &self,
        ctx: &SessionContext,
        files: &[DataFile],
        table: Table,
        name: &str,
    ) -> Result<()> {
        match self.lake.remote() {
            None => {
                let dir = self.lake.table_dir(table);
                let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(&f.path)).collect();
                super::register_files(ctx, &paths, table, name)
            }
            Some(r) => {
                let (root, store) = r.store();
                ctx.register_object_store(&root, store);
                let urls = files
                    .iter()
                    .map(|f| {
                        let url = r.object_url(&format!("{}/{}", table.name(), f.path));
                        Ok(ListingTableUrl::parse(url)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                super::register_file_urls(ctx, urls, table, name)
            }
        }
    }

    /// A local copy of `file` of `table`: the file itself on local disk; of a lake on object
    /// storage, a download into `scratch`.
    pub async fn local_copy(
        &self,
        table: Table,
        file: &DataFile,
        scratch: &Path,
    ) -> Result<PathBuf> {
        match self.lake.remote() {
            None => Ok(self.lake.table_dir(table).join(&file.path)),
            Some(r) => {
                let to = scratch.join(table.name()).join(&file.path);
                r.download(&format!("{}/{}", table.name(), file.path), &to)
                    .await?;
                Ok(to)
            }
        }
    }

    /// The log's records of the files of `table`.
    pub(crate) fn data_files(&self, table: Table) -> &[DataFile] {
        self.table(table).map_or(&[], |t| t.files.as_slice())
    }

    /// The `date` partitions of `table` that hold files, sorted.
    pub fn days(&self, table: Table) -> Result<Vec<String>> {
        let mut days: Vec<String> = if self.entry.is_none() {
            self.lake
                .partition_dirs(table)?
                .iter()
                .filter_map(|p| {
                    p.file_name()?
                        .to_str()?
                        .strip_prefix("date=")
                        .map(str::to_string)
                })
                .collect()
        } else {
            self.data_files(table)
                .iter()
                .map(|f| f.day.clone())
                .collect()
        };
        days.sort();
        days.dedup();
        Ok(days)
    }

    /// Registers `table` as of this snapshot under `name`. `string_views`: see
    /// [`Lake::register_string_views`].
    pub fn register(
        &self,
        ctx: &SessionContext,
        table: Table,
        name: &str,
        string_views: bool,
    ) -> Result<()> {
        if self.entry.is_none() {
            return if string_views {
                self.lake.register_string_views(ctx, table, name)
            } else {
                self.lake.register(ctx, table, name)
            };
        }
        let Some(t) = self.table(table) else {
            return Err(Error::runtime(format!(
                "{} does not exist in version {} of the lake",
                table.name(),
                self.version().unwrap_or(0)
            )));
        };
        delta::register(ctx, &t.delta, table, name, string_views)
    }
}

impl Lake {
    /// Fails with a hint when there is no lake here (checked on the store for a remote lake),
    /// for commands that must not create one.
    pub async fn require_lake(&self) -> Result<()> {
        match self.remote() {
            None => self.require_existing(),
            Some(r) => match LakeLog(self).versions().await?.is_empty() {
                true => Err(no_remote_lake(r).await),
                false => Ok(()),
            },
        }
    }
}

/// Why a remote lake has no log: nothing under its prefix, or files with no lake log (a copy
/// of a lake of the old layout, which only a local writer converts).
async fn no_remote_lake(r: &Remote) -> Error {
    let tables = r.has_dir(crate::event::EVENTS_TABLE).await.unwrap_or(false);
    match tables {
        false => Error::input(format!("no lake at {}", r.url())).with_hint(
            "copy a local lake there (README: \"A lake on S3\"), or check the bucket, the prefix and AWS_ENDPOINT_URL",
        ),
        true => Error::input(format!(
            "{} holds tables but no lake log: a lake of the layout of before Delta Lake",
            r.url()
        ))
        .with_hint("convert the local lake (`promptgate lake convert`) and copy it again"),
    }
}
