//! `promptgate sql`: ad-hoc, read-only SQL over the lake.

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
