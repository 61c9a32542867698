//! A lake on object storage: `--lake s3://bucket/prefix` (AWS S3 or any S3-compatible store).
//!
//! The layout under the prefix is the local one (see the module above): one Delta table per
//! directory, the lake's log under `_promptgate/log/`. Readers need nothing a store lacks: a
//! version is a list of files named by logs, so they read a remote lake through the same
//! snapshot code as a local one. Writers stage files in a local work directory
//! ([`Remote::work_dir`]) and upload them before committing; where a local writer renames,
//! links or locks, a remote one uses conditional puts (the Delta commits, the lake's log entry,
//! the writer lease of `lease`).
//!
//! Credentials and endpoint come from the usual `AWS_*` environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` for a store
//! that is not AWS, `AWS_ALLOW_HTTP=true` for one without TLS), read by the `object_store`
//! crate and by delta-rs alike.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use super::Table;
use crate::error::{Error, Result};

/// The S3 store of the bucket `url` names, configured from the `AWS_*` environment (the
/// credential chain, region, endpoint and `AWS_ALLOW_HTTP` of `object_store`).
fn s3_store(url: &Url) -> object_store::Result<object_store::aws::AmazonS3> {
    AmazonS3Builder::from_env().with_url(url.as_str()).build()
}

/// Lets delta-rs open `s3://` and `s3a://` tables with `object_store`'s own S3 client and
/// delta-rs' default log store, whose commits are conditional puts (`If-None-Match: *`, which S3
/// and the S3-compatible stores support): the same store and the same kind of commit as the
/// lake's own log and lease. This replaces the `deltalake-aws` crate, which brought the AWS SDK
/// for credentials alone (see the README's notes on dependencies).
fn register_delta_s3() {
    use deltalake_core::logstore::{logstore_factories, object_store_factories};
    let stores = Arc::new(DeltaS3);
    for scheme in ["s3://", "s3a://"] {
        let scheme = Url::parse(scheme).expect("a scheme is a URL");
        object_store_factories().insert(scheme.clone(), stores.clone());
        logstore_factories().insert(scheme, stores.clone());
    }
}

/// delta-rs' object store and log store factories for S3 (see [`register_delta_s3`]).
struct DeltaS3;

impl deltalake_core::logstore::ObjectStoreFactory for DeltaS3 {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &deltalake_core::logstore::StorageConfig,
    ) -> deltalake_core::DeltaResult<(deltalake_core::logstore::ObjectStoreRef, ObjectPath)> {
        let store = s3_store(url)?;
        let path = ObjectPath::from_url_path(url.path())?;
        Ok((Arc::new(store), path))
    }
}

