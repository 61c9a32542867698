//! The writer lease of a lake on object storage: what `flock` is on local disk. A store has no
//! locks, so a writer holds a small object, `_promptgate/writer.json`, created only if absent
//! and renewed by conditional puts (If-Match on its ETag) while the writer runs. Another writer
//! waits until it is gone, or takes it over with a conditional put once it has expired (its
//! holder died without releasing it).
//!
//! The lease only makes writers take turns. Correctness never depends on it: every Delta commit
//! is a conditional put of the table's next version and the lake's log entry is created only if
//! absent, so a writer that loses its lease (paused past its expiry) fails its commit instead of
//! overwriting another's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_store::{PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::Remote;
use crate::error::{Error, Result};

const LEASE: &str = "_promptgate/writer.json";

/// How long a lease lasts unless renewed (renewed every third of it): 60 s, or
/// `PROMPTGATE_LEASE_SECONDS` (at least 1). A writer that dies holds up others that long.
pub const LEASE_ENV: &str = "PROMPTGATE_LEASE_SECONDS";

fn ttl() -> Duration {
    let secs = std::env::var(LEASE_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(60)
        .max(1);
    Duration::from_secs(secs)
}

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    owner: String,
    host: String,
    pid: u32,
    expires_ms: i64,
}

impl Holder {
    fn new(owner: &str) -> Self {
        Holder {
            owner: owner.to_string(),
            host: hostname(),
            pid: std::process::id(),
            expires_ms: super::log::now_ms() + ttl().as_millis() as i64,
        }
    }
    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("lease serializes")
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A held lease; released (deleted) when dropped.
pub struct Lease {
    remote: Arc<Remote>,
    owner: String,
    lost: Arc<AtomicBool>,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the lease of the lake at `remote`, waiting while another writer holds it.
    pub async fn acquire(remote: Arc<Remote>) -> Result<Lease> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let mut said = false;
        let etag = loop {
            let mine = Holder::new(&owner);
            if let Some(etag) = remote
                .put_mode(LEASE, mine.bytes(), PutMode::Create)
                .await?
            {
                break etag;
            }
            let Some((bytes, etag)) = remote.get_versioned(LEASE).await? else {
                continue; // released in between
            };
            let holder: Option<Holder> = serde_json::from_slice(&bytes).ok();
            let expired = holder
                .as_ref()
                .is_none_or(|h| h.expires_ms < super::log::now_ms());
            if expired {
                // Its holder died: take it over, unless someone else just did.
                let update = PutMode::Update(UpdateVersion {
                    e_tag: Some(etag),
                    version: None,
                });
                if let Some(etag) = remote.put_mode(LEASE, mine.bytes(), update).await? {
                    break etag;
                }
                continue;
            }
            if !said {
                let h = holder.expect("not expired, so parsed");
                eprintln!(
                    "waiting for another writer of {} (on {}, pid {}) to finish",
                    remote.url(),
                    h.host,
                    h.pid
                );
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let lost = Arc::new(AtomicBool::new(false));
        let renew = tokio::spawn(renew(remote.clone(), owner.clone(), etag, lost.clone()));
        Ok(Lease {
            remote,
            owner,
            lost,
            renew,
        })
    }

    /// Fails when the lease was lost (not renewed in time, or taken over): the writer must not
    /// start its commit, which would then fail anyway.
    pub fn check(&self) -> Result<()> {
        match self.lost.load(Ordering::SeqCst) {
            false => Ok(()),
            true => Err(Error::runtime(format!(
                "this writer lost the writer lease of {} (it could not renew it in time)",
                self.remote.url()
            ))
            .with_hint("nothing of this command was committed; run it again")),
        }
    }

    async fn release(remote: Arc<Remote>, owner: String) {
        // Deleted only while it is still ours (the window between the read and the delete is
        // that of one request; the worst case is another writer waiting for nothing).
        if let Ok(Some((bytes, _))) = remote.get_versioned(LEASE).await
            && serde_json::from_slice::<Holder>(&bytes).is_ok_and(|h| h.owner == owner)
        {
            let _ = remote.delete(LEASE).await;
        }
    }
}

async fn renew(remote: Arc<Remote>, owner: String, mut etag: String, lost: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(ttl() / 3).await;
        let update = PutMode::Update(UpdateVersion {
            e_tag: Some(etag.clone()),
            version: None,
        });
        match remote
            .put_mode(LEASE, Holder::new(&owner).bytes(), update)
            .await
        {
            Ok(Some(next)) => etag = next,
            _ => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
        let release = Lease::release(self.remote.clone(), self.owner.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(release));
            }
            Ok(h) => {
                h.spawn(release);
            }
            Err(_) => {}
        }
    }
}
