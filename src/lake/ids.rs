//! Id-hash files: beside each events file `part-X.parquet`, a hidden `.part-X.parquet.ids`
//! holding the sorted 64-bit XXH3 hashes of the file's `event_id`s. Ingest checks its new ids
//! against these (8 bytes a lake event, read sequentially) instead of decoding every file's
//! `event_id` column, and reads the ids themselves only of the files where a hash matches.
//!
//! Format: the magic `PGIDS\0\0\x01`, the Parquet file's length and the number of hashes (u64
//! little-endian each), then the hashes, sorted ascending.
//!
//! **Tied to its data file by the commit.** The Delta add action of the data file records the
//! id-hash file's digest (XXH3-64 of its bytes) in its `tags` ([`DIGEST_TAG`]). An id-hash file
//! is trusted only when its bytes have that digest (and its header the data file's length); one
//! that is missing, malformed, edited or planted, and any file committed without a digest, is
//! ignored and that data file's ids are read instead: a hand-edited file can never hide a
//! duplicate, because forging one means forging the table's log too.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, RecordBatch};

use super::Table;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"PGIDS\0\0\x01";

/// The add action's tag that records the digest of the data file's id-hash file.
pub const DIGEST_TAG: &str = "promptgate.idsXxh3";

/// The digest of an id-hash file's bytes, as [`DIGEST_TAG`] records it (16 hex digits).
pub fn digest(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// The digest of the id-hash file beside `parquet`, if there is one to read.
pub fn digest_of(parquet: &Path) -> Option<String> {
    fs::read(ids_path(parquet)).ok().map(|b| digest(&b))
}

/// The hash of one id, as stored (and as ingest remembers its own ids).
pub fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// Where the id hashes of `parquet` live.
pub fn ids_path(parquet: &Path) -> PathBuf {
    let name = parquet
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parquet.with_file_name(format!(".{name}.ids"))
}

/// Which tables keep id-hash files: those whose ids are checked against the whole lake.
pub fn has_id_hashes(table: Table) -> bool {
    table == Table::Events
}

/// Collects the id hashes of the rows written to one file.
#[derive(Default)]
pub struct IdHashes {
    hashes: Vec<u64>,
}

impl IdHashes {
    /// Hashes already computed with [`id_hash`], in any order.
    pub fn from_hashes(hashes: Vec<u64>) -> Self {
        Self { hashes }
    }

    pub fn add(&mut self, table: Table, batch: &RecordBatch) -> Result<()> {
        let idx = batch.schema().index_of(table.id_column())?;
        let ids = arrow::compute::cast(batch.column(idx), &arrow::datatypes::DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        self.hashes
            .extend(ids.iter().map(|id| id_hash(id.unwrap_or(""))));
        Ok(())
    }

    /// Writes the hashes (sorted) for the finished `parquet` file, and fsyncs them.
    pub fn write(mut self, parquet: &Path) -> Result<PathBuf> {
        let len = fs::metadata(parquet)
            .map_err(|e| Error::io("cannot stat", parquet, e))?
            .len();
        self.hashes.sort_unstable();
        let path = ids_path(parquet);
        let io = |e| Error::io("cannot write", &path, e);
        let file = File::create(&path).map_err(io)?;
        let mut w = BufWriter::new(file);
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&len.to_le_bytes()).map_err(io)?;
        w.write_all(&(self.hashes.len() as u64).to_le_bytes())
            .map_err(io)?;
        for h in &self.hashes {
            w.write_all(&h.to_le_bytes()).map_err(io)?;
        }
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(path)
    }
}

/// Whether the id-hash file of `parquet` holds any of `sorted` (ascending hashes). `None` when
/// it is missing or cannot be trusted (its digest is not `digest`, the one the commit records):
/// the caller must then read the file's ids. `scratch` holds one file's hashes (8 bytes a row)
/// and is reused from file to file.
pub fn any_match(
    parquet: &Path,
    digest: Option<&str>,
    sorted: &[u64],
    scratch: &mut Vec<u8>,
) -> Option<bool> {
    let len = fs::metadata(parquet).ok()?.len();
    any_match_in(&ids_path(parquet), len, digest, sorted, scratch)
}

/// [`any_match`] for the id-hash file `ids` of a Parquet file of `len` bytes (of a lake on
/// object storage: a downloaded copy, and the length the table's log records).
pub fn any_match_in(
    ids: &Path,
    len: u64,
    digest: Option<&str>,
    sorted: &[u64],
    scratch: &mut Vec<u8>,
) -> Option<bool> {
    let digest = digest?;
    scratch.clear();
    File::open(ids).ok()?.read_to_end(scratch).ok()?;
    if self::digest(scratch) != digest {
        return None;
    }
    let (head, body) = scratch.split_at_checked(24)?;
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    if &head[..8] != MAGIC
        || word(&head[8..16]) != len
        || body.len() as u64 != word(&head[16..24]).checked_mul(8)?
    {
        return None;
    }
    let mut i = 0;
    let mut prev = 0;
    for h in body.chunks_exact(8).map(word) {
        if h < prev {
            return None; // not sorted: not ours
        }
        prev = h;
        while i < sorted.len() && sorted[i] < h {
            i += 1;
        }
        match sorted.get(i) {
            None => return Some(false),
            Some(c) if *c == h => return Some(true),
            Some(_) => {}
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use std::sync::Arc;

    fn batch(ids: &[&str]) -> RecordBatch {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("event_id", arrow::datatypes::DataType::Utf8, false),
        ]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(ids.to_vec()))]).unwrap()
    }

    #[test]
    fn matches_only_hashes_of_its_own_ids_and_distrusts_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let parquet = dir.path().join("part-1.parquet");
        fs::write(&parquet, b"stand-in for a parquet file").unwrap();
        let mut h = IdHashes::default();
        h.add(Table::Events, &batch(&["e-3", "e-1"])).unwrap();
        h.add(Table::Events, &batch(&["e-2"])).unwrap();
        let path = h.write(&parquet).unwrap();
        assert_eq!(path, dir.path().join(".part-1.parquet.ids"));
        let d = digest_of(&parquet).unwrap();
        let any_match = |p: &Path, sorted: &[u64], scratch: &mut Vec<u8>| {
            any_match(p, Some(&d), sorted, scratch)
        };
        let sorted = |ids: &[&str]| {
            let mut v: Vec<u64> = ids.iter().map(|i| id_hash(i)).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(
            any_match(&parquet, &sorted(&["e-2"]), &mut Vec::new()),
            Some(true)
        );
        assert_eq!(
            any_match(&parquet, &sorted(&["x", "e-3", "y"]), &mut Vec::new()),
            Some(true)
        );
        assert_eq!(
            any_match(&parquet, &sorted(&["x", "y", "z"]), &mut Vec::new()),
            Some(false)
        );
        assert_eq!(any_match(&parquet, &[], &mut Vec::new()), Some(false));
        // The Parquet file changed length: the hashes no longer describe it.
        fs::write(&parquet, b"another file").unwrap();
        assert_eq!(any_match(&parquet, &sorted(&["x"]), &mut Vec::new()), None);
        // Missing or truncated id-hash files are not trusted either (a candidate above every
        // stored hash makes the whole file be read).
        fs::write(&parquet, b"stand-in for a parquet file").unwrap();
        assert_eq!(
            any_match(&parquet, &[u64::MAX], &mut Vec::new()),
            Some(false)
        );
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(any_match(&parquet, &[u64::MAX], &mut Vec::new()), None);
        fs::remove_file(&path).unwrap();
        assert_eq!(any_match(&parquet, &sorted(&["x"]), &mut Vec::new()), None);
    }

    #[test]
    fn a_forged_id_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let parquet = dir.path().join("part-1.parquet");
        fs::write(&parquet, b"stand-in for a parquet file").unwrap();
        let mut h = IdHashes::default();
        h.add(Table::Events, &batch(&["e-1", "e-2"])).unwrap();
        let path = h.write(&parquet).unwrap();
        let recorded = digest_of(&parquet).unwrap();
        let e1 = [id_hash("e-1")];
        assert_eq!(
            super::any_match(&parquet, Some(&recorded), &e1, &mut Vec::new()),
            Some(true)
        );
        // A well-formed file for the same data file (right header, right length), with other
        // hashes: its digest is not the recorded one.
        let mut forged = IdHashes::default();
        forged.add(Table::Events, &batch(&["zz"])).unwrap();
        forged.write(&parquet).unwrap();
        assert_eq!(
            super::any_match(&parquet, Some(&recorded), &e1, &mut Vec::new()),
            None
        );
        // A file committed without a digest is never trusted.
        assert!(path.is_file());
        assert_eq!(super::any_match(&parquet, None, &e1, &mut Vec::new()), None);
    }
}
