//! Rejected records, kept verbatim so nothing is lost: per source a file holding the rejected
//! lines exactly as read (a CSV one keeps its header), fit to fix and re-ingest, and
//! `reasons.ndjson` saying for each where it came from and why it was rejected.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::records::Reject;
use crate::error::{Error, Result};

#[derive(Serialize)]
struct ReasonLine<'a> {
    source: &'a str,
    line: u64,
    reason: &'a str,
    /// The file in this quarantine directory that holds the record verbatim.
    file: &'a str,
}

/// Writes one ingest's quarantine directory (under staging until the ingest commits).
pub(crate) struct Quarantine {
    dir: PathBuf,
    reasons: Option<BufWriter<File>>,
    current: Option<SourceFile>,
    sources: usize,
    count: u64,
}

struct SourceFile {
    source: String,
    file_name: String,
    out: BufWriter<File>,
}

impl Quarantine {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            reasons: None,
            current: None,
            sources: 0,
            count: 0,
        }
    }

    /// Rejected records written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Starts a new source; `header` (a CSV header line) is written first if the source has
    /// rejects, so the quarantined file is itself a valid input.
    pub fn start_source(&mut self, source: &str, header: Option<Vec<u8>>) -> SourceToken {
        self.sources += 1;
        SourceToken {
            index: self.sources,
            source: source.to_string(),
            header,
        }
    }

    /// Opens a file for a rejected record of `src` and writes its reason. The caller then writes
    /// the record's bytes with [`Quarantine::write_raw`] and ends it with [`Quarantine::end_record`].
    pub fn begin_record(&mut self, src: &SourceToken, line: u64, reason: &str) -> Result<()> {
        self.count += 1;
        if self.current.as_ref().map(|c| c.source.as_str()) != Some(src.source.as_str()) {
            self.flush_current()?;
            fs::create_dir_all(&self.dir).map_err(|e| Error::io("cannot create", &self.dir, e))?;
            let base = Path::new(&src.source)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "stdin".into());
            // The records are kept as plain text: a gzipped source's copy drops `.gz`, so the
            // file can be re-ingested as it is.
            let base = match base.len().checked_sub(3) {
                Some(cut)
                    if base.is_char_boundary(cut) && base[cut..].eq_ignore_ascii_case(".gz") =>
                {
                    base[..cut].to_string()
                }
                _ => base,
            };
            let file_name = format!("{:02}-{}", src.index, sanitize(&base));
            let path = self.dir.join(&file_name);
            let file = File::options()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io("cannot write quarantine file", &path, e))?;
            let mut out = BufWriter::new(file);
            let fresh = out
                .get_ref()
                .metadata()
                .map(|m| m.len() == 0)
                .unwrap_or(true);
            if fresh && let Some(h) = &src.header {
                write_all(&mut out, h, &path)?;
                write_all(&mut out, b"\n", &path)?;
            }
            self.current = Some(SourceFile {
                source: src.source.clone(),
                file_name,
                out,
            });
        }
        if self.reasons.is_none() {
            let path = self.dir.join("reasons.ndjson");
            let f = File::create(&path).map_err(|e| Error::io("cannot write", &path, e))?;
            self.reasons = Some(BufWriter::new(f));
        }
        let cur = self.current.as_ref().expect("opened above");
        let line_json = serde_json::to_string(&ReasonLine {
            source: &src.source,
            line,
            reason,
            file: &cur.file_name,
        })
        .expect("serializes");
        let path = self.dir.join("reasons.ndjson");
        let reasons = self.reasons.as_mut().expect("opened above");
        write_all(reasons, line_json.as_bytes(), &path)?;
        write_all(reasons, b"\n", &path)
    }

    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let cur = self.current.as_mut().expect("begin_record first");
        let path = self.dir.join(&cur.file_name);
        write_all(&mut cur.out, bytes, &path)
    }

    pub fn end_record(&mut self) -> Result<()> {
        self.write_raw(b"\n")
    }

    /// Writes a whole rejected record.
    pub fn record(&mut self, src: &SourceToken, r: &Reject) -> Result<()> {
        self.begin_record(src, r.line, &r.reason)?;
        self.write_raw(&r.raw)?;
        self.end_record()
    }

    fn flush_current(&mut self) -> Result<()> {
        if let Some(mut c) = self.current.take() {
            let path = self.dir.join(&c.file_name);
            c.out
                .flush()
                .and_then(|_| c.out.get_ref().sync_all())
                .map_err(|e| Error::io("cannot write", &path, e))?;
        }
        Ok(())
    }

    /// Flushes and fsyncs everything; returns the directory if anything was quarantined.
    pub fn finish(mut self) -> Result<Option<PathBuf>> {
        self.flush_current()?;
        if let Some(mut r) = self.reasons.take() {
            let path = self.dir.join("reasons.ndjson");
            r.flush()
                .and_then(|_| r.get_ref().sync_all())
                .map_err(|e| Error::io("cannot write", &path, e))?;
        }
        Ok((self.count > 0).then_some(self.dir))
    }
}

/// Identifies the source a rejected record came from.
pub(crate) struct SourceToken {
    index: usize,
    source: String,
    header: Option<Vec<u8>>,
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_all(out: &mut impl Write, bytes: &[u8], path: &Path) -> Result<()> {
    out.write_all(bytes)
        .map_err(|e| Error::io("cannot write quarantine file", path, e))
}
