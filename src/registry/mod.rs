//! The prompt registry: which prompt versions a route has, which one each request gets, and
//! who changed what when.
//!
//! ```text
//! <registry>/state.json        the whole state, pretty JSON (routes, versions, defaults,
//!                              overrides, kill switches, rollouts); `cat` it
//! <registry>/audit.ndjson      append-only audit log, one JSON object per change
//! <registry>/prompts/<sha256>  prompt texts, stored by content
//! <registry>/.lock             held by writers (flock); .gitignore'd
//! ```
//!
//! By default the registry is `<lake>/registry` (`--registry DIR`, `PROMPTGATE_REGISTRY`); the
//! directory can be kept in git. Every write takes the lock, appends its entries to the audit
//! log (fsynced), then replaces `state.json` atomically (temp file, fsync, rename): the rename
//! is the commit. The state records how long the log was at its commit, so entries a crashed
//! writer appended without committing are cut off by the next writer and never shown.
//! Readers (resolve, serve) take no lock: they read one whole `state.json`, old or new.
//!
//! On object storage (`--registry s3://bucket/prefix`, or the `registry/` prefix of a lake on
//! S3) there is no rename, append or lock: a writer holds the registry's lease (the lake's
//! writer lease, under the registry's prefix), writes its audit entries as one object per
//! revision (`audit/<revision>.ndjson`, after those of a local `audit.ndjson` when the
//! registry was copied from disk), then commits `state.json` with a conditional put on the
//! ETag it read: the conditional put is the commit. Entries of revisions past the state's are
//! a dead writer's and never shown; the next writer of that revision replaces them.
//!
//! Resolution ([`resolve`]) is a pure function of a [`State`] and a request, so a Rust service
//! can embed it: load the state with [`Registry::load`] (or parse `state.json` bytes with
//! [`parse_state`]) and call [`resolve`].

mod audit;
pub mod resolve;
pub mod state;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use audit::AuditEntry;
pub use resolve::{
    BUCKETS, DEFAULT_TIER, Resolution, ResolveRequest, ResolvedArm, bucket, resolve,
};
pub use state::{Change, Stamp, State, format_us, now_us, sha_matches};

use crate::error::{Error, Result};
use crate::lake::{self, Lake, Remote, block_on};

const STATE_FILE: &str = "state.json";
const AUDIT_FILE: &str = "audit.ndjson";
const PROMPTS_DIR: &str = "prompts";
const LOCK_FILE: &str = ".lock";

/// A registry: a directory, or a prefix on object storage.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    remote: Option<Arc<Remote>>,
}

const AUDIT_DIR: &str = "audit";