impl deltalake_core::logstore::LogStoreFactory for DeltaS3 {
    fn with_options(
        &self,
        prefixed_store: deltalake_core::logstore::ObjectStoreRef,
        root_store: deltalake_core::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake_core::logstore::StorageConfig,
    ) -> deltalake_core::DeltaResult<deltalake_core::logstore::LogStoreRef> {
        Ok(deltalake_core::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// A lake under a prefix of an object store.
#[derive(Debug)]
pub struct Remote {
    /// `s3://bucket/prefix/`, always with the trailing slash.
    url: Url,
    store: Arc<dyn ObjectStore>,
    /// The prefix within the bucket (empty for a lake at the bucket's root).
    prefix: ObjectPath,
}

/// The environment variable that sets a remote lake's local work directory.
pub const WORK_DIR_ENV: &str = "PROMPTGATE_WORK_DIR";

const CREDENTIALS_HINT: &str = "check that the bucket exists and the URL names it, and the credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION (and AWS_ENDPOINT_URL, with AWS_ALLOW_HTTP=true for plain http, for a store that is not AWS)";

impl Remote {
    /// The remote lake `arg` names, or None when `arg` is a local path (no `scheme://`, or
    /// `file://`). Schemes other than S3's are refused with a hint.
    pub fn parse(arg: &str) -> Result<Option<Remote>> {
        let Some((scheme, _)) = arg.split_once("://") else {
            return Ok(None);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => return Ok(None),
            "s3" | "s3a" => {}
            other => {
                return Err(Error::usage(format!(
                    "--lake {arg}: {other}:// is not a store promptgate reads"
                ))
                .with_hint(
                    "give a local directory or an s3://bucket/prefix URL (S3 and S3-compatible stores)",
                ));
            }
        }
        let mut url = Url::parse(arg).map_err(|e| {
            Error::usage(format!("--lake {arg} is not a valid URL: {e}"))
                .with_hint("write it as s3://bucket/prefix")
        })?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::usage(format!("--lake {arg} names no bucket"))
                .with_hint("write it as s3://bucket/prefix"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::usage(format!(
                "--lake {arg}: a lake URL takes no query or fragment"
            ))
            .with_hint("write it as s3://bucket/prefix"));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let prefix = ObjectPath::parse(url.path().trim_matches('/')).map_err(|e| {
            Error::usage(format!("--lake {arg}: {e}"))
                .with_hint("a prefix is made of non-empty segments without `.` or `..`")
        })?;
        static HANDLERS: Once = Once::new();
        // delta-rs opens s3:// tables through the factories this registers (once per process).
        HANDLERS.call_once(register_delta_s3);
        let store = s3_store(&url).map_err(|e| {
            Error::usage(format!("cannot use the store of {arg}: {e}")).with_hint(CREDENTIALS_HINT)
        })?;
        Ok(Some(Remote {
            url,
            store: Arc::new(store),
            prefix,
        }))
    }

    /// `s3://bucket/prefix/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL of the object at `rel`.
    pub fn object_url(&self, rel: &str) -> String {
        format!("{}{}", self.url, rel.trim_start_matches('/'))
    }

    /// The store, and the URL of its root (`s3://bucket`), to register with a DataFusion session.
    pub fn store(&self) -> (Url, Arc<dyn ObjectStore>) {
        let mut root = self.url.clone();
        root.set_path("");
        (root, self.store.clone())
    }

    /// The local directory where a writer of this lake stages its files before uploading them
    /// and keeps copies of the id-hash files it has read: `PROMPTGATE_WORK_DIR`, else
    /// `$XDG_CACHE_HOME` (or `~/.cache`, or the temp directory) `/promptgate/s3/<bucket>/<prefix>`.
    pub fn work_dir(&self) -> PathBuf {
        if let Some(dir) = std::env::var_os(WORK_DIR_ENV).filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        let mut dir = cache
            .join("promptgate")
            .join(self.url.scheme())
            .join(self.url.host_str().unwrap_or("bucket"));
        for part in self.prefix.parts() {
            dir.push(part.as_ref());
        }
        dir
    }

    /// The URL of `table`'s Delta table.
    pub fn table_url(&self, table: Table) -> Result<Url> {
        self.url
            .join(&format!("{}/", table.name()))
            .map_err(|e| Error::runtime(format!("{}: {e}", self.url)))
    }

    /// The object at `rel` (a `/`-separated path under the lake), relative to the lake's prefix.
    fn path(&self, rel: &str) -> ObjectPath {
        rel.split('/')
            .filter(|s| !s.is_empty())
            .fold(self.prefix.clone(), |p, part| p.join(part))
    }

    fn err(&self, doing: &str, rel: &str, e: object_store::Error) -> Error {
        Error::runtime(format!("cannot {doing} {}{rel}: {e}", self.url)).with_hint(CREDENTIALS_HINT)
    }

    /// The names of the objects directly under the directory `rel` (not of deeper ones).
    pub async fn list(&self, rel: &str) -> Result<Vec<String>> {
        let dir = self.path(rel);
        let listed = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| self.err("list", rel, e))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect())
    }

    /// Every object under the directory `rel`, at any depth: (its path under `rel`, size,
    /// last modified in milliseconds since the epoch).
    pub async fn list_recursive(&self, rel: &str) -> Result<Vec<(String, u64, i64)>> {
        let dir = self.path(rel);
        let base = format!("{}/", dir.as_ref());
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| self.err("list", rel, e))?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let path = o.location.as_ref().strip_prefix(&base)?.to_string();
                Some((path, o.size, o.last_modified.timestamp_millis()))
            })
            .collect())
    }

    /// Whether anything lies under the directory `rel`.
    pub async fn has_dir(&self, rel: &str) -> Result<bool> {
        let dir = self.path(rel);
        let first = self
            .store
            .list(Some(&dir))
            .try_next()
            .await
            .map_err(|e| self.err("list", rel, e))?;
        Ok(first.is_some())
    }

    /// The lake's `sub/` prefix as a store of its own (the registry beside a remote lake).
    pub fn child(&self, sub: &str) -> Result<Remote> {
        let url = self
            .url
            .join(&format!("{}/", sub.trim_matches('/')))
            .map_err(|e| Error::usage(format!("{}{sub}: {e}", self.url)))?;
        Ok(Remote {
            prefix: self.path(sub),
            url,
            store: self.store.clone(),
        })
    }

    /// Writes `bytes` to `rel`, replacing what is there.
    pub async fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        self.put_mode(rel, bytes, PutMode::Overwrite)
            .await
            .map(|_| ())
    }

    /// Writes `bytes` to `rel` unless an object is there already (a conditional put, so of two
    /// writers exactly one wins); false when it was there.
    pub async fn put_if_absent(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        Ok(self.put_mode(rel, bytes, PutMode::Create).await?.is_some())
    }

    /// Puts `bytes` at `rel` in `mode` (create-if-absent or update-if-unchanged); the new ETag,
    /// or None when the condition failed (the object exists, or changed).
    pub async fn put_mode(
        &self,
        rel: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> Result<Option<String>> {
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(rel), PutPayload::from(bytes), opts)
            .await
        {
            Ok(put) => Ok(Some(put.e_tag.unwrap_or_default())),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(self.err("write", rel, e)),
        }
    }

    /// The bytes and ETag of the object at `rel`, or None when it is not there.
    pub async fn get_versioned(&self, rel: &str) -> Result<Option<(Vec<u8>, String)>> {
        match self.store.get(&self.path(rel)).await {
            Ok(got) => {
                let etag = got.meta.e_tag.clone().unwrap_or_default();
                let bytes = got.bytes().await.map_err(|e| self.err("read", rel, e))?;
                Ok(Some((bytes.to_vec(), etag)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("read", rel, e)),
        }
    }

    /// Uploads the local file `local` to `rel`, streaming it (multipart for large files).
    pub async fn upload(&self, local: &Path, rel: &str) -> Result<()> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::io("cannot read", local, e))?;
        let mut out = object_store::buffered::BufWriter::new(self.store.clone(), self.path(rel));
        let copied = tokio::io::copy(&mut file, &mut out).await;
        let done = match copied {
            Ok(_) => tokio::io::AsyncWriteExt::shutdown(&mut out).await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            let _ = out.abort().await;
            return Err(Error::runtime(format!(
                "cannot upload {} to {}: {e}",
                local.display(),
                self.object_url(rel)
            ))
            .with_hint(CREDENTIALS_HINT));
        }
        Ok(())
    }

    /// Downloads the object at `rel` to the local file `local` (through a temp file beside it).
    pub async fn download(&self, rel: &str, local: &Path) -> Result<()> {
        let bytes = self.get(rel).await?;
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
        }
        super::write_file_atomic(local, &bytes)
    }

    /// Deletes the object at `rel` (nothing when it is not there).
    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", rel, e)),
        }
    }

    /// The bytes of the object at `rel`.
    pub async fn get(&self, rel: &str) -> Result<Vec<u8>> {
        let got = self
            .store
            .get(&self.path(rel))
            .await
            .map_err(|e| self.err("read", rel, e))?;
        let bytes = got.bytes().await.map_err(|e| self.err("read", rel, e))?;
        Ok(bytes.to_vec())
    }
}

