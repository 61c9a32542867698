//! The event and label schema: Arrow schemas, field names and their accepted spellings, and the
//! validation rules every record must pass before it reaches the lake.
//!
//! One LLM call is one row of `llm_events`; a human judgement of a call is one row of
//! `llm_labels`. Readers (NDJSON, CSV) turn raw text into [`RawValue`]s per field; the functions
//! here decide what is valid, so both formats share one set of rules and one set of messages.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};

/// Table of LLM call events.
pub const EVENTS_TABLE: &str = "llm_events";
/// Table of human labels.
pub const LABELS_TABLE: &str = "llm_labels";
/// Index of labeled events: for each event that has a label, its segment columns and ts, so
/// the judge counts labels per segment without reading every event's id.
pub const LABELED_EVENTS_TABLE: &str = "llm_labeled_events";
/// View: every event with its latest label.
pub const LABELED_VIEW: &str = "llm_events_labeled";
/// Columns a rollup or the judge may segment by: schema columns only, never user text.
pub const SEGMENT_COLUMNS: [&str; 7] = [
    "env",
    "model",
    "tier",
    "prompt_sha",
    "status",
    "date",
    "response_model",
];
/// Tier used when an event has none.
pub const DEFAULT_TIER: &str = "default";

/// Timestamp type of every `ts` column: UTC, microseconds.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static EVENT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        s("event_id", false),
        Field::new("ts", ts_type(), false),
        s("route", false),
        s("env", false),
        s("model", false),
        s("tier", false),
        s("prompt_version", false),
        s("prompt_sha", true),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("tokens_in", DataType::Int64, false),
        Field::new("tokens_out", DataType::Int64, false),
        s("status", false),
        s("input", true),
        s("output", true),
        s("attributes", true),
        s("unit_id", true),
        // The model snapshot that answered (`gen_ai.response.model`), which a provider may move
        // an alias to without notice. Added after the first lakes were written: their files
        // lack it and read it as null (see `lake::txn::upgrade_schemas`).
        s("response_model", true),
    ]))
});

static LABEL_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("label_id", DataType::Utf8, false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("labeler", DataType::Utf8, true),
        Field::new("ts", ts_type(), false),
        Field::new("note", DataType::Utf8, true),
    ]))
});

/// Columns of an event kept in the labeled-events index: its id and every column a judge may
/// filter or segment by.
pub const LABELED_EVENT_COLUMNS: [&str; 10] = [
    "event_id",
    "ts",
    "route",
    "env",
    "model",
    "tier",
    "prompt_version",
    "prompt_sha",
    "status",
    "unit_id",
];

static LABELED_EVENT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let indices: Vec<usize> = LABELED_EVENT_COLUMNS
        .iter()
        .map(|c| {
            EVENT_SCHEMA
                .index_of(c)
                .expect("index column is an event column")
        })
        .collect();
    Arc::new(EVENT_SCHEMA.project(&indices).expect("valid projection"))
});

/// Arrow schema of `llm_labeled_events`: a projection of [`event_schema`].
pub fn labeled_event_schema() -> SchemaRef {
    LABELED_EVENT_SCHEMA.clone()
}

/// Arrow schema of `llm_events` as stored in Parquet (the `date` partition lives in the path).
pub fn event_schema() -> SchemaRef {
    EVENT_SCHEMA.clone()
}

/// Arrow schema of `llm_labels` as stored in Parquet.
pub fn label_schema() -> SchemaRef {
    LABEL_SCHEMA.clone()
}

/// A field of an event record, after its spelling has been resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventField {
    EventId,
    Ts,
    Route,
    Env,
    Model,
    Tier,
    PromptVersion,
    PromptSha,
    DurationMs,
    TokensIn,
    TokensOut,
    Status,
    Input,
    Output,
    Attributes,
    UnitId,
    ResponseModel,
    Label,
}

/// Number of [`EventField`]s: the schema's columns and the inline `label`.
pub const EVENT_FIELD_COUNT: usize = 18;

impl EventField {
    /// Every field, in schema order (the inline `label` last).
    pub const ALL: [EventField; EVENT_FIELD_COUNT] = [
        Self::EventId,
        Self::Ts,
        Self::Route,
        Self::Env,
        Self::Model,
        Self::Tier,
        Self::PromptVersion,
        Self::PromptSha,
        Self::DurationMs,
        Self::TokensIn,
        Self::TokensOut,
        Self::Status,
        Self::Input,
        Self::Output,
        Self::Attributes,
        Self::UnitId,
        Self::ResponseModel,
        Self::Label,
    ];

