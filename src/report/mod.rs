//! Rendering of query results: one place for the `--format table|csv|json|ndjson` choices.

use std::io::Write;

use arrow::array::RecordBatch;
use datafusion::prelude::DataFrame;
use futures::StreamExt;

use crate::error::{Error, Result};

pub mod checklist;
mod verdict;
pub use verdict::{Subject, VerdictFormat, write_verdict};

/// Output format of tabular results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned text table for people.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

fn io_err(e: std::io::Error) -> Error {
    Error::runtime(format!("cannot write output: {e}"))
}

/// Runs `df` and writes its rows to `out`. CSV and NDJSON stream batch by batch; the table
/// and JSON array need every row first.
pub async fn write_dataframe(
    df: DataFrame,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<()> {
    match format {
        OutputFormat::Table | OutputFormat::Json => {
            let schema = df.schema().inner().clone();
            let batches = df.collect().await?;
            write_batches(&schema, &batches, format, out)
        }
        OutputFormat::Csv => {
            let mut stream = df.execute_stream().await?;
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            let mut wrote = false;
            while let Some(b) = stream.next().await {
                w.write(&b?)?;
                wrote = true;
            }
            if !wrote {
                // Header only, so an empty result still says which columns it has.
                let schema = stream.schema();
                w.write(&RecordBatch::new_empty(schema))?;
            }
            Ok(())
        }
        OutputFormat::Ndjson => {
            let mut stream = df.execute_stream().await?;
            let mut w = arrow::json::LineDelimitedWriter::new(&mut *out);
            while let Some(b) = stream.next().await {
                w.write(&b?)?;
            }
            w.finish()?;
            Ok(())
        }
    }
}

/// `x` rounded to `digits` significant digits (so 2683.8999980000003 becomes 2683.9 at 6):
/// what people read needs no float noise. Non-finite values are returned as they are.
pub fn round_sig(x: f64, digits: u32) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let magnitude = x.abs().log10().floor() as i32;
    let scale = digits as i32 - 1 - magnitude;
    if !(-300..=300).contains(&scale) {
        return x;
    }
    let factor = 10f64.powi(scale.abs());
    if scale >= 0 {
        (x * factor).round() / factor
    } else {
        (x / factor).round() * factor
    }
}

/// `x` for people, at `digits` significant digits: `2683.9`, `0.0123`, `1.5e-7`.
pub fn sig(x: f64, digits: u32) -> String {
    let r = round_sig(x, digits);
    if r != 0.0 && (r.abs() >= 1e9 || r.abs() < 1e-4) {
        format!("{r:e}")
    } else {
        format!("{r}")
    }
}

/// Float columns rounded to 6 significant digits, for the table people read (CSV and JSON keep
/// full precision).
fn rounded_for_people(batch: &RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{ArrayRef, AsArray};
    use arrow::datatypes::{DataType, Float64Type};
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Float64 => std::sync::Arc::new(
                c.as_primitive::<Float64Type>()
                    .unary::<_, Float64Type>(|x| round_sig(x, 6)),
            ) as ArrayRef,
            _ => c.clone(),
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Writes collected batches in `format`.
pub fn write_batches(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<()> {
    match format {
        OutputFormat::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "(no rows; columns: {})", names.join(", ")).map_err(io_err)?;
                return Ok(());
            }
            let rounded = batches
                .iter()
                .map(rounded_for_people)
                .collect::<Result<Vec<_>>>()?;
            let table = arrow::util::pretty::pretty_format_batches(&rounded)?;
            writeln!(out, "{table}").map_err(io_err)
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
            Ok(())
        }
        OutputFormat::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            // Writes `[]` for no rows too.
            w.finish()?;
            drop(w);
            writeln!(out).map_err(io_err)
        }
        OutputFormat::Ndjson => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people_lose_float_noise() {
        assert_eq!(sig(2683.8999980000003, 6), "2683.9");
        assert_eq!(round_sig(2683.8999980000003, 6), 2683.9);
        assert_eq!(sig(0.012345678, 3), "0.0123");
        assert_eq!(sig(1234567.0, 3), "1230000");
        assert_eq!(sig(1.5e-7, 2), "1.5e-7");
        assert_eq!(sig(0.0, 3), "0");
        assert!(round_sig(f64::INFINITY, 3).is_infinite());
    }
}