/// Parses the bytes of a `state.json`.
pub fn parse_state(bytes: &[u8], path: &Path) -> Result<State> {
    let state: State = serde_json::from_slice(bytes).map_err(|e| {
        Error::input(format!(
            "{} is not a valid registry state: {e}",
            path.display()
        ))
        .with_hint("it was edited by hand; restore it from the registry's git history")
    })?;
    if state.format != state::STATE_FORMAT {
        return Err(Error::input(format!(
            "{} has format {}, this promptgate reads format {}",
            path.display(),
            state.format,
            state::STATE_FORMAT
        ))
        .with_hint("use the promptgate version that wrote it"));
    }
    for (route, r) in &state.routes {
        for ro in &r.rollouts {
            if let Some(problem) = ro.problem() {
                return Err(Error::input(format!(
                    "{}: rollout {:?} of route {route:?} {problem}",
                    path.display(),
                    ro.id
                ))
                .with_hint("it was edited by hand; restore it from the registry's git history"));
            }
        }
    }
    Ok(state)
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `$USER`, or `unknown`: the actor of a write that names none.
pub fn default_actor() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

impl Registry {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Registry {
            dir: dir.into(),
            remote: None,
        }
    }

    /// `dir` (a directory or an `s3://` URL), or else the lake's `registry/` (directory, or
    /// prefix of a lake on S3).
    pub fn locate(dir: Option<PathBuf>, lake: &Lake) -> Result<Self> {
        let remote = match (&dir, lake.remote()) {
            (Some(d), _) => match d.to_str() {
                Some(s) => Remote::parse(s)?,
                None => None,
            },
            (None, Some(r)) => Some(r.child("registry")?),
            (None, None) => None,
        };
        Ok(match remote {
            Some(r) => Registry {
                dir: PathBuf::from(r.url().as_str()),
                remote: Some(Arc::new(r)),
            },
            None => Registry::new(dir.unwrap_or_else(|| lake.root().join("registry"))),
        })
    }

    /// The directory (of a registry on a store: its URL, for messages only).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the registry is, for people.
    pub fn location(&self) -> String {
        self.dir.display().to_string()
    }

    /// The bytes of `state.json`, or None before the first write.
    pub fn state_bytes(&self) -> Result<Option<Vec<u8>>> {
        match &self.remote {
            Some(r) => Ok(block_on(r.get_versioned(STATE_FILE))?.map(|(b, _)| b)),
            None => {
                let path = self.state_path();
                match fs::read(&path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io("cannot read", &path, e)),
                }
            }
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn audit_path(&self) -> PathBuf {
        self.dir.join(AUDIT_FILE)
    }

    fn prompt_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(PROMPTS_DIR).join(sha256)
    }

    /// The current state; an empty one when nothing was written yet.
    pub fn load(&self) -> Result<State> {
        match self.state_bytes()? {
            Some(bytes) => parse_state(&bytes, &self.state_path()),
            None => Ok(State::empty()),
        }
    }

    /// The audit log, oldest first (committed entries only).
    pub fn history(&self) -> Result<Vec<AuditEntry>> {
        let state = self.load()?;
        let Some(r) = &self.remote else {
            return audit::read(&self.audit_path(), state.audit_bytes);
        };
        block_on(async {
            let mut entries = match state.audit_bytes {
                0 => Vec::new(),
                n => audit::parse(&r.get(AUDIT_FILE).await?, n, &r.object_url(AUDIT_FILE))?,
            };
            let mut revisions: Vec<u64> = r
                .list(AUDIT_DIR)
                .await?
                .iter()
                .filter_map(|n| n.strip_suffix(".ndjson")?.parse().ok())
                .filter(|rev| *rev <= state.revision)
                .collect();
            revisions.sort_unstable();
            for rev in revisions {
                let rel = audit_object(rev);
                let bytes = r.get(&rel).await?;
                entries.extend(audit::parse(
                    &bytes,
                    bytes.len() as u64,
                    &r.object_url(&rel),
                )?);
            }
            Ok(entries)
        })
    }

    /// The text of the prompt with this SHA-256.
    pub fn prompt_text(&self, sha256: &str) -> Result<String> {
        if let Some(r) = &self.remote {
            let rel = format!("{PROMPTS_DIR}/{sha256}");
            let bytes = block_on(r.get(&rel)).map_err(|e| {
                e.with_hint("the registry's prompts/ are incomplete; restore them from a copy")
            })?;
            return String::from_utf8(bytes)
                .map_err(|_| Error::runtime(format!("{} is not UTF-8 text", r.object_url(&rel))));
        }
        let path = self.prompt_path(sha256);
        fs::read_to_string(&path).map_err(|e| {
            Error::io("cannot read prompt text", &path, e)
                .with_hint("the registry's prompts/ directory is incomplete; restore it from git")
        })
    }

    /// Stores a prompt text by content (idempotent) and returns its SHA-256.
    pub fn store_prompt(&self, bytes: &[u8]) -> Result<String> {
        let sha = sha256_hex(bytes);
        if let Some(r) = &self.remote {
            // Named by its content: a prompt already there is the same text.
            block_on(r.put_if_absent(&format!("{PROMPTS_DIR}/{sha}"), bytes.to_vec()))?;
            return Ok(sha);
        }
        let path = self.prompt_path(&sha);
        if fs::read(&path).is_ok_and(|b| b == bytes) {
            return Ok(sha);
        }
        let dir = self.dir.join(PROMPTS_DIR);
        fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        lake::write_file_atomic(&path, bytes)?;
        Ok(sha)
    }

    /// Runs one write: takes the lock, loads the state, lets `change` edit a copy of it and say
    /// what it changed, then commits (audit entries appended and fsynced, then the state
    /// replaced atomically). When `change` fails or changes nothing, nothing is written.
    pub fn update<T>(
        &self,
        actor: &str,
        why: Option<&str>,
        change: impl FnOnce(&mut State, &Stamp) -> Result<(T, Vec<Change>)>,
    ) -> Result<T> {
        if let Some(r) = &self.remote {
            return self.update_remote(r.clone(), actor, why, change);
        }
        fs::create_dir_all(&self.dir).map_err(|e| {
            Error::io("cannot create registry directory", &self.dir, e)
                .with_hint("point --registry / PROMPTGATE_REGISTRY at a writable directory")
        })?;
        let _lock = lake::lock_exclusive(&self.dir.join(LOCK_FILE), &self.dir)?;
        let gitignore = self.dir.join(".gitignore");
        if !gitignore.exists() {
            lake::write_file_atomic(&gitignore, b".lock\n.*.tmp\n")?;
        }
        audit::touch(&self.audit_path())?;
        let mut state = self.load()?;
        let (out, entries) = stamped(&mut state, actor, why, change)?;
        if entries.is_empty() {
            return Ok(out);
        }
        state.audit_bytes = audit::append(&self.audit_path(), state.audit_bytes, &entries)?;
        state.revision += 1;
        let mut text = serde_json::to_vec_pretty(&state).expect("state serializes");
        text.push(b'\n');
        lake::write_file_atomic(&self.state_path(), &text)?;
        Ok(out)
    }
}