    /// Resolves a key as written by an application logger: the schema's snake_case name or the
    /// camelCase spelling loggers commonly emit (`promptVersion`, `durationMs`, ...), and
    /// `timestamp` for `ts`. Anything else is an unknown field and goes into `attributes`.
    pub fn from_key(key: &str) -> Option<Self> {
        Some(match key {
            "event_id" | "eventId" => Self::EventId,
            "ts" | "timestamp" => Self::Ts,
            "route" => Self::Route,
            "env" => Self::Env,
            "model" => Self::Model,
            "tier" => Self::Tier,
            "prompt_version" | "promptVersion" => Self::PromptVersion,
            "prompt_sha" | "promptSha" => Self::PromptSha,
            "duration_ms" | "durationMs" => Self::DurationMs,
            "tokens_in" | "tokensIn" => Self::TokensIn,
            "tokens_out" | "tokensOut" => Self::TokensOut,
            "status" => Self::Status,
            "input" => Self::Input,
            "output" => Self::Output,
            "attributes" => Self::Attributes,
            "unit_id" | "unitId" => Self::UnitId,
            "response_model" | "responseModel" => Self::ResponseModel,
            "label" => Self::Label,
            _ => return None,
        })
    }

    /// The schema's name of this field.
    pub fn name(self) -> &'static str {
        match self {
            Self::EventId => "event_id",
            Self::Ts => "ts",
            Self::Route => "route",
            Self::Env => "env",
            Self::Model => "model",
            Self::Tier => "tier",
            Self::PromptVersion => "prompt_version",
            Self::PromptSha => "prompt_sha",
            Self::DurationMs => "duration_ms",
            Self::TokensIn => "tokens_in",
            Self::TokensOut => "tokens_out",
            Self::Status => "status",
            Self::Input => "input",
            Self::Output => "output",
            Self::Attributes => "attributes",
            Self::UnitId => "unit_id",
            Self::ResponseModel => "response_model",
            Self::Label => "label",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A field of a label record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelField {
    EventId,
    Label,
    Labeler,
    Ts,
    Note,
}

impl LabelField {
    pub const ALL: [LabelField; 5] = [
        Self::EventId,
        Self::Label,
        Self::Labeler,
        Self::Ts,
        Self::Note,
    ];

    /// Resolves a key of a label record (snake_case or camelCase).
    pub fn from_key(key: &str) -> Option<Self> {
        Some(match key {
            "event_id" | "eventId" => Self::EventId,
            "label" => Self::Label,
            "labeler" => Self::Labeler,
            "ts" | "timestamp" => Self::Ts,
            "note" => Self::Note,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::EventId => "event_id",
            Self::Label => "label",
            Self::Labeler => "labeler",
            Self::Ts => "ts",
            Self::Note => "note",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One field's value as a reader found it, before validation. NDJSON gives typed values; CSV
/// gives only [`RawValue::Text`] (every CSV cell is text) and [`RawValue::Null`] for empty cells.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue<'a> {
    Null,
    Bool(bool),
    /// A JSON number, as written (parsed by the rule that needs it).
    Number(&'a str),
    /// A JSON string (unescaped) or a CSV cell.
    Text(Cow<'a, str>),
    /// A JSON object or array, as written.
    Json(&'a str),
}

impl RawValue<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            RawValue::Null => "null",
            RawValue::Bool(_) => "boolean",
            RawValue::Number(_) => "number",
            RawValue::Text(_) => "string",
            RawValue::Json(j) if j.starts_with('[') => "array",
            RawValue::Json(_) => "object",
        }
    }

    fn shown(&self) -> String {
        let text: &str = match self {
            RawValue::Null => "null",
            RawValue::Bool(true) => "true",
            RawValue::Bool(false) => "false",
            RawValue::Number(n) => n,
            RawValue::Text(t) => return format!("{:?}", truncate(t, 40)),
            RawValue::Json(j) => j,
        };
        truncate(text, 40).to_string()
    }
}

fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// Outcome of an event status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Flagged,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Flagged => "flagged",
            Status::Error => "error",
        }
    }
}

/// A human judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Good,
    Bad,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Good => "good",
            Label::Bad => "bad",
        }
    }
}

