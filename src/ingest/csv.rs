//! CSV records: a header row naming the fields (either spelling), one record per row. Cells
//! are text; empty cells are absent. Unknown columns go into `attributes` as strings.
//!
//! Rejected rows are kept verbatim: the reader is teed so each record's exact bytes can be
//! cut out of the stream by the byte positions the CSV parser reports.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;

use super::ndjson::merge_attributes;
use super::records::{ChunkSink, Parsed, RecordKind};
use crate::error::{Error, Result};
use crate::event::{EVENT_FIELD_COUNT, EventField, EventFields, LabelField, RawValue};

/// Rows per parsed batch handed to the ingest.
const ROWS_PER_BATCH: usize = 64 * 1024;

/// Keeps a copy of every byte read, from `base` on, so records can be cut out verbatim.
struct Tee<R> {
    inner: R,
    seen: Rc<RefCell<TeeBuf>>,
}

#[derive(Default)]
struct TeeBuf {
    base: u64,
    bytes: Vec<u8>,
}

impl TeeBuf {
    fn slice(&self, start: u64, end: u64) -> &[u8] {
        let s = (start.saturating_sub(self.base)) as usize;
        let e = ((end.saturating_sub(self.base)) as usize).min(self.bytes.len());
        &self.bytes[s.min(e)..e]
    }
    fn forget_before(&mut self, pos: u64) {
        let n = (pos.saturating_sub(self.base) as usize).min(self.bytes.len());
        self.bytes.drain(..n);
        self.base += n as u64;
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.borrow_mut().bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn trim_record_end(mut raw: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = raw {
        raw = rest;
    }
    raw
}

/// How a header column maps onto the record.
#[derive(Clone, Copy)]
enum Column {
    Field(usize),
    Unknown,
}

/// A CSV source being read: header resolved, records handed out in batches.
pub(crate) struct CsvSource<R: Read> {
    rdr: csv::Reader<Tee<R>>,
    seen: Rc<RefCell<TeeBuf>>,
    columns: Vec<Column>,
    names: Vec<String>,
    kind: RecordKind,
    now_us: i64,
    record: csv::ByteRecord,
    done: bool,
}

impl<R: Read> CsvSource<R> {
    /// Reads and resolves the header; returns the source and the header line verbatim (for the
    /// quarantine copy). A header that cannot be used fails the whole source.
    pub fn open(src: R, kind: RecordKind, now_us: i64) -> Result<(Self, Vec<u8>)> {
        let seen = Rc::new(RefCell::new(TeeBuf::default()));
        let tee = Tee {
            inner: src,
            seen: seen.clone(),
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(tee);
        let headers = rdr
            .byte_headers()
            .map_err(|e| Error::input(format!("cannot read the CSV header: {e}")))?
            .clone();
        let header_end = rdr.position().byte();
        let header_line = trim_record_end(seen.borrow().slice(0, header_end)).to_vec();
        seen.borrow_mut().forget_before(header_end);

        let names: Vec<String> = headers
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim()
                    .trim_start_matches('\u{feff}')
                    .to_string()
            })
            .collect();
        let mut columns = Vec::with_capacity(names.len());
        let mut seen_fields: Vec<Option<&str>> = vec![None; EVENT_FIELD_COUNT];
        for name in &names {
            let resolved = match kind {
                RecordKind::Events => EventField::from_key(name).map(|f| (f.index(), f.name())),
                RecordKind::Labels => LabelField::from_key(name).map(|f| (f.index(), f.name())),
            };
            match resolved {
                Some((i, canonical)) => {
                    if let Some(first) = seen_fields[i] {
                        return Err(Error::input(format!(
                            "the CSV header names `{canonical}` twice (as `{first}` and `{name}`)"
                        ))
                        .with_hint("keep one column per field; nothing was ingested"));
                    }
                    seen_fields[i] = Some(name);
                    columns.push(Column::Field(i));
                }
                None if kind == RecordKind::Labels => {
                    return Err(Error::input(format!(
                        "unknown column `{name}` in a labels CSV (expected event_id, label, labeler, ts, note)"
                    )));
                }
                None => columns.push(Column::Unknown),
            }
        }
        let source = Self {
            rdr,
            seen,
            columns,
            names,
            kind,
            now_us,
            record: csv::ByteRecord::new(),
            done: false,
        };
        Ok((source, header_line))
    }

    /// The next batch of up to [`ROWS_PER_BATCH`] records, or `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<Parsed>> {
        if self.done {
            return Ok(None);
        }
        let numeric = [
            EventField::DurationMs.index(),
            EventField::TokensIn.index(),
            EventField::TokensOut.index(),
        ];
        let mut sink = ChunkSink::new(self.kind, self.now_us, ROWS_PER_BATCH);
        while sink.records() < ROWS_PER_BATCH as u64 {
            let more = self
                .rdr
                .read_byte_record(&mut self.record)
                .map_err(|e| Error::input(format!("cannot read CSV: {e}")))?;
            if !more {
                self.done = true;
                break;
            }
            let start = self.record.position().map_or(0, |p| p.byte());
            let line = self.record.position().map_or(0, |p| p.line());
            let end = self.rdr.position().byte();
            {
                let tee = self.seen.borrow();
                let raw = trim_record_end(tee.slice(start, end));
                if raw.is_empty() {
                    continue;
                }
                let parsed = cells(&self.record, &self.columns, &self.names);
                match self.kind {
                    RecordKind::Events => {
                        let fields = parsed.and_then(|(mut fields, unknown)| {
                            for i in numeric {
                                if let Some(RawValue::Text(Cow::Borrowed(t))) = fields[i] {
                                    fields[i] = Some(RawValue::Number(t));
                                }
                            }
                            if !unknown.is_empty() {
                                let slot = &mut fields[EventField::Attributes.index()];
                                let merged = merge_attributes(
                                    slot.take(),
                                    unknown.into_iter().map(|(k, v)| {
                                        (k, serde_json::Value::String(v.to_string()))
                                    }),
                                )?;
                                *slot = Some(RawValue::Text(Cow::Owned(merged)));
                            }
                            Ok(fields)
                        });
                        sink.event(line, raw, fields);
                    }
                    RecordKind::Labels => {
                        let fields = parsed.map(|(fields, _)| {
                            let mut out: [Option<RawValue<'_>>; 5] = std::array::from_fn(|_| None);
                            for (i, v) in fields.into_iter().enumerate().take(5) {
                                out[i] = v;
                            }
                            out
                        });
                        sink.label(line, raw, fields);
                    }
                }
            }
            self.seen.borrow_mut().forget_before(end);
        }
        Ok(Some(sink.finish()))
    }
}

type Cells<'a> = (EventFields<'a>, Vec<(&'a str, &'a str)>);

fn cells<'a>(
    record: &'a csv::ByteRecord,
    columns: &[Column],
    names: &'a [String],
) -> Result<Cells<'a>, String> {
    let mut fields: EventFields<'a> = std::array::from_fn(|_| None);
    let mut unknown = Vec::new();
    if record.len() > columns.len() {
        return Err(format!(
            "row has {} cells but the header has {} columns",
            record.len(),
            columns.len()
        ));
    }
    for (i, cell) in record.iter().enumerate() {
        let text = std::str::from_utf8(cell)
            .map_err(|_| format!("column `{}` is not valid UTF-8", names[i]))?;
        if text.is_empty() {
            continue;
        }
        match columns[i] {
            Column::Field(f) => fields[f] = Some(RawValue::Text(Cow::Borrowed(text))),
            Column::Unknown => unknown.push((names[i].as_str(), text)),
        }
    }
    Ok((fields, unknown))
}
