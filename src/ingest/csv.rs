//! CSV records: a header row naming the fields (either spelling), one record per row. Cells
//! are text; empty cells are absent. Unknown columns go into `attributes` as strings.
//!
//! CSV is streamed like NDJSON: [`CsvChunker`] cuts the input into chunks of whole records (a
//! quoted cell may hold newlines), which are parsed in parallel. Each record's exact bytes and
//! first line number are known, so a rejected record is quarantined verbatim (CRLF included)
//! and reported on the right line. Limits and recovery:
//! - a record longer than `--max-line-bytes` is rejected; a physical line that long is streamed
//!   to the quarantine, never held in memory;
//! - a quote opens a quoted cell only at the start of a cell (elsewhere it is text). A quoted
//!   cell that spans lines must close within the limit and give the record exactly the header's
//!   number of cells; otherwise the quote is taken as broken: only the line it opened on is
//!   rejected, and reading resumes on the next line. A stray quote costs the records it really
//!   spans, not the rest of the file.

use std::borrow::Cow;
use std::io::Read;

use memchr::{memchr, memchr2};

use super::lines::Piece;
use super::ndjson::merge_attributes;
use super::records::{ChunkSink, Parsed, RecordKind};
use crate::error::{Error, Result};
use crate::event::{EVENT_FIELD_COUNT, EventField, EventFields, LabelField, RawValue};

/// How a header column maps onto the record.
#[derive(Clone, Copy)]
enum Column {
    Field(usize),
    Unknown,
}

/// The resolved header of a CSV source.
pub(crate) struct CsvHeader {
    columns: Vec<Column>,
    names: Vec<String>,
}

/// One record of a chunk: its bytes are `data[start..end]` (without the `\n`, with a `\r`).
pub(crate) struct Span {
    start: usize,
    end: usize,
    /// 1-based line the record starts on.
    line: u64,
    /// Set when the record is rejected before parsing (a broken quote).
    broken: Option<String>,
}

/// A run of complete records.
pub(crate) struct CsvChunk {
    data: Vec<u8>,
    records: Vec<Span>,
}

/// How far the record starting at some position goes.
enum Scan {
    /// Ends at `end` (a `\n`, or the end of input); `inner` newlines lie inside quoted cells.
    Record { end: usize, inner: u64 },
    /// More input is needed to tell.
    Incomplete,
    /// Longer than the limit: `first_newline` is where its first line ends, if within it.
    TooLong { first_newline: Option<usize> },
}

/// Splits a CSV byte stream into chunks of records (see the module documentation).
pub(crate) struct CsvChunker<R> {
    src: R,
    buf: Vec<u8>,
    /// Start of the next record in `buf`.
    pos: usize,
    next_line: u64,
    eof: bool,
    chunk_bytes: usize,
    max_line: usize,
    /// Cells of the header: a record spanning lines must have exactly as many.
    width: usize,
    /// Bytes consumed from the source so far (for progress).
    pub consumed: u64,
}