/// A validated event, borrowing from the line it was read from where it can.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    /// Microseconds since the Unix epoch, UTC.
    pub ts_us: i64,
    pub route: Cow<'a, str>,
    pub env: Cow<'a, str>,
    pub model: Cow<'a, str>,
    pub tier: Cow<'a, str>,
    pub prompt_version: Cow<'a, str>,
    pub prompt_sha: Option<Cow<'a, str>>,
    pub duration_ms: f64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub status: Status,
    pub input: Option<Cow<'a, str>>,
    pub output: Option<Cow<'a, str>>,
    /// A JSON object, as text.
    pub attributes: Option<Cow<'a, str>>,
    /// The user, session or account the application assigned the call to (the unit a canary
    /// is randomized by); events of one unit are correlated.
    pub unit_id: Option<Cow<'a, str>>,
    /// The model snapshot the provider reports having answered with, when known.
    pub response_model: Option<Cow<'a, str>>,
    /// A label that came inline on the event.
    pub label: Option<Label>,
}

/// A validated label record.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRecord<'a> {
    pub event_id: Cow<'a, str>,
    pub label: Label,
    pub labeler: Option<Cow<'a, str>>,
    /// Microseconds since the Unix epoch; when the record had no `ts`, the ingest time.
    pub ts_us: i64,
    /// Whether `ts` was given (it is part of the label's identity only then).
    pub ts_given: bool,
    pub note: Option<Cow<'a, str>>,
}

impl LabelRecord<'_> {
    /// Deterministic identity of a label, so that re-ingesting the same label adds nothing.
    /// Built from the fields as given (an absent `ts` is not the ingest time here), hashed with
    /// XXH3-128, whose output is specified and stable across versions and machines.
    pub fn label_id(&self) -> String {
        let mut key = Vec::with_capacity(96);
        for part in [
            self.event_id.as_ref(),
            self.label.as_str(),
            self.labeler.as_deref().unwrap_or(""),
            self.note.as_deref().unwrap_or(""),
        ] {
            key.extend_from_slice(part.as_bytes());
            key.push(0);
        }
        if self.ts_given {
            key.extend_from_slice(&self.ts_us.to_le_bytes());
        }
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&key))
    }
}

/// Why a record was rejected: one precise, human-readable sentence.
pub type RejectReason = String;

/// Earliest accepted timestamp: anything before is almost surely epoch seconds or a bug.
const MIN_TS_US: i64 = 946_684_800_000_000; // 2000-01-01T00:00:00Z
/// Latest accepted timestamp.
const MAX_TS_US: i64 = 7_258_118_400_000_000; // 2200-01-01T00:00:00Z

/// Parses `ts`: an RFC 3339 string (`2026-11-20T10:00:00Z`, `+01:00` offsets, fractional
/// seconds) or integer epoch milliseconds (as a JSON number or a string of digits).
pub fn parse_ts(field: &str, v: &RawValue<'_>) -> Result<i64, RejectReason> {
    let us = match v {
        RawValue::Number(n) => epoch_ms_to_us(field, n)?,
        RawValue::Text(t) => {
            let t = t.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                epoch_ms_to_us(field, t)?
            } else {
                DateTime::parse_from_rfc3339(t)
                    .map_err(|e| {
                        format!(
                            "`{field}` {} is not an RFC 3339 timestamp (e.g. 2026-11-20T10:00:00Z) or epoch milliseconds: {e}",
                            v.shown()
                        )
                    })?
                    .with_timezone(&Utc)
                    .timestamp_micros()
            }
        }
        other => {
            return Err(format!(
                "`{field}` must be an RFC 3339 string or epoch milliseconds, got {} {}",
                other.type_name(),
                other.shown()
            ));
        }
    };
    if !(MIN_TS_US..MAX_TS_US).contains(&us) {
        let as_given = us / 1000;
        let hint = if (MIN_TS_US / 1_000_000..MAX_TS_US / 1_000_000).contains(&as_given) {
            " (it looks like epoch seconds; promptgate expects epoch milliseconds)"
        } else {
            ""
        };
        return Err(format!(
            "`{field}` {} is outside 2000-01-01..2200-01-01{hint}",
            v.shown()
        ));
    }
    Ok(us)
}

