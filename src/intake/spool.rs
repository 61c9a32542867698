//! The intake spool: accepted records, fsynced on local disk before a request is answered.
//!
//! Records are appended as NDJSON lines to numbered segment files (`<seq>.ndjson`) by one writer
//! thread. Appends that arrive while the writer syncs wait for the next round, so one
//! `fdatasync` covers every request of a round (group commit): the cost of durability is paid
//! per round, not per request. A request is answered only after the round that holds it was
//! synced. The committer seals the current segment (later appends go to a new one), ingests the
//! sealed segments through the same path as `promptgate ingest`, and deletes them once the lake
//! holds them. A server killed at any point leaves segments that the next start ingests again:
//! events already in the lake are dropped as duplicates by `event_id`, so each acknowledged event
//! reaches the lake exactly once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::lake::sync_dir;

/// Bytes of appends one round writes at most before it syncs and answers them.
const ROUND_BYTES: usize = 64 << 20;

enum Msg {
    Append(Vec<u8>, oneshot::Sender<io::Result<()>>),
    Seal(oneshot::Sender<io::Result<Option<PathBuf>>>),
}

/// The spool of one server (see the module docs).
pub struct Spool {
    dir: PathBuf,
    tx: mpsc::Sender<Msg>,
    /// Bytes in segments not yet committed to the lake (sealed or not).
    bytes: Arc<AtomicU64>,
}

impl Spool {
    /// Opens the spool in `dir` (created if need be) and starts its writer. Returns it with the
    /// segments an earlier server left, oldest first (their torn last line, from a crash in the
    /// middle of an append nobody was answered for, cut off), and what was cut, for the log.
    pub fn open(dir: &Path) -> Result<(Spool, Vec<PathBuf>, Vec<String>)> {
        fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        let mut left = segments(dir)?;
        let mut bytes = 0u64;
        let mut notes = Vec::new();
        for path in &left {
            let (kept, cut) = cut_torn_tail(path)?;
            bytes += kept;
            if cut > 0 {
                notes.push(format!(
                    "cut {cut} bytes of a line an interrupted server left half-written in {} (it was never acknowledged)",
                    path.display()
                ));
            }
        }
        // Segments emptied by the cut hold nothing to ingest.
        left.retain(|p| fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false));
        let next = left
            .iter()
            .filter_map(|p| seq_of(p))
            .max()
            .map_or(1, |s| s + 1);
        let bytes = Arc::new(AtomicU64::new(bytes));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            next,
            current: None,
            bytes: bytes.clone(),
        };
        std::thread::Builder::new()
            .name("promptgate-spool".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::runtime(format!("cannot start the spool writer: {e}")))?;
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                tx,
                bytes,
            },
            left,
            notes,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes spooled and not yet in the lake.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Appends `lines` (whole NDJSON lines) and resolves once they are on disk.
    pub async fn append(&self, lines: Vec<u8>) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(lines, tx))
            .map_err(|_| io::Error::other("the spool writer stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the spool writer stopped"))?
    }

    /// Closes the current segment (later appends go to a new one); its path, when it holds
    /// anything.
    pub async fn seal(&self) -> io::Result<Option<PathBuf>> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Seal(tx))
            .map_err(|_| io::Error::other("the spool writer stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the spool writer stopped"))?
    }

    /// Deletes segments the lake now holds.
    pub fn remove(&self, done: &[PathBuf]) -> Result<()> {
        let mut freed = 0;
        for p in done {
            freed += fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("cannot remove", p, e)),
            }
        }
        sync_dir(&self.dir)?;
        self.bytes
            .fetch_sub(freed.min(self.bytes()), Ordering::Relaxed);
        Ok(())
    }
}

/// The segment files in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map_err(|e| Error::io("cannot read", dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter_map(|p| seq_of(&p).map(|s| (s, p)))
        .collect();
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

fn seq_of(p: &Path) -> Option<u64> {
    let name = p.file_name()?.to_str()?;
    let digits = name.strip_suffix(".ndjson")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Cuts a segment back to its last whole line; returns the bytes kept and cut.
fn cut_torn_tail(path: &Path) -> Result<(u64, usize)> {
    let bytes = fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("cannot open", path, e))?;
        f.set_len(keep as u64)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("cannot cut the torn line of", path, e))?;
    }
    Ok((keep as u64, bytes.len() - keep))
}

