//! Rendering of query results: one place for the `--format table|csv|json|ndjson` choices.

use std::io::Write;

use arrow::array::RecordBatch;
use datafusion::prelude::DataFrame;
use futures::StreamExt;

use crate::error::{Error, Result};

pub mod checklist;
pub mod timeline;
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

/// The most rows, and bytes of Arrow data, one table of `--format table` lays out at once.
const TABLE_CHUNK_ROWS: usize = 10_000;
const TABLE_CHUNK_BYTES: usize = 4 << 20;

/// Runs `df` and writes its rows to `out`, in memory bounded whatever the result's size: CSV,
/// NDJSON and the JSON array stream batch by batch, and the table is laid out a bounded chunk
/// (10,000 rows or 4 MiB of Arrow data; laying it out takes several times that) at a time, with a note on stderr when it took several.
pub async fn write_dataframe(
    df: DataFrame,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<()> {
    match format {
        OutputFormat::Table => {
            let mut stream = df.execute_stream().await?;
            let schema = stream.schema();
            // Laid out a bounded chunk at a time: a result of any size prints in bounded memory.
            let (mut chunk, mut rows, mut bytes) = (Vec::new(), 0usize, 0usize);
            let (mut tables, mut total) = (0usize, 0usize);
            while let Some(b) = stream.next().await {
                let b = b?;
                if b.num_rows() == 0 {
                    continue;
                }
                // A batch of large rows is taken a slice at a time (slices share its buffers).
                let row_bytes = b.get_array_memory_size().div_ceil(b.num_rows()).max(1);
                let mut at = 0;
                while at < b.num_rows() {
                    let room = TABLE_CHUNK_BYTES.saturating_sub(bytes) / row_bytes;
                    let take = room
                        .clamp(1, TABLE_CHUNK_ROWS - rows)
                        .min(b.num_rows() - at);
                    chunk.push(b.slice(at, take));
                    (at, rows, bytes) = (at + take, rows + take, bytes + take * row_bytes);
                    if rows >= TABLE_CHUNK_ROWS || bytes >= TABLE_CHUNK_BYTES {
                        write_batches(&schema, &chunk, format, out)?;
                        (tables, total) = (tables + 1, total + rows);
                        (chunk, rows, bytes) = (Vec::new(), 0, 0);
                    }
                }
            }
            if !chunk.is_empty() || tables == 0 {
                write_batches(&schema, &chunk, format, out)?;
                (tables, total) = (tables + 1, total + rows);
            }
            if tables > 1 {
                let _ = writeln!(
                    std::io::stderr(),
                    "promptgate: {total} rows, laid out in {tables} tables of at most {TABLE_CHUNK_ROWS} rows (a table holds its rows in memory); --format csv, ndjson or json print one stream"
                );
            }
            Ok(())
        }
        OutputFormat::Json => {
            let mut stream = df.execute_stream().await?;
            let mut w = arrow::json::ArrayWriter::new(&mut *out);
            while let Some(b) = stream.next().await {
                w.write(&b?)?;
            }
            // Writes `[]` for no rows too.
            w.finish()?;
            drop(w);
            writeln!(out).map_err(io_err)
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
