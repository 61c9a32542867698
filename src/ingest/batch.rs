//! Validated records -> Arrow `RecordBatch`es, one builder per lake table.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};

use crate::event::{Event, LabelRecord, event_schema, label_schema};

/// Appends events column by column; `finish` yields a batch in [`event_schema`].
pub(crate) struct EventBatchBuilder {
    event_id: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    route: StringBuilder,
    env: StringBuilder,
    model: StringBuilder,
    tier: StringBuilder,
    prompt_version: StringBuilder,
    prompt_sha: StringBuilder,
    duration_ms: Float64Builder,
    tokens_in: Int64Builder,
    tokens_out: Int64Builder,
    status: StringBuilder,
    input: StringBuilder,
    output: StringBuilder,
    attributes: StringBuilder,
    unit_id: StringBuilder,
    response_model: StringBuilder,
}

impl EventBatchBuilder {
    /// A builder sized for about `rows` events, so appends rarely reallocate.
    pub fn with_capacity(rows: usize) -> Self {
        let s = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        Self {
            event_id: s(36),
            ts: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            route: s(12),
            env: s(8),
            model: s(16),
            tier: s(8),
            prompt_version: s(4),
            prompt_sha: s(16),
            duration_ms: Float64Builder::with_capacity(rows),
            tokens_in: Int64Builder::with_capacity(rows),
            tokens_out: Int64Builder::with_capacity(rows),
            status: s(4),
            input: s(100),
            output: s(100),
            attributes: s(32),
            unit_id: s(12),
            response_model: s(8),
        }
    }

    pub fn append(&mut self, e: &Event<'_>) {
        self.event_id.append_value(&e.event_id);
        self.ts.append_value(e.ts_us);
        self.route.append_value(&e.route);
        self.env.append_value(&e.env);
        self.model.append_value(&e.model);
        self.tier.append_value(&e.tier);
        self.prompt_version.append_value(&e.prompt_version);
        self.prompt_sha.append_option(e.prompt_sha.as_deref());
        self.duration_ms.append_value(e.duration_ms);
        self.tokens_in.append_value(e.tokens_in);
        self.tokens_out.append_value(e.tokens_out);
        self.status.append_value(e.status.as_str());
        self.input.append_option(e.input.as_deref());
        self.output.append_option(e.output.as_deref());
        self.attributes.append_option(e.attributes.as_deref());
        self.unit_id.append_option(e.unit_id.as_deref());
        self.response_model
            .append_option(e.response_model.as_deref());
    }

    pub fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.route.finish()),
            Arc::new(self.env.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.tier.finish()),
            Arc::new(self.prompt_version.finish()),
            Arc::new(self.prompt_sha.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.tokens_in.finish()),
            Arc::new(self.tokens_out.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.input.finish()),
            Arc::new(self.output.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.unit_id.finish()),
            Arc::new(self.response_model.finish()),
        ];
        RecordBatch::try_new(event_schema(), columns).expect("builders match the event schema")
    }
}

/// Appends labels; `finish` yields a batch in [`label_schema`].
pub(crate) struct LabelBatchBuilder {
    label_id: StringBuilder,
    event_id: StringBuilder,
    label: StringBuilder,
    labeler: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    note: StringBuilder,
}

impl LabelBatchBuilder {
    pub fn new() -> Self {
        Self {
            label_id: StringBuilder::new(),
            event_id: StringBuilder::new(),
            label: StringBuilder::new(),
            labeler: StringBuilder::new(),
            ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            note: StringBuilder::new(),
        }
    }

    pub fn append(&mut self, l: &LabelRecord<'_>) {
        self.label_id.append_value(l.label_id());
        self.event_id.append_value(&l.event_id);
        self.label.append_value(l.label.as_str());
        self.labeler.append_option(l.labeler.as_deref());
        self.ts.append_value(l.ts_us);
        self.note.append_option(l.note.as_deref());
    }

    pub fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.label_id.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.label.finish()),
            Arc::new(self.labeler.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.note.finish()),
        ];
        RecordBatch::try_new(label_schema(), columns).expect("builders match the label schema")
    }
}