fn epoch_ms_to_us(field: &str, n: &str) -> Result<i64, RejectReason> {
    let ms: i64 = n
        .parse()
        .map_err(|_| format!("`{field}` {n} is not a whole number of epoch milliseconds"))?;
    ms.checked_mul(1000)
        .ok_or_else(|| format!("`{field}` {n} is out of range"))
}

/// A required, non-empty string.
pub fn required_text<'a>(
    field: &str,
    v: Option<RawValue<'a>>,
) -> Result<Cow<'a, str>, RejectReason> {
    match v {
        None | Some(RawValue::Null) => Err(format!("missing required field `{field}`")),
        Some(RawValue::Text(t)) if t.trim().is_empty() => {
            Err(format!("`{field}` must not be empty"))
        }
        Some(RawValue::Text(t)) => Ok(t),
        Some(other) => Err(format!(
            "`{field}` must be a string, got {} {}",
            other.type_name(),
            other.shown()
        )),
    }
}

/// An optional string; empty counts as absent.
pub fn optional_text<'a>(
    field: &str,
    v: Option<RawValue<'a>>,
) -> Result<Option<Cow<'a, str>>, RejectReason> {
    match v {
        None | Some(RawValue::Null) => Ok(None),
        Some(RawValue::Text(t)) if t.is_empty() => Ok(None),
        Some(RawValue::Text(t)) => Ok(Some(t)),
        Some(other) => Err(format!(
            "`{field}` must be a string, got {} {}",
            other.type_name(),
            other.shown()
        )),
    }
}

/// Free text (`input`, `output`): a string, or any other JSON value kept as its JSON text
/// (structured outputs are common and losing them would be worse than storing them as text).
pub fn free_text<'a>(v: Option<RawValue<'a>>) -> Option<Cow<'a, str>> {
    match v {
        None | Some(RawValue::Null) => None,
        Some(RawValue::Text(t)) => Some(t),
        Some(RawValue::Number(n)) | Some(RawValue::Json(n)) => Some(Cow::Borrowed(n)),
        Some(RawValue::Bool(b)) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
    }
}

