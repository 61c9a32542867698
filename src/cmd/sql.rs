//! `promptgate sql`: ad-hoc, read-only SQL over the lake.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::lake::{AsOf, Lake};
use crate::query;
use crate::report::{self, OutputFormat};

/// Where the SQL comes from.
pub enum SqlText {
    Inline(String),
    File(String),
}

pub async fn run(
    lake: &Lake,
    text: SqlText,
    params: &[String],
    as_of: &AsOf,
    format: OutputFormat,
    timeout_secs: Option<f64>,
) -> Result<i32> {
    let timeout = match timeout_secs {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 && s <= 1e9 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(Error::usage(format!(
                "--timeout {s}: give a number of seconds above 0"
            )));
        }
    };
    let work = query(lake, text, params, as_of, format);
    match timeout {
        None => work.await,
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(done) => done,
            // Dropping the query's stream stops its tasks; nothing was written to the lake.
            Err(_) => Err(Error::runtime(format!(
                "the query ran longer than its {limit:?} timeout and was stopped (any rows printed above are a partial result)"
            ))
            .with_hint("narrow it (a WHERE on date or route, a LIMIT), or give a larger --timeout")),
        },
    }
}

async fn query(
    lake: &Lake,
    text: SqlText,
    params: &[String],
    as_of: &AsOf,
    format: OutputFormat,
) -> Result<i32> {
    let sql = match text {
        SqlText::Inline(s) => s,
        SqlText::File(path) => std::fs::read_to_string(&path)
            .map_err(|e| Error::input(format!("cannot read {path}: {e}")))?,
    };
    if sql.trim().is_empty() {
        return Err(Error::usage("the query is empty")
            .with_hint("promptgate sql \"SELECT COUNT(*) FROM llm_events\""));
    }
    let ctx = query::lake_session_at(lake, as_of).await?;
    let df = query::plan(&ctx, &sql, query::parse_params(params)?).await?;
    let mut out = super::stdout();
    report::write_dataframe(df, format, &mut out)
        .await
        .map_err(memory_hint)
        .map_err(|e| query::missing_file_hint(e, as_of))?;
    super::flush(&mut out)?;
    Ok(0)
}

/// Says what to do when a query ran out of its memory pool.
fn memory_hint(e: Error) -> Error {
    if e.message.contains("Resources exhausted") && e.hint.is_none() {
        let mib = query::query_memory_bytes().map_or(0, |b| b >> 20);
        e.with_hint(format!(
            "the query needs more than its {mib} MiB memory pool; narrow it (a WHERE on date or route, fewer columns), or raise {}",
            query::MEMORY_ENV
        ))
    } else {
        e
    }
}
