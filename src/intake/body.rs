//! One `POST /v1/events` body: decoded, cut into records, each validated by the same rules as
//! `promptgate ingest`, and turned into the NDJSON lines the spool keeps.
//!
//! A body is NDJSON (one object per line; blank lines are skipped and not counted) or one JSON
//! array of objects. A record that is not JSON at all makes the whole body malformed: nothing of
//! it is kept and the answer names the line, since a client that sends broken JSON (a truncated
//! body, the wrong content) should fix it and send it again. A record that is JSON but breaks a
//! rule (a missing field, a bad timestamp) is rejected on its own, with its line and reason in
//! the answer, and kept in the spool so the commit puts it in the lake's quarantine like any
//! rejected record of `ingest`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Read;

use serde::Serialize;

use crate::event::validate_event;
use crate::ingest::event_fields;

/// Rejects listed in one answer at most (all are counted, and all go to quarantine).
pub const MAX_LISTED_REJECTS: usize = 1000;

/// The answer to one post. Invariant: `read == accepted + duplicates + rejected`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PostReport {
    pub read: u64,
    pub accepted: u64,
    /// Events whose `event_id` came earlier in the same body (a duplicate of an event already
    /// in the lake is known only when the spool is committed, and dropped then).
    pub duplicates: u64,
    pub rejected: u64,
    /// The first [`MAX_LISTED_REJECTS`] rejects.
    pub rejects: Vec<Reject>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reject {
    /// The record's line in the body (NDJSON), or its position in the array (1-based).
    pub line: u64,
    pub reason: String,
}

/// Why a body could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit, as sent or as decoded.
    TooLarge(String),
    /// Not gzip, not UTF-8, not JSON: the message names the line.
    Malformed(String),
}

/// Decodes a gzip body (`Content-Encoding: gzip`), refusing to inflate past `limit` bytes.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Malformed(format!("the body is not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge(format!(
            "the body inflates to more than the limit of {} bytes",
            limit
        )));
    }
    Ok(out)
}

/// Cuts `body` into records, validates each, and returns the answer with the lines to spool
/// (accepted and rejected records, never a duplicate within the body).
pub fn events(body: &[u8]) -> Result<(PostReport, Vec<u8>), BodyError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let mut report = PostReport::default();
    let mut spool = Vec::with_capacity(body.len() + 64);
    let mut ids: HashSet<Cow<'_, str>, foldhash::fast::RandomState> = HashSet::default();
    if first == Some(&b'[') {
        let items: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(body).map_err(|e| {
                BodyError::Malformed(format!(
                    "the body is not a JSON array of objects: line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ))
            })?;
        for (i, item) in items.iter().enumerate() {
            let text = item.get().as_bytes();
            record(
                text,
                i as u64 + 1,
                &mut report,
                &mut ids,
                &mut spool,
                "element",
            )?;
        }
    } else {
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            record(
                line,
                i as u64 + 1,
                &mut report,
                &mut ids,
                &mut spool,
                "line",
            )?;
        }
    }
    Ok((report, spool))
}

fn record<'a>(
    text: &'a [u8],
    line: u64,
    report: &mut PostReport,
    ids: &mut HashSet<Cow<'a, str>, foldhash::fast::RandomState>,
    spool: &mut Vec<u8>,
    what: &str,
) -> Result<(), BodyError> {
    report.read += 1;
    let outcome = if text.len() > MAX_RECORD_BYTES {
        // What `ingest` would reject at commit (its default --max-line-bytes), said now.
        Err(format!(
            "line is {} bytes, longer than the {MAX_RECORD_BYTES}-byte limit",
            text.len()
        ))
    } else {
        event_fields(text).and_then(validate_event)
    };
    match outcome {
        Ok(e) => {
            if !ids.insert(e.event_id) {
                report.duplicates += 1;
                return Ok(());
            }
            report.accepted += 1;
        }
        Err(reason) => {
            if !is_json_object(text) {
                return Err(BodyError::Malformed(format!(
                    "{what} {line} is not a JSON object ({reason}); nothing of this body was kept"
                )));
            }
            report.rejected += 1;
            if report.rejects.len() < MAX_LISTED_REJECTS {
                report.rejects.push(Reject { line, reason });
            }
        }
    }
    // An array element may span lines (pretty-printed): outside strings a line break is
    // whitespace, and inside one JSON does not allow it raw, so spaces keep it one line.
    let start = spool.len();
    spool.extend_from_slice(text);
    for b in &mut spool[start..] {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    spool.push(b'\n');
    Ok(())
}

/// The longest record taken, as `ingest` takes it by default.
const MAX_RECORD_BYTES: usize = 1 << 20;

fn is_json_object(text: &[u8]) -> bool {
    let trimmed = text.trim_ascii_start();
    trimmed.first() == Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"event_id":"a","ts":"2026-11-20T10:00:00Z","route":"r","env":"prod","model":"m","prompt_version":"v1","duration_ms":1,"tokens_in":1,"tokens_out":1,"status":"ok"}"#;

    #[test]
    fn ndjson_records_are_accepted_rejected_or_duplicates_and_add_up() {
        let bad = OK.replace("\"ts\":\"2026-11-20T10:00:00Z\",", "");
        let other = OK.replace("\"a\"", "\"b\"");
        let body = format!("{OK}\r\n\n{bad}\n{OK}\n{other}");
        let (r, spool) = events(body.as_bytes()).unwrap();
        assert_eq!((r.read, r.accepted, r.duplicates, r.rejected), (4, 2, 1, 1));
        assert_eq!(r.rejects[0].line, 3);
        assert!(r.rejects[0].reason.contains("`ts`"), "{:?}", r.rejects);
        // Accepted and rejected records are spooled; the duplicate is not.
        let lines: Vec<&str> = std::str::from_utf8(&spool).unwrap().lines().collect();
        assert_eq!(lines, [OK, bad.as_str(), other.as_str()]);
    }

    #[test]
    fn a_json_array_may_span_lines_and_is_spooled_one_record_a_line() {
        let pretty = serde_json::to_string_pretty(&serde_json::json!([
            serde_json::from_str::<serde_json::Value>(OK).unwrap(),
            {"event_id": "b", "note": "line\nbreak"}
        ]))
        .unwrap();
        let (r, spool) = events(pretty.as_bytes()).unwrap();
        assert_eq!((r.read, r.accepted, r.rejected), (2, 1, 1));
        assert_eq!(r.rejects[0].line, 2);
        let text = std::str::from_utf8(&spool).unwrap();
        assert_eq!(text.lines().count(), 2);
        for l in text.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        assert!(text.contains(r#""line\nbreak""#), "{text}");
    }

    #[test]
    fn a_line_that_is_not_json_makes_the_body_malformed_naming_it() {
        let body = format!("{OK}\n{{\"event_id\": \"x\", \n");
        match events(body.as_bytes()) {
            Err(BodyError::Malformed(m)) => assert!(m.starts_with("line 2 "), "{m}"),
            other => panic!("{other:?}"),
        }
        match events(b"[{\"a\": 1},") {
            Err(BodyError::Malformed(m)) => assert!(m.contains("line 1"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gzip_is_inflated_within_the_limit() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![b' '; 10_000]).unwrap();
        let packed = gz.finish().unwrap();
        assert_eq!(gunzip(&packed, 10_000).unwrap().len(), 10_000);
        assert!(matches!(
            gunzip(&packed, 9_999),
            Err(BodyError::TooLarge(_))
        ));
        assert!(matches!(
            gunzip(b"not gzip", 100),
            Err(BodyError::Malformed(_))
        ));
    }
}
