//! Rendering of query results: one place for the `--format table|csv|json|ndjson` choices.

use std::io::Write;

use arrow::array::RecordBatch;
use datafusion::prelude::DataFrame;
use futures::StreamExt;

use crate::error::{Error, Result};

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
            let table = arrow::util::pretty::pretty_format_batches(batches)?;
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