impl<R: Read> CsvChunker<R> {
    /// Reads and resolves the header; returns the chunker, the header and the header line
    /// verbatim (for the quarantine copy). A header that cannot be used fails the whole source.
    pub fn open(
        src: R,
        kind: RecordKind,
        chunk_bytes: usize,
        max_line: usize,
    ) -> Result<(Self, CsvHeader, Vec<u8>)> {
        let mut c = Self {
            src,
            buf: Vec::with_capacity(chunk_bytes + 64 * 1024),
            pos: 0,
            next_line: 1,
            eof: false,
            chunk_bytes,
            max_line,
            width: 0,
            consumed: 0,
        };
        let io = |e: std::io::Error| Error::input(format!("read failed: {e}"));
        c.fill(chunk_bytes).map_err(io)?;
        let end = loop {
            match scan(&c.buf, 0, max_line, c.eof) {
                Scan::Record { end, inner } => {
                    c.next_line += 1 + inner;
                    break end;
                }
                Scan::Incomplete => {
                    let want = c.buf.len() + chunk_bytes;
                    c.fill(want).map_err(io)?;
                }
                Scan::TooLong { .. } => {
                    return Err(Error::input(format!(
                        "the CSV header is longer than the {max_line}-byte limit"
                    ))
                    .with_hint("check that the file is CSV, or raise --max-line-bytes"));
                }
            }
        };
        let raw = c.buf[..end].to_vec();
        c.pos = (end + 1).min(c.buf.len());
        let body = raw.strip_suffix(b"\r").unwrap_or(&raw);
        let cells = split_cells(body).map_err(|e| {
            Error::input(format!("cannot read the CSV header: {}", e.describe(&[])))
        })?;
        let names: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let h = String::from_utf8_lossy(h);
                let h = h.trim();
                if i == 0 {
                    h.trim_start_matches('\u{feff}').to_string()
                } else {
                    h.to_string()
                }
            })
            .filter(|_| !body.is_empty())
            .collect();
        let header = resolve_header(names, kind)?;
        c.width = header.names.len();
        Ok((c, header, raw))
    }

    fn fill(&mut self, want: usize) -> std::io::Result<()> {
        super::lines::fill_buffer(
            &mut self.src,
            &mut self.buf,
            &mut self.eof,
            &mut self.consumed,
            want,
        )
    }

    /// Hands out the records before `self.pos` as a chunk.
    fn cut(&mut self, records: Vec<Span>) -> Piece<CsvChunk> {
        let rest = self.buf.split_off(self.pos);
        let data = std::mem::replace(&mut self.buf, rest);
        self.pos = 0;
        Piece::Lines(CsvChunk { data, records })
    }

    /// The next chunk of records, or an over-long line whose bytes went to `oversize` (called
    /// with the line number and successive pieces). `None` at the end of input.
    pub fn next_piece(
        &mut self,
        oversize: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Option<Piece<CsvChunk>>> {
        let io = |e: std::io::Error| Error::input(format!("read failed: {e}"));
        let mut records = Vec::new();
        loop {
            if self.pos >= self.buf.len() {
                if !records.is_empty() {
                    return Ok(Some(self.cut(records)));
                }
                self.buf.clear();
                self.pos = 0;
                self.fill(self.chunk_bytes).map_err(io)?;
                if self.buf.is_empty() {
                    return Ok(None);
                }
            }
            let line = self.next_line;
            match scan(&self.buf, self.pos, self.max_line, self.eof) {
                Scan::Record { end, inner } => {
                    let multi_line_ok = inner == 0
                        || split_cells(trim_cr(&self.buf[self.pos..end]))
                            .is_ok_and(|c| c.len() == self.width);
                    if multi_line_ok {
                        records.push(Span {
                            start: self.pos,
                            end,
                            line,
                            broken: None,
                        });
                        self.next_line += 1 + inner;
                        self.pos = (end + 1).min(self.buf.len());
                    } else {
                        let first =
                            memchr(b'\n', &self.buf[self.pos..end]).map_or(end, |i| self.pos + i);
                        records.push(Span {
                            start: self.pos,
                            end: first,
                            line,
                            broken: Some(format!(
                                "a quoted cell opened on this line does not close into a record of {} cells; this line is rejected alone and reading resumes on the next",
                                self.width
                            )),
                        });
                        self.next_line += 1;
                        self.pos = (first + 1).min(self.buf.len());
                    }
                    if self.pos >= self.chunk_bytes {
                        return Ok(Some(self.cut(records)));
                    }
                }
                Scan::Incomplete => {
                    if !records.is_empty() {
                        return Ok(Some(self.cut(records)));
                    }
                    // Move the partial record to the front and read more.
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                    let want = self.buf.len() + self.chunk_bytes;
                    self.fill(want).map_err(io)?;
                }
                Scan::TooLong {
                    first_newline: Some(first),
                } => {
                    records.push(Span {
                        start: self.pos,
                        end: first,
                        line,
                        broken: Some(format!(
                            "a quoted cell opened on this line does not close within the {}-byte limit (raise it with --max-line-bytes); this line is rejected alone and reading resumes on the next",
                            self.max_line
                        )),
                    });
                    self.next_line += 1;
                    self.pos = (first + 1).min(self.buf.len());
                }
                Scan::TooLong {
                    first_newline: None,
                } => {
                    if !records.is_empty() {
                        return Ok(Some(self.cut(records)));
                    }
                    self.stream_oversize(oversize)?;
                    return Ok(Some(Piece::Oversize));
                }
            }
        }
    }

    /// Streams the physical line at `pos` (longer than the limit) to `oversize`.
    fn stream_oversize(
        &mut self,
        oversize: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let line = self.next_line;
        self.buf.drain(..self.pos);
        self.pos = 0;
        super::lines::stream_line_out(
            &mut self.src,
            &mut self.buf,
            &mut self.eof,
            &mut self.consumed,
            self.chunk_bytes,
            &mut |piece| oversize(line, piece),
        )?;
        self.next_line += 1;
        Ok(())
    }
}

