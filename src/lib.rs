//! promptgate: make LLM prompt changes boring to ship.
//!
//! Data flows one way: events in ([`ingest`]) → the Parquet [`lake`] → [`query`] (DataFusion)
//! → rollups → the canary judge → a verdict rendered by [`report`]. Each stage takes and returns
//! plain data (Arrow batches or small structs); the CLI in `main.rs` only parses arguments and
//! calls [`cmd`].

pub mod cmd;
pub mod error;
pub mod event;
pub mod r#gen;
pub mod ingest;
pub mod judge;
pub mod lake;
pub mod query;
pub mod report;

pub use error::{Error, ErrorKind, Result};
pub use lake::Lake;
