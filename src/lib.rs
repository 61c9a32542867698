//! promptgate: make LLM prompt changes boring to ship.
//!
//! Data flows one way: events in ([`ingest`]) → the Parquet [`lake`] → [`query`] (DataFusion)
//! → rollups → the canary judge → a verdict rendered by [`report`]. Each stage takes and returns
//! plain data (Arrow batches or small structs); the CLI in `main.rs` only parses arguments and
//! calls [`cmd`]. Beside the pipeline, the [`registry`] says which prompt version each request
//! gets ([`registry::resolve`], embeddable), [`rollout`] moves a canary through judged steps,
//! and [`serve`] answers resolutions over HTTP and, with [`intake`], takes events over HTTP
//! (NDJSON and OpenTelemetry spans) into the lake.

pub mod cmd;
pub mod error;
pub mod event;
pub mod r#gen;
pub mod ingest;
pub mod intake;
pub mod judge;
pub mod lake;
pub mod query;
pub mod registry;
pub mod report;
pub mod review;
pub mod rollout;
pub mod serve;

pub use error::{Error, ErrorKind, Result};
pub use lake::Lake;