struct Writer {
    dir: PathBuf,
    next: u64,
    /// The open segment: its path, file and length.
    current: Option<(PathBuf, File, u64)>,
    bytes: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut waiting: Vec<oneshot::Sender<io::Result<()>>> = Vec::new();
        // The length of the segment before this round's appends, to undo a failed round.
        let mut round_start: Option<u64> = None;
        while let Ok(first) = rx.recv() {
            let mut msg = Some(first);
            let mut written = 0usize;
            while let Some(m) = msg.take() {
                match m {
                    Msg::Append(lines, reply) => {
                        if round_start.is_none() {
                            round_start = Some(self.current.as_ref().map_or(0, |c| c.2));
                        }
                        match self.write(&lines) {
                            Ok(()) => {
                                written += lines.len();
                                waiting.push(reply);
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                    Msg::Seal(reply) => {
                        self.sync_and_answer(&mut waiting, &mut round_start);
                        let _ = reply.send(Ok(self.current.take().map(|(p, _, _)| p)));
                    }
                }
                if written < ROUND_BYTES {
                    msg = rx.try_recv().ok();
                }
            }
            self.sync_and_answer(&mut waiting, &mut round_start);
        }
    }

    fn write(&mut self, lines: &[u8]) -> io::Result<()> {
        if self.current.is_none() {
            let path = self.dir.join(format!("{:020}.ndjson", self.next));
            self.next += 1;
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            // The new name must survive a crash as surely as the lines in it.
            sync_dir(&self.dir).map_err(|e| io::Error::other(e.message))?;
            self.current = Some((path, file, 0));
        }
        let (_, file, len) = self.current.as_mut().expect("opened above");
        file.write_all(lines)?;
        *len += lines.len() as u64;
        self.bytes.fetch_add(lines.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Syncs the round's appends and answers them; a failed sync fails them all and cuts the
    /// segment back to where the round began, so nothing unacknowledged stays behind.
    fn sync_and_answer(
        &mut self,
        waiting: &mut Vec<oneshot::Sender<io::Result<()>>>,
        round_start: &mut Option<u64>,
    ) {
        let start = round_start.take();
        if waiting.is_empty() && start.is_none() {
            return;
        }
        let synced = match &self.current {
            Some((_, f, _)) => f.sync_data(),
            None => Ok(()),
        };
        match synced {
            Ok(()) => {
                for w in waiting.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                if let (Some((_, f, len)), Some(start)) = (self.current.as_mut(), start) {
                    let dropped = *len - start;
                    if f.set_len(start).is_ok() {
                        *len = start;
                        self.bytes.fetch_sub(dropped, Ordering::Relaxed);
                    }
                }
                for w in waiting.drain(..) {
                    let _ = w.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_are_on_disk_when_answered_and_seal_starts_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, left, _) = Spool::open(dir.path()).unwrap();
        assert!(left.is_empty());
        let (a, b) = tokio::join!(
            spool.append(b"{\"a\":1}\n".to_vec()),
            spool.append(b"{\"b\":2}\n".to_vec())
        );
        a.unwrap();
        b.unwrap();
        let first = spool.seal().await.unwrap().unwrap();
        let text = fs::read_to_string(&first).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(
            spool.seal().await.unwrap(),
            None,
            "an empty segment is not sealed"
        );
        spool.append(b"{\"c\":3}\n".to_vec()).await.unwrap();
        let second = spool.seal().await.unwrap().unwrap();
        assert_ne!(first, second);
        assert_eq!(spool.bytes(), 24);
        spool.remove(&[first]).unwrap();
        assert_eq!(spool.bytes(), 8);
    }

    #[tokio::test]
    async fn a_restart_finds_what_was_left_and_cuts_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(format!("{:020}.ndjson", 7)),
            "{\"a\":1}\n{\"b\":",
        )
        .unwrap();
        fs::write(dir.path().join(format!("{:020}.ndjson", 3)), "{\"z\":0}\n").unwrap();
        fs::write(dir.path().join("notes.txt"), "not a segment").unwrap();
        let (spool, left, notes) = Spool::open(dir.path()).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        let names: Vec<_> = left
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [format!("{:020}.ndjson", 3), format!("{:020}.ndjson", 7)]
        );
        assert_eq!(fs::read_to_string(&left[1]).unwrap(), "{\"a\":1}\n");
        assert_eq!(spool.bytes(), 16);
        spool.append(b"{\"c\":3}\n".to_vec()).await.unwrap();
        let next = spool.seal().await.unwrap().unwrap();
        assert!(next.ends_with(format!("{:020}.ndjson", 8)));
    }
}
