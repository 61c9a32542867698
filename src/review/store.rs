//! The review directory: its manifest, items and answers, read and written atomically.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lake::{Lake, lock_exclusive, sync_dir, write_file_atomic};

const MANIFEST: &str = "review.json";
const ITEMS: &str = "items.ndjson";
const ANSWERS: &str = "answers.json";
const SCORE: &str = "score.json";
const LOCK: &str = ".lock";

/// One stratum of the sample: a model × tier cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stratum {
    pub model: String,
    pub tier: String,
    /// Events of the cell with an input (its share of the route's traffic).
    pub traffic: u64,
    /// Distinct inputs available in the cell.
    pub available: u64,
    pub sampled: u64,
}

/// `review.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewManifest {
    pub id: String,
    pub route: String,
    pub env: String,
    pub since: Option<String>,
    pub seed: u64,
    pub requested: u64,
    pub sampled: u64,
    /// Events of the route and env (in the window) with a non-empty input.
    pub eligible_events: u64,
    pub distinct_inputs: u64,
    pub created_at: String,
    pub strata: Vec<Stratum>,
    /// Redactions by kind (`email`, `phone`, `card`, `iban`, `api_key`, `bearer_token`).
    pub redactions: serde_json::Value,
    /// Set by the first `review run` or `review import`; fixed afterwards.
    pub baseline: Option<String>,
    pub canary: Option<String>,
}

/// One sampled request (its input already redacted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub item: u32,
    pub event_id: String,
    pub model: String,
    pub tier: String,
    pub input: String,
}

/// A version's answer to an item, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `runner` or `import`.
    pub source: String,
    pub at: String,
}

/// Answers by version, then by item.
pub type Answers = BTreeMap<String, BTreeMap<u32, Answer>>;

/// A review's directory.
#[derive(Debug, Clone)]
pub struct ReviewDir {
    pub id: String,
    pub dir: PathBuf,
}

/// Where reviews live.
pub fn reviews_root(lake: &Lake) -> PathBuf {
    lake.root().join("reviews")
}

/// Review ids are generated (`YYYYMMDD-HHMMSS-xxxx`), so anything else is a typo, and never a
/// path: this keeps `--id ../x` out of other directories.
fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!("{id:?} is not a review id"))
            .with_hint("the id is the first line `promptgate review sample` printed"))
    }
}

impl ReviewDir {
    /// Opens an existing review.
    pub fn open(lake: &Lake, id: &str) -> Result<Self> {
        check_id(id)?;
        let dir = reviews_root(lake).join(id);
        if !dir.join(MANIFEST).is_file() {
            return Err(Error::input(format!(
                "no review {id} in {}",
                reviews_root(lake).display()
            ))
            .with_hint(
                "list them with `ls <lake>/reviews`; create one with `promptgate review sample`",
            ));
        }
        Ok(Self {
            id: id.to_string(),
            dir,
        })
    }

    /// Creates a review whole or not at all: everything is written to a hidden staging
    /// directory, which is then renamed into place.
    pub fn create(lake: &Lake, manifest: &ReviewManifest, items: &[Item]) -> Result<Self> {
        check_id(&manifest.id)?;
        let root = reviews_root(lake);
        fs::create_dir_all(&root).map_err(|e| Error::io("cannot create", &root, e))?;
        let dir = root.join(&manifest.id);
        if dir.exists() {
            return Err(Error::runtime(format!(
                "review {} already exists",
                manifest.id
            )));
        }
        let staging = root.join(format!(".{}.staging", manifest.id));
        fs::create_dir_all(&staging).map_err(|e| Error::io("cannot create", &staging, e))?;
        let staged = (|| {
            write_json(&staging.join(MANIFEST), manifest)?;
            let mut lines = String::new();
            for it in items {
                lines.push_str(&serde_json::to_string(it).map_err(json_err)?);
                lines.push('\n');
            }
            write_file_atomic(&staging.join(ITEMS), lines.as_bytes())?;
            sync_dir(&staging)?;
            fs::rename(&staging, &dir).map_err(|e| Error::io("cannot move into place", &dir, e))?;
            sync_dir(&root)
        })();
        if let Err(e) = staged {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        Ok(Self {
            id: manifest.id.clone(),
            dir,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Holds the review's write lock while alive (answers, versions, sheets).
    pub fn lock(&self) -> Result<File> {
        lock_exclusive(&self.path(LOCK), &self.dir)
    }

    pub fn manifest(&self) -> Result<ReviewManifest> {
        read_json(&self.path(MANIFEST))
    }

    pub fn write_manifest(&self, m: &ReviewManifest) -> Result<()> {
        write_json(&self.path(MANIFEST), m)
    }

    pub fn items(&self) -> Result<Vec<Item>> {
        let path = self.path(ITEMS);
        let text = fs::read_to_string(&path).map_err(|e| Error::io("cannot read", &path, e))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    Error::input(format!("{}:{}: {e}", path.display(), i + 1))
                        .with_hint("items.ndjson is written by `review sample`; sample again")
                })
            })
            .collect()
    }

    pub fn answers(&self) -> Result<Answers> {
        let path = self.path(ANSWERS);
        if !path.exists() {
            return Ok(Answers::new());
        }
        read_json(&path)
    }

    pub fn write_answers(&self, a: &Answers) -> Result<()> {
        write_json(&self.path(ANSWERS), a)
    }

    /// The latest score (`score.json`), if the review was scored.
    pub fn score(&self) -> Result<Option<super::score::ReviewScore>> {
        let path = self.path(SCORE);
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Keeps the latest score beside the review, for `promptgate checklist`.
    pub fn write_score(&self, s: &super::score::ReviewScore) -> Result<()> {
        write_json(&self.path(SCORE), s)
    }

    /// Records the two versions on first use (when `persist`); afterwards they must match.
    pub fn fix_versions(
        &self,
        m: &mut ReviewManifest,
        baseline: Option<&str>,
        canary: Option<&str>,
        persist: bool,
    ) -> Result<()> {
        let mut changed = false;
        for (slot, given, flag) in [
            (&mut m.baseline, baseline, "--baseline"),
            (&mut m.canary, canary, "--canary"),
        ] {
            match (slot.as_deref(), given) {
                (Some(have), Some(g)) if have != g => {
                    return Err(Error::usage(format!(
                        "review {} compares {} {have}, not {g}",
                        self.id,
                        &flag[2..]
                    ))
                    .with_hint("a review compares one pair of versions; sample a new review for another pair"));
                }
                (None, Some(g)) => {
                    *slot = Some(g.to_string());
                    changed = true;
                }
                (None, None) => {
                    return Err(Error::usage(format!(
                        "review {} has no {} version yet; pass {flag}",
                        self.id,
                        &flag[2..]
                    )));
                }
                _ => {}
            }
        }
        if m.baseline == m.canary {
            return Err(Error::usage("--baseline and --canary are the same version"));
        }
        if changed && persist {
            self.write_manifest(m)?;
        }
        Ok(())
    }
}

fn json_err(e: serde_json::Error) -> Error {
    Error::runtime(format!("cannot encode JSON: {e}"))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(v).map_err(json_err)?;
    bytes.push(b'\n');
    write_file_atomic(path, &bytes)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::input(format!("{}: {e}", path.display())))
}

/// Now, as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
