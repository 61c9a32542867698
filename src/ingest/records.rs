//! Validated records of one chunk of input, split by day, plus the chunk's rejects.
//!
//! A chunk's records go into one builder per table whatever days they fall on, and are split by
//! day only when the chunk is finished: memory follows the rows actually read, not the number
//! of days a chunk touches (input in random time order touches hundreds).

use std::collections::BTreeMap;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;

use super::batch::{EventBatchBuilder, LabelBatchBuilder};
use crate::event::{self, LabelRecord, RawValue, RejectReason, day_of};

/// What an ingest reads: events (with optional inline labels) or label records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Events,
    Labels,
}

/// A rejected record: where it was, why, and its bytes exactly as read.
#[derive(Debug)]
pub(crate) struct Reject {
    pub line: u64,
    pub reason: RejectReason,
    pub raw: Vec<u8>,
}

/// Output of parsing one chunk.
#[derive(Default)]
pub(crate) struct Parsed {
    pub events: Vec<(i32, RecordBatch)>,
    pub labels: Vec<(i32, RecordBatch)>,
    pub rejects: Vec<Reject>,
    /// Records read (valid or not); blank lines are not records.
    pub records: u64,
    /// OTLP spans that are not LLM calls (not records).
    pub skipped: u64,
    /// Bytes of the largest row kept (see [`super::runs::max_row_bytes`]).
    pub max_row_bytes: usize,
}

/// Collects validated records of one chunk into per-day Arrow builders.
pub(crate) struct ChunkSink {
    /// Expected records, to size builders.
    rows_hint: usize,
    now_us: i64,
    events: Option<EventBatchBuilder>,
    event_days: Vec<i32>,
    labels: Option<LabelBatchBuilder>,
    label_days: Vec<i32>,
    rejects: Vec<Reject>,
    records: u64,
}

impl ChunkSink {
    pub fn new(now_us: i64, rows_hint: usize) -> Self {
        Self {
            rows_hint,
            now_us,
            events: None,
            event_days: Vec::new(),
            labels: None,
            label_days: Vec::new(),
            rejects: Vec::new(),
            records: 0,
        }
    }

    pub fn reject(&mut self, line: u64, raw: &[u8], reason: RejectReason) {
        self.records += 1;
        self.rejects.push(Reject {
            line,
            reason,
            raw: raw.to_vec(),
        });
    }

    /// Validates an event record's fields and keeps it, or rejects the raw record.
    pub fn event(
        &mut self,
        line: u64,
        raw: &[u8],
        fields: Result<event::EventFields<'_>, RejectReason>,
    ) {
        match fields.and_then(event::validate_event) {
            Ok(ev) => self.keep(ev),
            Err(reason) => self.reject(line, raw, reason),
        }
    }

    /// Keeps a valid event (and its inline label).
    fn keep(&mut self, ev: event::Event<'_>) {
        self.records += 1;
        let day = day_of(ev.ts_us);
        let hint = self.rows_hint;
        self.events
            .get_or_insert_with(|| EventBatchBuilder::with_capacity(hint))
            .append(&ev);
        self.event_days.push(day);
        if let Some(label) = ev.label {
            // An inline label is a label like any other, stamped with the event's time.
            let rec = LabelRecord {
                event_id: ev.event_id.clone(),
                label,
                labeler: None,
                ts_us: ev.ts_us,
                ts_given: true,
                note: None,
            };
            self.labels
                .get_or_insert_with(LabelBatchBuilder::new)
                .append(&rec);
            self.label_days.push(day);
        }
    }

    /// [`Self::event`] for a record whose raw form is made only when it is rejected (the OTLP
    /// JSON of a span).
    pub fn event_or(
        &mut self,
        line: u64,
        fields: Result<event::EventFields<'_>, RejectReason>,
        raw: impl FnOnce() -> Vec<u8>,
    ) {
        match fields.and_then(event::validate_event) {
            Ok(ev) => self.keep(ev),
            Err(reason) => self.reject(line, &raw(), reason),
        }
    }

    /// Validates a label record's fields and keeps it, or rejects the raw record.
    pub fn label(
        &mut self,
        line: u64,
        raw: &[u8],
        fields: Result<[Option<RawValue<'_>>; 5], RejectReason>,
    ) {
        let now = self.now_us;
        let rec = match fields.and_then(|f| event::validate_label(f, now)) {
            Ok(r) => r,
            Err(reason) => return self.reject(line, raw, reason),
        };
        self.records += 1;
        self.labels
            .get_or_insert_with(LabelBatchBuilder::new)
            .append(&rec);
        self.label_days.push(day_of(rec.ts_us));
    }

    pub fn finish(self) -> Parsed {
        let events = self.events.map(EventBatchBuilder::finish);
        let labels = self.labels.map(LabelBatchBuilder::finish);
        let max_row_bytes = events
            .iter()
            .chain(&labels)
            .map(super::runs::max_row_bytes)
            .max()
            .unwrap_or(0);
        Parsed {
            events: split_by_day(events, &self.event_days),
            labels: split_by_day(labels, &self.label_days),
            rejects: self.rejects,
            records: self.records,
            skipped: 0,
            max_row_bytes,
        }
    }
}

/// Splits a batch into one batch per day (`days[i]` is row i's day), in day order. A batch of
/// one day (input in time order) is passed through without a copy.
fn split_by_day(batch: Option<RecordBatch>, days: &[i32]) -> Vec<(i32, RecordBatch)> {
    let Some(batch) = batch else {
        return Vec::new();
    };
    let first = days[0];
    if days.iter().all(|d| *d == first) {
        return vec![(first, batch)];
    }
    let mut rows: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for (i, d) in days.iter().enumerate() {
        rows.entry(*d).or_default().push(i as u32);
    }
    rows.into_iter()
        .map(|(d, idx)| {
            let part = take_record_batch(&batch, &UInt32Array::from(idx))
                .expect("indices are rows of the batch");
            (d, part)
        })
        .collect()
}
