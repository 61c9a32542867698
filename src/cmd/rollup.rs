//! `promptgate rollup`: per-segment, per-version metrics for one route.

use crate::error::Result;
use crate::lake::Lake;
use crate::query::{self, RollupSpec};
use crate::report::{self, OutputFormat};

pub async fn run(lake: &Lake, spec: &RollupSpec, format: OutputFormat) -> Result<i32> {
    query::check_segment_columns(&spec.by)?;
    let ctx = query::lake_session(lake).await?;
    let df = query::rollup(&ctx, spec).await?;
    let mut out = super::stdout();
    report::write_dataframe(df, format, &mut out).await?;
    super::flush(&mut out)?;
    Ok(0)
}
