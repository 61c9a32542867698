//! Validated records of one chunk of input, split by day, plus the chunk's rejects.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;

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
}

/// Collects validated records of one chunk into per-day Arrow builders.
pub(crate) struct ChunkSink {
    kind: RecordKind,
    /// Expected records, to size builders.
    rows_hint: usize,
    now_us: i64,
    events: BTreeMap<i32, EventBatchBuilder>,
    labels: BTreeMap<i32, LabelBatchBuilder>,
    rejects: Vec<Reject>,
    records: u64,
}

impl ChunkSink {
    pub fn new(kind: RecordKind, now_us: i64, rows_hint: usize) -> Self {
        Self {
            kind,
            rows_hint,
            now_us,
            events: BTreeMap::new(),
            labels: BTreeMap::new(),
            rejects: Vec::new(),
            records: 0,
        }
    }

    pub fn kind(&self) -> RecordKind {
        self.kind
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
        let ev = match fields.and_then(event::validate_event) {
            Ok(ev) => ev,
            Err(reason) => return self.reject(line, raw, reason),
        };
        self.records += 1;
        let day = day_of(ev.ts_us);
        let hint = self.rows_hint;
        self.events
            .entry(day)
            .or_insert_with(|| EventBatchBuilder::with_capacity(hint))
            .append(&ev);
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
                .entry(day)
                .or_insert_with(LabelBatchBuilder::new)
                .append(&rec);
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
            .entry(day_of(rec.ts_us))
            .or_insert_with(LabelBatchBuilder::new)
            .append(&rec);
    }

    /// Records seen so far, valid or not.
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn finish(self) -> Parsed {
        Parsed {
            events: self
                .events
                .into_iter()
                .map(|(d, b)| (d, b.finish()))
                .collect(),
            labels: self
                .labels
                .into_iter()
                .map(|(d, b)| (d, b.finish()))
                .collect(),
            rejects: self.rejects,
            records: self.records,
        }
    }
}