/// A required finite number >= 0.
pub fn non_negative_f64(field: &str, v: Option<RawValue<'_>>) -> Result<f64, RejectReason> {
    let text = number_text(field, &v)?;
    let x: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{field}` {:?} is not a number", truncate(text.trim(), 40)))?;
    if !x.is_finite() {
        return Err(format!("`{field}` must be finite, got {text}"));
    }
    if x < 0.0 {
        return Err(format!("`{field}` must be >= 0, got {text}"));
    }
    Ok(x)
}

/// The largest token count one call may report. Far above any model's context, and small
/// enough that `SUM(tokens_in)` over nine billion events cannot overflow an `Int64`.
pub const MAX_TOKENS: i64 = 1_000_000_000;

/// A required whole number from 0 to [`MAX_TOKENS`] (`12` and `12.0` are accepted, `12.5` is
/// not).
pub fn non_negative_i64(field: &str, v: Option<RawValue<'_>>) -> Result<i64, RejectReason> {
    let text = number_text(field, &v)?;
    let t = text.trim();
    let too_large = || format!("`{field}` {t} is too large (at most {MAX_TOKENS})");
    let n = match t.parse::<i64>() {
        Ok(n) => n,
        // Digits alone that do not fit an i64: too large, not malformed.
        Err(_)
            if !t.is_empty()
                && t.trim_start_matches('+')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
        {
            return Err(too_large());
        }
        Err(_) => match t.parse::<f64>() {
            Ok(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => x as i64,
            Ok(x) if x.is_finite() && x.fract() == 0.0 && x > 0.0 => return Err(too_large()),
            Ok(_) => return Err(format!("`{field}` must be a whole number, got {text}")),
            Err(_) => {
                return Err(format!(
                    "`{field}` {:?} is not a whole number",
                    truncate(t, 40)
                ));
            }
        },
    };
    if n < 0 {
        return Err(format!("`{field}` must be >= 0, got {text}"));
    }
    if n > MAX_TOKENS {
        return Err(too_large());
    }
    Ok(n)
}

fn number_text<'a>(field: &str, v: &'a Option<RawValue<'_>>) -> Result<&'a str, RejectReason> {
    match v {
        None | Some(RawValue::Null) => Err(format!("missing required field `{field}`")),
        Some(RawValue::Number(n)) => Ok(n),
        // CSV cells are text; NDJSON strings are not numbers (a logger sending "12" has a bug
        // worth seeing), so only CSV readers hand numbers over as Text via `csv_number`.
        Some(other) => Err(format!(
            "`{field}` must be a number, got {} {}",
            other.type_name(),
            other.shown()
        )),
    }
}

/// `status`: `ok`, `flagged` or `error` (case-insensitive, surrounding spaces ignored).
pub fn parse_status(v: Option<RawValue<'_>>) -> Result<Status, RejectReason> {
    let t = required_text("status", v)?;
    match t.trim().to_ascii_lowercase().as_str() {
        "ok" => Ok(Status::Ok),
        "flagged" => Ok(Status::Flagged),
        "error" => Ok(Status::Error),
        _ => Err(format!(
            "`status` {:?} is not one of ok, flagged, error",
            truncate(&t, 40)
        )),
    }
}

/// `label`: `good` or `bad` (case-insensitive).
pub fn parse_label(v: Option<RawValue<'_>>) -> Result<Label, RejectReason> {
    let t = required_text("label", v)?;
    match t.trim().to_ascii_lowercase().as_str() {
        "good" => Ok(Label::Good),
        "bad" => Ok(Label::Bad),
        _ => Err(format!(
            "`label` {:?} is not one of good, bad",
            truncate(&t, 40)
        )),
    }
}

/// Field values of one event record, indexed by [`EventField::index`].
pub type EventFields<'a> = [Option<RawValue<'a>>; EVENT_FIELD_COUNT];

/// Validates one event record. `attributes` must already be a JSON object's text (readers merge
/// unknown fields into it).
pub fn validate_event<'a>(mut f: EventFields<'a>) -> Result<Event<'a>, RejectReason> {
    use EventField as F;
    let mut take = |field: F| f[field.index()].take();
    let event_id = required_text("event_id", take(F::EventId))?;
    let ts_us = match take(F::Ts) {
        None | Some(RawValue::Null) => return Err("missing required field `ts`".into()),
        Some(v) => parse_ts("ts", &v)?,
    };
    let route = required_text("route", take(F::Route))?;
    let env = required_text("env", take(F::Env))?;
    let model = required_text("model", take(F::Model))?;
    let prompt_version = required_text("prompt_version", take(F::PromptVersion))?;
    let tier = optional_text("tier", take(F::Tier))?.unwrap_or(Cow::Borrowed(DEFAULT_TIER));
    let prompt_sha = optional_text("prompt_sha", take(F::PromptSha))?;
    let duration_ms = non_negative_f64("duration_ms", take(F::DurationMs))?;
    let tokens_in = non_negative_i64("tokens_in", take(F::TokensIn))?;
    let tokens_out = non_negative_i64("tokens_out", take(F::TokensOut))?;
    let status = parse_status(take(F::Status))?;
    let input = free_text(take(F::Input));
    let output = free_text(take(F::Output));
    let attributes = match take(F::Attributes) {
        None | Some(RawValue::Null) => None,
        Some(RawValue::Json(j)) if j.starts_with('{') => Some(Cow::Borrowed(j)),
        Some(RawValue::Text(t)) if t.trim_start().starts_with('{') => {
            // Text that only looks like an object ("{bad json") is not stored as one.
            serde_json::from_str::<serde::de::IgnoredAny>(&t)
                .map_err(|e| format!("`attributes` is not a valid JSON object: {e}"))?;
            Some(t)
        }
        Some(other) => {
            return Err(format!(
                "`attributes` must be a JSON object, got {} {}",
                other.type_name(),
                other.shown()
            ));
        }
    };
    let unit_id = optional_text("unit_id", take(F::UnitId))?;
    let response_model = optional_text("response_model", take(F::ResponseModel))?;
    let label = match take(F::Label) {
        None | Some(RawValue::Null) => None,
        v => Some(parse_label(v)?),
    };
    Ok(Event {
        event_id,
        ts_us,
        route,
        env,
        model,
        tier,
        prompt_version,
        prompt_sha,
        duration_ms,
        tokens_in,
        tokens_out,
        status,
        input,
        output,
        attributes,
        unit_id,
        response_model,
        label,
    })
}

/// Validates one label record; `now_us` stands in for a missing `ts`.
pub fn validate_label<'a>(
    mut f: [Option<RawValue<'a>>; 5],
    now_us: i64,
) -> Result<LabelRecord<'a>, RejectReason> {
    use LabelField as F;
    let mut take = |field: F| f[field.index()].take();
    let event_id = required_text("event_id", take(F::EventId))?;
    let label = parse_label(take(F::Label))?;
    let labeler = optional_text("labeler", take(F::Labeler))?;
    let (ts_us, ts_given) = match take(F::Ts) {
        None | Some(RawValue::Null) => (now_us, false),
        Some(RawValue::Text(t)) if t.is_empty() => (now_us, false),
        Some(v) => (parse_ts("ts", &v)?, true),
    };
    let note = free_text(take(F::Note));
    Ok(LabelRecord {
        event_id,
        label,
        labeler,
        ts_us,
        ts_given,
        note,
    })
}

/// Day of a timestamp, as the `date=YYYY-MM-DD` partition value counts it (UTC).
pub fn day_of(ts_us: i64) -> i32 {
    ts_us.div_euclid(86_400_000_000) as i32
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
pub fn day_string(day: i32) -> String {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    (epoch + chrono::Days::new(day as u64))
        .format("%Y-%m-%d")
        .to_string()
}

/// The day number of a `YYYY-MM-DD` partition value.
pub fn parse_day(s: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    i32::try_from((d - epoch).num_days()).ok()
}

/// Parses a time given on the command line: RFC 3339, `YYYY-MM-DD` (midnight UTC) or
/// `YYYY-MM-DDTHH:MM:SS` (UTC). Returns microseconds since the epoch.
pub fn parse_time_arg(s: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc).timestamp_micros());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Ok(t.and_utc().timestamp_micros());
    }
    Err(format!(
        "{s:?} is not a time; use RFC 3339 (2026-11-20T10:00:00Z) or a date (2026-11-20)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Option<RawValue<'_>> {
        Some(RawValue::Text(Cow::Borrowed(s)))
    }

    #[test]
    fn ts_accepts_rfc3339_offsets_and_epoch_ms() {
        let z = parse_ts("ts", &RawValue::Text("2026-11-20T10:00:00Z".into())).unwrap();
        let off = parse_ts("ts", &RawValue::Text("2026-11-20T11:00:00+01:00".into())).unwrap();
        let ms = parse_ts("ts", &RawValue::Number("1795168800000")).unwrap();
        assert_eq!(z, off);
        assert_eq!(z, ms);
        assert_eq!(day_string(day_of(z)), "2026-11-20");
    }

    #[test]
    fn ts_rejects_epoch_seconds_with_a_hint() {
        let e = parse_ts("ts", &RawValue::Number("1795168800")).unwrap_err();
        assert!(e.contains("epoch seconds"), "{e}");
        let e = parse_ts("ts", &RawValue::Text("yesterday".into())).unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn numbers_are_checked_for_sign_type_and_wholeness() {
        assert!(non_negative_f64("duration_ms", Some(RawValue::Number("-1"))).is_err());
        assert!(non_negative_f64("duration_ms", text("12")).is_err());
        assert_eq!(
            non_negative_i64("tokens_in", Some(RawValue::Number("12.0"))),
            Ok(12)
        );
        assert!(non_negative_i64("tokens_in", Some(RawValue::Number("12.5"))).is_err());
        for big in [
            "9223372036854775807",
            "99999999999999999999",
            "1000000001",
            "1e300",
        ] {
            let e = non_negative_i64("tokens_in", Some(RawValue::Number(big))).unwrap_err();
            assert_eq!(
                e,
                format!("`tokens_in` {big} is too large (at most 1000000000)")
            );
        }
        assert_eq!(
            non_negative_i64("tokens_in", Some(RawValue::Number("1000000000"))),
            Ok(MAX_TOKENS)
        );
    }

    #[test]
    fn label_id_is_stable_and_depends_on_given_ts_only() {
        let mut l = LabelRecord {
            event_id: "e1".into(),
            label: Label::Bad,
            labeler: None,
            ts_us: 1,
            ts_given: false,
            note: None,
        };
        let a = l.label_id();
        l.ts_us = 2;
        assert_eq!(a, l.label_id());
        l.ts_given = true;
        assert_ne!(a, l.label_id());
    }
}