fn trim_cr(raw: &[u8]) -> &[u8] {
    raw.strip_suffix(b"\r").unwrap_or(raw)
}

/// Finds the end of the record starting at `start`, looking at most `max + 1` bytes ahead.
fn scan(buf: &[u8], start: usize, max: usize, eof: bool) -> Scan {
    let limit = buf.len().min(start.saturating_add(max).saturating_add(1));
    let cut_short = limit < buf.len() || (limit == buf.len() && buf.len() - start > max);
    let hay = &buf[..limit];
    let mut pos = start;
    let mut quoted = false;
    let mut inner = 0u64;
    while let Some(i) = memchr2(b'"', b'\n', &hay[pos..]) {
        let i = pos + i;
        if hay[i] == b'\n' {
            if !quoted {
                return Scan::Record { end: i, inner };
            }
            inner += 1;
            pos = i + 1;
        } else if !quoted {
            // A quote opens a quoted cell only at the start of a cell.
            quoted = i == start || hay[i - 1] == b',';
            pos = i + 1;
        } else if i + 1 < hay.len() {
            if hay[i + 1] == b'"' {
                pos = i + 2; // an escaped quote
            } else {
                quoted = false;
                pos = i + 1;
            }
        } else if eof && !cut_short {
            quoted = false;
            pos = i + 1;
        } else {
            break; // the byte after this quote decides: need more
        }
    }
    if cut_short {
        return Scan::TooLong {
            first_newline: memchr(b'\n', &hay[start..]).map(|i| start + i),
        };
    }
    if eof {
        return Scan::Record {
            end: buf.len(),
            inner,
        };
    }
    Scan::Incomplete
}

/// Why a record's cells could not be split.
#[derive(Debug)]
enum CellError {
    /// The quoted cell in this column (0-based) never closes.
    Unclosed(usize),
    /// Text follows the closing quote of the cell in this column.
    AfterQuote(usize),
}

impl CellError {
    fn describe(&self, names: &[String]) -> String {
        let name = |i: usize| {
            names
                .get(i)
                .map_or_else(|| format!("column {}", i + 1), |n| format!("column `{n}`"))
        };
        match self {
            CellError::Unclosed(i) => format!("the quoted cell in {} never closes", name(*i)),
            CellError::AfterQuote(i) => {
                format!("text follows the closing quote of the cell in {}", name(*i))
            }
        }
    }
}

/// The cells of one record (without its line ending), unquoted (`""` is a quote).
fn split_cells(rec: &[u8]) -> Result<Vec<Cow<'_, [u8]>>, CellError> {
    let mut cells = Vec::new();
    let mut pos = 0;
    loop {
        if rec.get(pos) == Some(&b'"') {
            let col = cells.len();
            let mut owned: Option<Vec<u8>> = None;
            let mut seg = pos + 1;
            loop {
                let Some(j) = memchr(b'"', &rec[seg..]) else {
                    return Err(CellError::Unclosed(col));
                };
                let q = seg + j;
                if rec.get(q + 1) == Some(&b'"') {
                    owned
                        .get_or_insert_with(Vec::new)
                        .extend_from_slice(&rec[seg..=q]);
                    seg = q + 2;
                    continue;
                }
                cells.push(match owned {
                    None => Cow::Borrowed(&rec[seg..q]),
                    Some(mut v) => {
                        v.extend_from_slice(&rec[seg..q]);
                        Cow::Owned(v)
                    }
                });
                pos = q + 1;
                break;
            }
            match rec.get(pos) {
                None => return Ok(cells),
                Some(b',') => pos += 1,
                Some(_) => return Err(CellError::AfterQuote(col)),
            }
        } else {
            match memchr(b',', &rec[pos..]) {
                None => {
                    cells.push(Cow::Borrowed(&rec[pos..]));
                    return Ok(cells);
                }
                Some(j) => {
                    cells.push(Cow::Borrowed(&rec[pos..pos + j]));
                    pos += j + 1;
                }
            }
        }
    }
}

