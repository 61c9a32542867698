//! The labeled-events index (`llm_labeled_events`): for every event some label names, the
//! event's id, ts and segment columns. The judge counts labels per segment from this small table
//! instead of reading the id of every event in its window.
//!
//! Invariant, kept by every ingest: the index holds exactly the lake's events whose id a label
//! names, once each. An ingest adds events E' and labels L' to a lake with events E and labels
//! L; the pairs it must index are (L ∪ L') ∩ E' and L' ∩ E:
//! - each day's new events are matched in memory, as they are flushed, against the label ids
//!   that have no index row yet (labels are far fewer than events, so those ids fit in memory);
//! - ids of L' still unmatched at the end are looked up once in the lake (and this run's staged
//!   events) with a semi join.
//!
//! A lake written before the index existed has no `llm_labeled_events` table. Its next
//! ingest builds the index from all labels; until then the judge joins labels to the events.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::{filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use datafusion::prelude::{SessionContext, col};
use foldhash::fast::RandomState;
use futures::StreamExt;

use super::dedupe;
use crate::error::Result;
use crate::event::{LABELED_EVENT_COLUMNS, day_of};
use crate::lake::{Snapshot, Table, Transaction};

type Ids = HashSet<String, RandomState>;

/// What one ingest run adds to the index.
pub(super) struct LabelIndex {
    /// Ids named by a label (of the lake or of this run) with no index row yet.
    pending: Ids,
    /// Ids with an index row (in the lake, or found by this run).
    indexed: Ids,
    /// Ids to look up among the lake's events at the end: labels of this run, and all labels
    /// when the index is being built for the first time.
    lookup: Ids,
    /// Index rows found by this run, per day of the event.
    rows: BTreeMap<i32, Vec<RecordBatch>>,
    /// Whether the lake has an index directory; if not, this run creates it.
    exists: bool,
}

impl LabelIndex {
    /// Reads the ids of the lake's labels and of its index.
    pub async fn load(lake: &Snapshot) -> Result<Self> {
        let exists = lake.has(Table::LabeledEvents);
        let indexed = if exists {
            distinct(lake, Table::LabeledEvents, "event_id").await?
        } else {
            Ids::default()
        };
        let pending: Ids = distinct(lake, Table::Labels, "event_id")
            .await?
            .into_iter()
            .filter(|id| !indexed.contains(id))
            .collect();
        let lookup = if exists {
            Ids::default()
        } else {
            pending.clone()
        };
        Ok(Self {
            pending,
            indexed,
            lookup,
            rows: BTreeMap::new(),
            exists,
        })
    }

    /// Notes the event ids named by a batch of labels (rows of `llm_labels`) of this run.
    pub fn add_labels(&mut self, labels: &RecordBatch) {
        let idx = Table::Labels
            .schema()
            .index_of("event_id")
            .expect("labels have event_id");
        for id in labels.column(idx).as_string::<i32>().iter().flatten() {
            if !self.indexed.contains(id) && !self.pending.contains(id) {
                self.pending.insert(id.to_string());
                self.lookup.insert(id.to_string());
            }
        }
    }

    /// Indexes the events of `batches` (new, deduplicated events of `day`) that a label names.
    pub fn add_events(&mut self, day: i32, batches: &[RecordBatch]) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let idx = Table::Events
            .schema()
            .index_of("event_id")
            .expect("events have event_id");
        for b in batches {
            let ids = b.column(idx).as_string::<i32>();
            let mut hits = 0;
            let mask: BooleanArray = ids
                .iter()
                .map(|id| {
                    let hit = id.and_then(|id| self.pending.take(id));
                    if let Some(id) = hit {
                        self.lookup.remove(&id);
                        self.indexed.insert(id);
                        hits += 1;
                        return Some(true);
                    }
                    Some(false)
                })
                .collect();
            if hits == 0 {
                continue;
            }
            let rows = filter_record_batch(&project(b)?, &mask)?;
            self.rows.entry(day).or_default().push(rows);
        }
        Ok(())
    }

    /// Looks up the remaining ids of this run's labels among the lake's events and this run's
    /// staged events, and stages the index rows found. Returns how many rows were added.
    pub async fn finish(mut self, lake: &Snapshot, tx: &mut Transaction<'_>) -> Result<u64> {
        if !self.lookup.is_empty() {
            let candidates =
                dedupe::Candidates::new(self.lookup.iter().map(|s| Some(s.as_str())).collect());
            let staged = tx.staged_table_dir(Table::Events);
            let found = dedupe::rows_with_ids(
                Some(lake),
                Some(&staged),
                Table::Events,
                &candidates,
                &LABELED_EVENT_COLUMNS,
            )
            .await?;
            for b in found {
                self.add_found(b)?;
            }
        }
        let mut added = 0;
        for (day, batches) in &self.rows {
            let path = tx.new_file(Table::LabeledEvents, *day);
            added += dedupe::write_sorted(&path, Table::LabeledEvents, batches)?;
        }
        if !self.exists && added == 0 {
            // Mark the index as built (and empty) so readers trust it from now on.
            tx.create_table(Table::LabeledEvents);
        }
        Ok(added)
    }

    /// Adds looked-up rows (already in index columns), split by the day of each event.
    fn add_found(&mut self, b: RecordBatch) -> Result<()> {
        // A lake holding an event twice (files copied in by hand) must not index it twice.
        let ids = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let keep: BooleanArray = ids
            .iter()
            .map(|id| Some(id.is_some_and(|id| self.indexed.insert(id.to_string()))))
            .collect();
        let b = filter_record_batch(&b, &keep)?;
        // The join's output schema may differ in nullability; store the index's own.
        let b = RecordBatch::try_new(Table::LabeledEvents.schema(), b.columns().to_vec())?;
        let ts_idx = b.schema().index_of("ts")?;
        let ts = b.column(ts_idx).as_primitive::<TimestampMicrosecondType>();
        let mut by_day: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
        for (i, t) in ts.values().iter().enumerate() {
            by_day.entry(day_of(*t)).or_default().push(i as u32);
        }
        for (day, rows) in by_day {
            let rows = take_record_batch(&b, &arrow::array::UInt32Array::from(rows))?;
            self.rows.entry(day).or_default().push(rows);
        }
        Ok(())
    }
}

/// An events batch cut down to the index's columns.
fn project(events: &RecordBatch) -> Result<RecordBatch> {
    let schema = Table::Events.schema();
    let indices: Vec<usize> = LABELED_EVENT_COLUMNS
        .iter()
        .map(|c| schema.index_of(c).expect("index column is an event column"))
        .collect();
    Ok(events.project(&indices)?)
}

/// Distinct values of a string column of one of the lake's tables.
async fn distinct(lake: &Snapshot, table: Table, column: &str) -> Result<Ids> {
    let mut out = Ids::default();
    if lake.files(table, None)?.is_empty() {
        return Ok(out);
    }
    let ctx = SessionContext::new();
    lake.register(&ctx, table, "t", false)?;
    let mut stream = ctx
        .table("t")
        .await?
        .select(vec![col(column)])?
        .execute_stream()
        .await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let ids = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        out.extend(ids.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(out)
}