impl Registry {
    /// [`Registry::update`] on object storage (see the module docs).
    fn update_remote<T>(
        &self,
        r: Arc<Remote>,
        actor: &str,
        why: Option<&str>,
        change: impl FnOnce(&mut State, &Stamp) -> Result<(T, Vec<Change>)>,
    ) -> Result<T> {
        let lease = block_on(lake::lease::Lease::acquire(r.clone()))?;
        let read = block_on(r.get_versioned(STATE_FILE))?;
        let (mut state, etag) = match &read {
            Some((bytes, etag)) => (parse_state(bytes, &self.state_path())?, Some(etag.clone())),
            None => (State::empty(), None),
        };
        let (out, entries) = stamped(&mut state, actor, why, change)?;
        if entries.is_empty() {
            return Ok(out);
        }
        let mut audit = Vec::new();
        for entry in &entries {
            serde_json::to_writer(&mut audit, entry).expect("audit entry serializes");
            audit.push(b'\n');
        }
        state.revision += 1;
        let revision = state.revision;
        let mut text = serde_json::to_vec_pretty(&state).expect("state serializes");
        text.push(b'\n');
        lease.check()?;
        let committed = block_on(async {
            // Replaces what a writer that died before its commit left for this revision.
            r.put(&audit_object(revision), audit).await?;
            let mode = match etag {
                Some(e) => object_store::PutMode::Update(object_store::UpdateVersion {
                    e_tag: Some(e),
                    version: None,
                }),
                None => object_store::PutMode::Create,
            };
            r.put_mode(STATE_FILE, text, mode).await
        })?;
        drop(lease);
        match committed {
            Some(_) => Ok(out),
            None => Err(Error::runtime(format!(
                "another writer changed the registry at {} at the same time; nothing was changed",
                r.url()
            ))
            .with_hint("run the command again")),
        }
    }
}

/// Runs `change` on `state` as its next revision: what it returns, and the audit entries of
/// what it changed (none: nothing to write). The caller commits and bumps the revision.
fn stamped<T>(
    state: &mut State,
    actor: &str,
    why: Option<&str>,
    change: impl FnOnce(&mut State, &Stamp) -> Result<(T, Vec<Change>)>,
) -> Result<(T, Vec<AuditEntry>)> {
    let stamp = Stamp {
        revision: state.revision + 1,
        at_us: now_us(),
        actor: actor.to_string(),
        why: why.map(str::to_string),
    };
    let (out, changes) = change(state, &stamp)?;
    let entries = changes
        .into_iter()
        .map(|change| AuditEntry {
            revision: stamp.revision,
            at: format_us(stamp.at_us),
            actor: stamp.actor.clone(),
            why: stamp.why.clone(),
            change,
        })
        .collect();
    Ok((out, entries))
}

/// The audit object of `revision` in a registry on object storage.
fn audit_object(revision: u64) -> String {
    format!("{AUDIT_DIR}/{revision:020}.ndjson")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        // printf 'abc' | sha256sum
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn uncommitted_audit_entries_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path());
        let sha = reg.store_prompt(b"hello").unwrap();
        reg.update("a", None, |s, st| {
            let c = s.add_version("r", "v1", &sha, 5, st)?;
            Ok(((), c.into_iter().collect()))
        })
        .unwrap();
        // A writer that crashed after appending but before committing its state.
        let audit = dir.path().join(AUDIT_FILE);
        let mut bytes = fs::read(&audit).unwrap();
        bytes.extend_from_slice(b"{\"revision\":99,\"partial");
        fs::write(&audit, &bytes).unwrap();
        assert_eq!(reg.history().unwrap().len(), 1);
        reg.update("b", Some("go"), |s, st| {
            let c = s.set_default("r", None, "v1", st)?;
            Ok(((), c.into_iter().collect()))
        })
        .unwrap();
        let h = reg.history().unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].actor, "b");
        assert_eq!(h[1].revision, 2);
        assert!(!fs::read_to_string(&audit).unwrap().contains("partial"));
    }
}
