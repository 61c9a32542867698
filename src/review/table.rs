//! The `llm_reviews` table: one row per reviewed item and labeler, one Parquet file per review
//! (`<lake>/llm_reviews/<review id>.parquet`), so scoring a review again replaces its rows and
//! never doubles them.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;
use parquet::arrow::ArrowWriter;

use crate::error::{Error, Result};
use crate::event::ts_type;
use crate::lake::{Lake, Table};

use super::score::{LabelRow, Preference, ReviewScore};
use super::store::ReviewManifest;

/// The table's name in SQL.
pub const REVIEWS_TABLE: &str = "llm_reviews";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        s("review_id", false),
        s("route", false),
        s("env", false),
        s("baseline_version", false),
        s("canary_version", false),
        Field::new("item", DataType::Int64, false),
        s("event_id", true),
        s("labeler", false),
        s("baseline_label", false),
        s("canary_label", false),
        // The preferred version's name, or `tie`.
        s("preferred", false),
        s("note", true),
        s("verdict", false),
        Field::new("scored_at", ts_type(), false),
    ]))
});

/// The schema of `llm_reviews`.
pub fn reviews_schema() -> SchemaRef {
    SCHEMA.clone()
}

fn table_dir(lake: &Lake) -> PathBuf {
    lake.root().join(REVIEWS_TABLE)
}

/// Registers `llm_reviews` of a lake of the old layout (no log) when it has reviews; a Delta
/// lake's is registered with its other tables, from the same snapshot.
pub fn register_legacy(lake: &Lake, ctx: &SessionContext) -> Result<()> {
    let dir = table_dir(lake);
    if !dir.is_dir() {
        return Ok(());
    }
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    crate::lake::register_listing(ctx, &dir, reviews_schema(), options, REVIEWS_TABLE)
}

/// Writes (or replaces) the review's rows: one commit that adds the new file and removes the
/// review's earlier one, so readers see one or the other, never both.
pub async fn write_review_rows(
    lake: &Lake,
    manifest: &ReviewManifest,
    event_ids: &std::collections::HashMap<u32, String>,
    rows: &[LabelRow],
    score: &ReviewScore,
) -> Result<PathBuf> {
    let n = rows.len();
    let text = |f: &dyn Fn(&LabelRow) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let fixed = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
    let label = |good: bool| if good { "good" } else { "bad" }.to_string();
    let baseline = score.baseline.version.clone();
    let canary = score.canary.version.clone();
    let now = chrono::Utc::now().timestamp_micros();
    let columns: Vec<ArrayRef> = vec![
        fixed(&manifest.id),
        fixed(&manifest.route),
        fixed(&manifest.env),
        fixed(&baseline),
        fixed(&canary),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| i64::from(r.item)).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| event_ids.get(&r.item).cloned())
                .collect::<Vec<_>>(),
        )),
        text(&|r| r.labeler.clone()),
        text(&|r| label(r.baseline_good)),
        text(&|r| label(r.canary_good)),
        text(&|r| match r.preferred {
            Preference::Canary => canary.clone(),
            Preference::Baseline => baseline.clone(),
            Preference::Tie => "tie".to_string(),
        }),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| (!r.note.is_empty()).then(|| r.note.clone()))
                .collect::<Vec<_>>(),
        )),
        fixed(&score.verdict),
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(reviews_schema(), columns)?;
    let lock = lake.lock().await?;
    let snapshot = lock.snapshot();
    let mut tx = lock.begin()?;
    let name = format!("{}-{}.parquet", manifest.id, uuid::Uuid::new_v4().simple());
    let staged = tx.new_table_file(Table::Reviews, &name);
    if let Some(parent) = staged.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
    }
    let file =
        std::fs::File::create(&staged).map_err(|e| Error::io("cannot create", &staged, e))?;
    let mut w = ArrowWriter::try_new(file, reviews_schema(), None)?;
    w.write(&batch)?;
    w.into_inner()?
        .sync_all()
        .map_err(|e| Error::io("cannot fsync", &staged, e))?;
    // The review's earlier rows (`<id>-<uuid>.parquet`; `<id>.parquet` before Delta Lake).
    let earlier = format!("{}-", manifest.id);
    let legacy = format!("{}.parquet", manifest.id);
    for f in snapshot.data_files(Table::Reviews) {
        if f.path == legacy
            || (f.path.starts_with(&earlier) && f.path.len() == earlier.len() + 32 + 8)
        {
            tx.remove_file(Table::Reviews, f);
        }
    }
    if !snapshot.has(Table::Reviews) {
        tx.create_table(Table::Reviews);
    }
    tx.commit("review").await?;
    Ok(table_dir(lake).join(name))
}
