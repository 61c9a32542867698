//! Reading a local table around a damaged checkpoint.
//!
//! A checkpoint only repeats the commits before it. When one is damaged (truncated, or a stray
//! file under a checkpoint's name) and the commits it repeats are still in `_delta_log`, the
//! table is read through those commits: the object store that delta-rs reads the log through
//! hides the damaged checkpoint, and `_last_checkpoint` (which may point at it), so the log is
//! listed and replayed as if the checkpoint had never been written. Where the commits are gone
//! too, loading still fails, and the error names the damaged file.

use std::collections::HashSet;
use std::fmt;
use std::path::Path as FsPath;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use super::delta::LOG_DIR;

/// The names of the checkpoint files in the `_delta_log` of the table at `dir` that are not
/// Parquet files (shorter than a footer, or without the `PAR1` magic at either end).
pub fn damaged_checkpoints(dir: &FsPath) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join(LOG_DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (super::delta::is_checkpoint(&name) && !looks_like_parquet(&e.path())).then_some(name)
        })
        .collect();
    out.sort();
    out
}

/// Whether the file at `path` starts and ends with Parquet's magic and can hold a footer (a
/// file that cannot be opened is not judged: true).
pub(super) fn looks_like_parquet(path: &FsPath) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return true; // gone or unreadable: not ours to judge
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return true;
    };
    if len < 12 {
        return false;
    }
    let (mut head, mut tail) = ([0u8; 4], [0u8; 4]);
    let ok = f.read_exact(&mut head).is_ok()
        && f.seek(SeekFrom::End(-4)).is_ok()
        && f.read_exact(&mut tail).is_ok();
    ok && &head == b"PAR1" && &tail == b"PAR1"
}

/// An object store that behaves as `inner` with some files of one `_delta_log` missing: they
/// are not listed and cannot be read. Writes go through unchanged.
#[derive(Debug)]
pub struct HideLogFiles {
    inner: Arc<dyn ObjectStore>,
    /// Names of files in `_delta_log` to hide.
    hidden: HashSet<String>,
}

impl HideLogFiles {
    /// `inner` without the checkpoints named in `damaged` and without `_last_checkpoint`.
    pub fn new(inner: Arc<dyn ObjectStore>, damaged: &[String]) -> Self {
        let mut hidden: HashSet<String> = damaged.iter().cloned().collect();
        hidden.insert("_last_checkpoint".into());
        Self { inner, hidden }
    }

    fn hides(&self, location: &Path) -> bool {
        hides(&self.hidden, location)
    }

    fn not_found(location: &Path) -> object_store::Error {
        object_store::Error::NotFound {
            path: location.to_string(),
            source: "a damaged checkpoint, read through the commits before it".into(),
        }
    }
}

impl fmt::Display for HideLogFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} without its damaged checkpoints", self.inner)
    }
}

#[async_trait]
impl ObjectStore for HideLogFiles {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if self.hides(location) {
            return Err(Self::not_found(location));
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let hidden = self.hidden.clone();
        self.inner
            .list(prefix)
            .filter(move |m| {
                let keep = match m {
                    Ok(m) => !hides(&hidden, &m.location),
                    Err(_) => true,
                };
                std::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut out = self.inner.list_with_delimiter(prefix).await?;
        out.objects.retain(|m| !self.hides(&m.location));
        Ok(out)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn hides(hidden: &HashSet<String>, location: &Path) -> bool {
    let parts: Vec<_> = location.parts().collect();
    match parts.as_slice() {
        [.., dir, name] => dir.as_ref() == LOG_DIR && hidden.contains(name.as_ref()),
        _ => false,
    }
}