/// Runs `f` to completion from synchronous code (the registry's API is synchronous; on a store
/// its reads and writes are not): on the current Tokio runtime when it can block, else on a
/// runtime of its own.
pub fn block_on<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    use tokio::runtime::{Builder, Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        // Inside a single-threaded runtime, blocking it would deadlock: another thread runs it.
        Ok(_) => std::thread::scope(|s| {
            s.spawn(|| own_runtime(Builder::new_current_thread()).block_on(f))
                .join()
                .expect("the store's request does not panic")
        }),
        Err(_) => own_runtime(Builder::new_current_thread()).block_on(f),
    }
}

fn own_runtime(mut b: tokio::runtime::Builder) -> tokio::runtime::Runtime {
    b.enable_all()
        .build()
        .expect("a current-thread runtime starts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_file_urls_are_not_remote() {
        assert!(Remote::parse("./lake").unwrap().is_none());
        assert!(Remote::parse("/var/lib/lake").unwrap().is_none());
        assert!(Remote::parse("file:///var/lib/lake").unwrap().is_none());
    }

    #[test]
    fn an_s3_url_names_its_prefix_and_tables() {
        let r = Remote::parse("s3://bucket/teams/llm").unwrap().unwrap();
        assert_eq!(r.url().as_str(), "s3://bucket/teams/llm/");
        assert_eq!(
            r.path("_promptgate/log").as_ref(),
            "teams/llm/_promptgate/log"
        );
        assert_eq!(
            r.table_url(Table::Events).unwrap().as_str(),
            "s3://bucket/teams/llm/llm_events/"
        );
        let root = Remote::parse("s3://bucket").unwrap().unwrap();
        assert_eq!(root.path("llm_events").as_ref(), "llm_events");
    }

    #[test]
    fn other_schemes_and_malformed_urls_are_refused_with_a_hint() {
        for bad in [
            "gs://bucket/x",
            "https://example.com/lake",
            "s3:///x",
            "s3://b/x?y=1",
        ] {
            let e = Remote::parse(bad).unwrap_err();
            assert!(e.hint.is_some(), "{bad}: {e}");
        }
    }
}
