//! Events from where they happen: `serve --intake` takes events over HTTP (`POST /v1/events`)
//! and OpenTelemetry GenAI spans (`POST /v1/traces`), keeps them durably in a local [`spool`],
//! and commits the spool to the lake in batches through the same path as `promptgate ingest`.
//!
//! - **Durable before acknowledged.** A `200` means the request's records are fsynced in the
//!   spool; they reach `llm_events` exactly once even if the server is killed right after
//!   answering (a restart ingests what the spool holds; `event_id` dedupe drops what a commit
//!   before the kill already added).
//! - **Batched.** Every `commit_interval` the committer seals the spool's current segment and
//!   ingests every sealed one in one lake commit (one file per partition, compacted as ingest
//!   compacts), so events are visible to queries within about that interval plus the commit's
//!   time. The committer takes the lake's writer lock like any writer: a CLI `ingest`,
//!   `compact` or `vacuum` and the server take turns.
//! - **Bounded.** A spool over `max_spool_bytes` answers `503` with `Retry-After` until the
//!   committer catches up (a lake locked for long, a full disk); bodies over `max_body_bytes`
//!   (as sent or inflated) are `413`.

pub mod body;
pub mod spool;
pub mod traces;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::ingest::otlp::OtlpMapping;
use crate::ingest::{self, IngestOptions, InputFormat, Source};
use crate::lake::Lake;
use crate::serve::log;
use spool::Spool;

/// Where a lake's intake spool is, under its local directory (of a lake on S3: its local work
/// directory).
pub const SPOOL_DIR: &str = "_promptgate/intake";

/// How `serve --intake` takes events.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// How often the spool is committed to the lake.
    pub commit_interval: Duration,
    /// Largest body, as sent and as inflated.
    pub max_body_bytes: usize,
    /// Spooled bytes not yet in the lake past which posts are refused (503).
    pub max_spool_bytes: u64,
    /// How OTLP span attributes map to event fields.
    pub otlp: Arc<OtlpMapping>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            commit_interval: Duration::from_secs(5),
            max_body_bytes: 20 << 20,
            max_spool_bytes: 1 << 30,
            otlp: Arc::new(OtlpMapping::default()),
        }
    }
}

/// What the committer has done, for `/healthz` and the log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IntakeStatus {
    /// Bytes spooled and not yet in the lake.
    pub spooled_bytes: u64,
    pub max_spool_bytes: u64,
    /// Whether posts are taken: the spool is under its limit, and no post was refused for a
    /// full spool since the last commit made room.
    pub accepting: bool,
    /// Posts answered 200 since the server started.
    pub acknowledged_posts: u64,
    /// Events the commits added to the lake since the server started.
    pub committed_events: u64,
    /// Records the commits dropped as already in the lake, and put in quarantine.
    pub committed_duplicates: u64,
    pub committed_rejected: u64,
    /// The lake version of the last commit that added anything.
    pub last_lake_version: Option<u64>,
    /// Milliseconds since the epoch of the last successful commit.
    pub last_commit_ms: Option<i64>,
    /// Why the last commit failed, while the spool waits for the next try.
    pub last_error: Option<String>,
}

/// The intake of one server: its spools and its committer.
pub struct Intake {
    /// NDJSON event lines (`/v1/events`).
    spool: Spool,
    /// OTLP/JSON export requests of one span each (`/v1/traces`).
    traces: Spool,
    config: IntakeConfig,
    status: Mutex<IntakeStatus>,
    /// Segments sealed and not yet committed, oldest first, with their format.
    sealed: Mutex<Vec<(PathBuf, InputFormat)>>,
    stop: watch::Sender<bool>,
    committer_done: AtomicBool,
    /// A post was refused for a full spool, and no commit has made room since.
    refusing: AtomicBool,
    posts: AtomicU64,
    /// What opening the spool found, for the log once the server says where it listens.
    notes: Mutex<Vec<String>>,
}

/// An answer of the intake: HTTP status, JSON body and, for a 503, seconds to wait.
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub retry_after: Option<u64>,
    /// The body to send instead, as protobuf (an OTLP response to a protobuf request).
    pub protobuf: Option<Vec<u8>>,
}

impl Answer {
    /// An error answer: `{"error", "hint"}`.
    pub fn error(status: u16, error: String, hint: &str) -> Self {
        Answer {
            status,
            body: serde_json::json!({"error": error, "hint": hint}),
            retry_after: None,
            protobuf: None,
        }
    }
}

