//! The fast path of [`super::parse_object`]: one scan over the plain objects nearly every line
//! is, giving exactly what the serde path gives for them.
//!
//! The serde path captures each value as raw JSON text and then reads its strings a second
//! time to unescape them; here a string without escapes is borrowed as it is found, and a
//! number or literal is checked against JSON's grammar in place. Nested objects and arrays are
//! still read by serde_json. Anything else (an escaped key, a key given twice, many unknown
//! keys, a control character, any invalid JSON) returns `None`, and the serde path reads the
//! line again with its own error messages: this path never rejects, so it can never reject
//! differently.

use std::borrow::Cow;

use serde_json::value::RawValue as JsonRaw;

use super::{CowStr, RecordFields, UNKNOWN_KEYS_SCANNED};
use crate::event::RawValue;

/// The fields of the one JSON object in `text`, or `None` when the serde path must decide.
pub(super) fn object<'a, const N: usize>(
    text: &'a str,
    resolve: fn(&str) -> Option<(usize, &'static str)>,
) -> Option<RecordFields<'a, N>> {
    let b = text.as_bytes();
    let mut out = RecordFields {
        fields: std::array::from_fn(|_| None),
        unknown: Vec::new(),
    };
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        let (end, escaped) = string_end(b, i)?;
        if escaped {
            return None;
        }
        let key = &text[i + 1..end - 1];
        i = skip_ws(b, end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let (value, end) = value(text, i)?;
        match resolve(key) {
            Some((field, _)) => {
                // Given twice (maybe in both spellings): the serde path names both.
                if out.fields[field].is_some() {
                    return None;
                }
                out.fields[field] = Some(value);
            }
            None => {
                if out.unknown.len() >= UNKNOWN_KEYS_SCANNED
                    || out.unknown.iter().any(|(k, _)| k == key)
                {
                    return None;
                }
                out.unknown.push((Cow::Borrowed(key), &text[i..end]));
            }
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

/// The value starting at `i` and the index just past it.
fn value(text: &str, i: usize) -> Option<(RawValue<'_>, usize)> {
    let b = text.as_bytes();
    let literal =
        |word: &[u8], v: RawValue<'static>| b[i..].starts_with(word).then_some((v, i + word.len()));
    match *b.get(i)? {
        b'"' => {
            let (end, escaped) = string_end(b, i)?;
            let v = if escaped {
                // serde_json unescapes (and checks the escapes); rare in practice.
                serde_json::from_str::<CowStr>(&text[i..end]).ok()?.0
            } else {
                Cow::Borrowed(&text[i + 1..end - 1])
            };
            Some((RawValue::Text(v), end))
        }
        b't' => literal(b"true", RawValue::Bool(true)),
        b'f' => literal(b"false", RawValue::Bool(false)),
        b'n' => literal(b"null", RawValue::Null),
        b'-' | b'0'..=b'9' => {
            let end = number_end(b, i)?;
            Some((RawValue::Number(&text[i..end]), end))
        }
        b'{' | b'[' => {
            let mut values = serde_json::Deserializer::from_str(&text[i..]).into_iter::<&JsonRaw>();
            let raw = values.next()?.ok()?;
            Some((RawValue::Json(raw.get()), i + values.byte_offset()))
        }
        _ => None,
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// For the string whose opening quote is at `i`: the index just past its closing quote, and
/// whether it holds an escape. `None` when `i` is not a quote, the string does not end, or it
/// holds a control character (invalid in JSON strings).
fn string_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        let at = j + memchr::memchr2(b'"', b'\\', &b[j..])?;
        if b[j..at].iter().any(|&c| c < 0x20) {
            return None;
        }
        if b[at] == b'"' {
            return Some((at + 1, escaped));
        }
        // A backslash and the byte it escapes (serde_json checks the escape itself).
        escaped = true;
        if *b.get(at + 1)? < 0x20 {
            return None;
        }
        j = at + 2;
    }
}

/// The index just past the JSON number starting at `i`:
/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |i: usize| i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}