fn resolve_header(names: Vec<String>, kind: RecordKind) -> Result<CsvHeader> {
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
            None => {
                // An unknown column goes into `attributes` under its name: two of one name
                // would silently keep one value.
                if let Some(prev) = names[..columns.len()].iter().position(|n| n == name) {
                    return Err(Error::input(format!(
                        "the CSV header names the column `{name}` twice (columns {} and {})",
                        prev + 1,
                        columns.len() + 1
                    ))
                    .with_hint("rename or drop one of them; nothing was ingested"));
                }
                columns.push(Column::Unknown)
            }
        }
    }
    Ok(CsvHeader { columns, names })
}

/// Parses one chunk of CSV records into per-day batches and rejects.
pub(crate) fn parse_chunk(
    chunk: &CsvChunk,
    header: &CsvHeader,
    kind: RecordKind,
    now_us: i64,
) -> Parsed {
    let numeric = [
        EventField::DurationMs.index(),
        EventField::TokensIn.index(),
        EventField::TokensOut.index(),
    ];
    let mut sink = ChunkSink::new(now_us, chunk.records.len());
    for span in &chunk.records {
        let raw = &chunk.data[span.start..span.end];
        if let Some(reason) = &span.broken {
            sink.reject(span.line, raw, reason.clone());
            continue;
        }
        let body = trim_cr(raw);
        if body.is_empty() {
            continue; // a blank line is not a record
        }
        let parsed = split_cells(body)
            .map_err(|e| e.describe(&header.names))
            .and_then(|c| cells(&c, header));
        match kind {
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
                            unknown.into_iter().map(|(k, v)| (k, json_string(&v))),
                        )?;
                        *slot = Some(RawValue::Text(Cow::Owned(merged)));
                    }
                    Ok(fields)
                });
                sink.event(span.line, raw, fields);
            }
            RecordKind::Labels => {
                let fields = parsed.map(|(fields, _)| {
                    let mut out: [Option<RawValue<'_>>; 5] = std::array::from_fn(|_| None);
                    for (i, v) in fields.into_iter().enumerate().take(5) {
                        out[i] = v;
                    }
                    out
                });
                sink.label(span.line, raw, fields);
            }
        }
    }
    sink.finish()
}

type Cells<'a> = (EventFields<'a>, Vec<(&'a str, Cow<'a, str>)>);

fn cells<'a>(record: &[Cow<'a, [u8]>], header: &'a CsvHeader) -> Result<Cells<'a>, String> {
    let mut fields: EventFields<'a> = std::array::from_fn(|_| None);
    let mut unknown = Vec::new();
    if record.len() > header.columns.len() {
        return Err(format!(
            "row has {} cells but the header has {} columns",
            record.len(),
            header.columns.len()
        ));
    }
    for (i, cell) in record.iter().enumerate() {
        let text: Cow<'a, str> = match cell {
            Cow::Borrowed(b) => {
                Cow::Borrowed(std::str::from_utf8(b).map_err(|_| not_utf8(header, i))?)
            }
            Cow::Owned(b) => {
                Cow::Owned(String::from_utf8(b.clone()).map_err(|_| not_utf8(header, i))?)
            }
        };
        if text.is_empty() {
            continue;
        }
        match header.columns[i] {
            Column::Field(f) => fields[f] = Some(RawValue::Text(text)),
            Column::Unknown => unknown.push((header.names[i].as_str(), text)),
        }
    }
    Ok((fields, unknown))
}