impl Intake {
    /// Opens the spool of `lake` and starts the committer on its own thread (its own runtime,
    /// so a commit waiting for the lake's lock never holds up requests). What an earlier server
    /// left in the spool is committed first.
    pub fn start(lake: Lake, config: IntakeConfig) -> Result<Arc<Intake>> {
        let dir = lake.root().join(SPOOL_DIR);
        let (spool, left, mut notes) = Spool::open(&dir.join("events"))?;
        let (traces, left_traces, more) = Spool::open(&dir.join("traces"))?;
        notes.extend(more);
        let left: Vec<(PathBuf, InputFormat)> = left
            .into_iter()
            .map(|p| (p, InputFormat::Ndjson))
            .chain(left_traces.into_iter().map(|p| (p, InputFormat::Otlp)))
            .collect();
        if !left.is_empty() {
            notes.push(format!(
                "{} spool segments ({} bytes) from before this start will be committed first",
                left.len(),
                spool.bytes() + traces.bytes()
            ));
        }
        let (stop, stop_rx) = watch::channel(false);
        let intake = Arc::new(Intake {
            spool,
            traces,
            config: config.clone(),
            status: Mutex::new(IntakeStatus {
                max_spool_bytes: config.max_spool_bytes,
                ..IntakeStatus::default()
            }),
            sealed: Mutex::new(left),
            stop,
            committer_done: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            posts: AtomicU64::new(0),
            notes: Mutex::new(notes),
        });
        let me = intake.clone();
        std::thread::Builder::new()
            .name("promptgate-committer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("promptgate-commit")
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(me.clone().commit_loop(lake, stop_rx)),
                    Err(e) => log(&format!("cannot start the committer: {e}")),
                }
                me.committer_done.store(true, Ordering::SeqCst);
            })
            .map_err(|e| Error::runtime(format!("cannot start the committer: {e}")))?;
        Ok(intake)
    }

    /// What opening the spool found (recovered segments, torn lines cut), once.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn config(&self) -> &IntakeConfig {
        &self.config
    }

    /// The directory holding both spools.
    pub fn spool_dir(&self) -> &Path {
        self.spool.dir().parent().unwrap_or(self.spool.dir())
    }

    fn spooled(&self) -> u64 {
        self.spool.bytes() + self.traces.bytes()
    }

    /// The committer's state as of now.
    pub fn status(&self) -> IntakeStatus {
        let mut s = self.lock_status().clone();
        s.spooled_bytes = self.spooled();
        s.acknowledged_posts = self.posts.load(Ordering::Relaxed);
        s.accepting =
            !self.refusing.load(Ordering::Relaxed) && s.spooled_bytes < self.config.max_spool_bytes;
        s
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, IntakeStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one decoded `POST /v1/events` body: validates it, spools what it keeps and
    /// answers once that is on disk.
    pub async fn post_events(&self, body: Vec<u8>) -> Answer {
        let parsed = if body.len() > 1 << 20 {
            tokio::task::spawn_blocking(move || body::events(&body))
                .await
                .unwrap_or_else(|e| Err(body::BodyError::Malformed(format!("{e}"))))
        } else {
            body::events(&body)
        };
        match parsed {
            Ok((report, lines)) => {
                let body = serde_json::to_value(&report).expect("report serializes");
                self.spool_and_answer(lines, body).await
            }
            Err(e) => self.body_error(e, "send NDJSON (one event object per line) or a JSON array of event objects; see the README's \"Events\""),
        }
    }

    /// Spools `lines` (when there are any) and answers `body` once they are on disk.
    async fn spool_and_answer(&self, lines: Vec<u8>, body: serde_json::Value) -> Answer {
        self.spool_into(vec![(&self.spool, lines)], body).await
    }

    /// Spools each part's lines into its spool (parts without lines are skipped) and answers
    /// `body` once all are on disk.
    async fn spool_into(&self, parts: Vec<(&Spool, Vec<u8>)>, body: serde_json::Value) -> Answer {
        let parts: Vec<_> = parts.into_iter().filter(|(_, l)| !l.is_empty()).collect();
        if !parts.is_empty() {
            if let Some(full) = self.full(parts.iter().map(|(_, l)| l.len()).sum()) {
                return full;
            }
            let appended =
                futures::future::join_all(parts.into_iter().map(|(spool, l)| spool.append(l)))
                    .await;
            if let Some(Err(e)) = appended.into_iter().find(|r| r.is_err()) {
                log(&format!("cannot spool a post: {e}"));
                return Answer {
                    status: 503,
                    body: serde_json::json!({
                        "error": format!("the events could not be stored durably: {e}"),
                        "hint": "nothing of this request was kept; send it again later",
                    }),
                    retry_after: Some(self.retry_after()),
                    protobuf: None,
                };
            }
        }
        self.posts.fetch_add(1, Ordering::Relaxed);
        Answer {
            status: 200,
            body,
            retry_after: None,
            protobuf: None,
        }
    }

    /// The answer to a body that cannot be read.
    pub fn body_error(&self, e: body::BodyError, hint: &str) -> Answer {
        match e {
            body::BodyError::TooLarge(m) => Answer::error(
                413,
                m,
                &format!(
                    "send at most {} bytes per request (serve --max-body-mib), split into several posts",
                    self.config.max_body_bytes
                ),
            ),
            body::BodyError::Malformed(m) => Answer::error(400, m, hint),
        }
    }

    /// A 503 when `more` bytes would take the spool past its limit.
    fn full(&self, more: usize) -> Option<Answer> {
        let now = self.spooled();
        (now + more as u64 > self.config.max_spool_bytes).then(|| {
            self.refusing.store(true, Ordering::Relaxed);
            let last = self.lock_status().last_error.clone();
            Answer {
                status: 503,
                body: serde_json::json!({
                    "error": format!(
                        "the intake spool is full: {now} bytes wait to be committed to the lake (limit {})",
                        self.config.max_spool_bytes
                    ),
                    "hint": match last {
                        Some(e) => format!("the last commit failed: {e}; retry after the Retry-After seconds"),
                        None => "the lake is behind; retry after the Retry-After seconds".into(),
                    },
                }),
                retry_after: Some(self.retry_after()),
                protobuf: None,
            }
        })
    }

    fn retry_after(&self) -> u64 {
        self.config.commit_interval.as_secs().max(1)
    }

    /// Stops the committer after one last commit of what the spool holds, waiting at most
    /// `deadline`. What is not committed by then stays in the spool for the next start.
    pub async fn stop(&self, deadline: Duration) -> bool {
        let _ = self.stop.send(true);
        let start = std::time::Instant::now();
        while !self.committer_done.load(Ordering::SeqCst) {
            if start.elapsed() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    async fn commit_loop(self: Arc<Self>, lake: Lake, mut stop: watch::Receiver<bool>) {
        let mut first = true;
        loop {
            let stopping = if first {
                first = false;
                *stop.borrow()
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.commit_interval) => *stop.borrow(),
                    _ = stop.changed() => true,
                }
            };
            if let Err(e) = self.commit_once(&lake).await {
                log(&format!(
                    "cannot commit the intake spool to the lake (kept, tried again in {:?}): {e}",
                    self.config.commit_interval
                ));
                self.lock_status().last_error = Some(e.to_string());
            }
            if stopping {
                break;
            }
        }
    }

    /// Seals the current segments and ingests every sealed one in one commit.
    async fn commit_once(&self, lake: &Lake) -> Result<()> {
        for (spool, format) in [
            (&self.spool, InputFormat::Ndjson),
            (&self.traces, InputFormat::Otlp),
        ] {
            match spool.seal().await {
                Ok(Some(p)) => self.lock_sealed().push((p, format)),
                Ok(None) => {}
                Err(e) => return Err(Error::runtime(format!("cannot seal the spool: {e}"))),
            }
        }
        let pending = self.lock_sealed().clone();
        if pending.is_empty() {
            return Ok(());
        }
        let mut sources = Vec::with_capacity(pending.len());
        for (path, format) in &pending {
            let path = path.to_string_lossy().into_owned();
            sources.extend(Source::open_all(&[path], Some(*format))?);
        }
        let opts = IngestOptions {
            progress: false,
            otlp: self.config.otlp.clone(),
            ..IngestOptions::default()
        };
        let report = ingest::ingest(lake, sources, &opts).await?;
        for (spool, format) in [
            (&self.spool, InputFormat::Ndjson),
            (&self.traces, InputFormat::Otlp),
        ] {
            let done: Vec<PathBuf> = pending
                .iter()
                .filter(|(_, f)| *f == format)
                .map(|(p, _)| p.clone())
                .collect();
            spool.remove(&done)?;
        }
        self.lock_sealed().retain(|p| !pending.contains(p));
        self.refusing.store(false, Ordering::Relaxed);
        let mut s = self.lock_status();
        s.committed_events += report.accepted;
        s.committed_duplicates += report.duplicates;
        s.committed_rejected += report.rejected;
        if report.lake_version.is_some() {
            s.last_lake_version = report.lake_version;
        }
        s.last_commit_ms = Some(chrono::Utc::now().timestamp_millis());
        s.last_error = None;
        drop(s);
        let mut line = format!(
            "committed {} spooled records: {} events added, {} already in the lake",
            report.read, report.accepted, report.duplicates
        );
        if let Some(v) = report.lake_version {
            line.push_str(&format!(", lake version {v}"));
        }
        if let Some(q) = &report.quarantine {
            line.push_str(&format!(
                "; {} rejected records in {}",
                report.rejected,
                q.display()
            ));
        }
        log(&line);
        Ok(())
    }

    fn lock_sealed(&self) -> std::sync::MutexGuard<'_, Vec<(PathBuf, InputFormat)>> {
        self.sealed.lock().unwrap_or_else(|p| p.into_inner())
    }
}
