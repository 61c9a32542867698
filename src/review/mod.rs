//! Blind human review of real requests: a sample of a route's inputs ([`sample`], redacted by
//! [`redact`]), both versions' answers (from a user's command, [`runner`], or imported), and the
//! review directory that holds them ([`store`]).
//!
//! A review lives in `<lake>/reviews/<id>/`:
//! - `review.json`: the manifest (route, env, seed, strata, redaction counts, versions);
//! - `items.ndjson`: one sampled, redacted input per line (`item`, `event_id`, `model`, `tier`,
//!   `input`);
//! - `answers.json`: each version's answer (or the failure) per item;
//! - `share/sheet.csv`, `share/sheet.html`: the blind sheet ([`sheet`]), answers rendered from
//!   Markdown ([`markdown`]); `share/` is all a labeler gets. `key.json` (which side is which)
//!   and `answers.json` unblind the review and stay outside it;
//! - scores ([`score`]) go to the lake's `llm_reviews` table ([`table`]), and the latest one to
//!   `score.json` (what `promptgate checklist --review ID` reports).

pub mod markdown;
pub mod redact;
pub mod runner;
pub mod sample;
pub mod score;
pub mod sheet;
pub mod store;
pub mod table;

pub use store::{Answer, Item, ReviewDir, ReviewManifest};