/// A CSV cell as a JSON string value (cells are text; `attributes` keeps them as strings).
fn json_string(text: &str) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(text).expect("a string serializes")
}

fn not_utf8(header: &CsvHeader, i: usize) -> String {
    format!("column `{}` is not valid UTF-8", header.names[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(input: &[u8], max: usize, width_header: &str) -> Vec<(u64, String, bool)> {
        let mut text = width_header.as_bytes().to_vec();
        text.push(b'\n');
        text.extend_from_slice(input);
        let (mut c, _, _) = CsvChunker::open(&text[..], RecordKind::Events, 16, max).unwrap();
        let mut out = Vec::new();
        let mut sink = |line: u64, piece: &[u8]| {
            out.push((line, format!("OVERSIZE {}", piece.len()), true));
            Ok(())
        };
        let mut got = Vec::new();
        while let Some(p) = c.next_piece(&mut sink).unwrap() {
            if let Piece::Lines(chunk) = p {
                for s in &chunk.records {
                    got.push((
                        s.line,
                        String::from_utf8_lossy(&chunk.data[s.start..s.end]).into_owned(),
                        s.broken.is_some(),
                    ));
                }
            }
        }
        got.extend(out);
        got
    }

    #[test]
    fn quoted_newlines_crlf_and_line_numbers() {
        let got = spans(b"1,\"x\ny\",3\r\n4,5,6\r\n", 100, "a,b,c");
        assert_eq!(
            got,
            vec![
                (2, "1,\"x\ny\",3\r".to_string(), false),
                (4, "4,5,6\r".to_string(), false)
            ]
        );
    }

    #[test]
    fn a_stray_quote_costs_only_its_line() {
        // The quote opened on line 2 would swallow line 3 into a 5-cell record.
        let got = spans(b"1,\"oops,3\n4,5,6\n7,8,9\n", 100, "a,b,c");
        assert_eq!(
            got,
            vec![
                (2, "1,\"oops,3".to_string(), true),
                (3, "4,5,6".to_string(), false),
                (4, "7,8,9".to_string(), false)
            ]
        );
        // With no closing quote within the limit, likewise.
        let mut input = b"1,\"oops,3\n".to_vec();
        for i in 0..50 {
            input.extend_from_slice(format!("{i},5,6\n").as_bytes());
        }
        let got = spans(&input, 64, "a,b,c");
        assert_eq!(got.len(), 51);
        assert!(got[0].2);
        assert!(got[1..].iter().all(|g| !g.2));
        assert_eq!(got[50], (52, "49,5,6".to_string(), false));
    }

    #[test]
    fn quotes_inside_cells_are_text_and_escapes_unquote() {
        let cells = split_cells(br#"a"b,"c""d","",e"#).unwrap();
        let cells: Vec<&[u8]> = cells.iter().map(|c| c.as_ref()).collect();
        assert_eq!(cells, vec![&b"a\"b"[..], b"c\"d", b"", b"e"]);
        assert!(matches!(
            split_cells(b"\"ab\"c,d"),
            Err(CellError::AfterQuote(0))
        ));
        assert!(matches!(
            split_cells(b"x,\"ab"),
            Err(CellError::Unclosed(1))
        ));
    }

    #[test]
    fn an_over_long_line_is_streamed_not_buffered() {
        let mut input = b"1,2,3\n".to_vec();
        input.extend(std::iter::repeat_n(b'z', 500));
        input.extend_from_slice(b"\n4,5,6\n");
        let got = spans(&input, 100, "a,b,c");
        assert_eq!(got[0], (2, "1,2,3".to_string(), false));
        assert_eq!(got[1], (4, "4,5,6".to_string(), false));
        let over: usize = got[2..]
            .iter()
            .map(|g| {
                g.1.trim_start_matches("OVERSIZE ")
                    .parse::<usize>()
                    .unwrap()
            })
            .sum();
        assert_eq!(over, 500);
        assert!(got[2..].iter().all(|g| g.0 == 3));
    }
}
