//! NDJSON records: one JSON object per line, parsed without building a `serde_json::Value`.
//!
//! Each top-level key is resolved to a schema field (either spelling); its value is captured as
//! raw JSON text and typed by the rules in [`crate::event`], so a wrong type is reported against
//! the field it belongs to. Unknown keys are folded into `attributes`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use foldhash::fast::RandomState;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue as JsonRaw;

mod scan;

use crate::event::{
    EVENT_FIELD_COUNT, EventField, EventFields, LabelField, RawValue, RejectReason,
};

/// A string that borrows from the input when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Types raw JSON text into a [`RawValue`].
fn typed(raw: &JsonRaw) -> Result<RawValue<'_>, serde_json::Error> {
    let text = raw.get();
    Ok(match text.as_bytes()[0] {
        b'"' => RawValue::Text(serde_json::from_str::<CowStr>(text)?.0),
        b'n' => RawValue::Null,
        b't' => RawValue::Bool(true),
        b'f' => RawValue::Bool(false),
        b'{' | b'[' => RawValue::Json(text),
        _ => RawValue::Number(text),
    })
}

/// Unknown keys checked for repeats by a linear scan; beyond this many, by a hash set.
const UNKNOWN_KEYS_SCANNED: usize = 16;

/// The keys of one object: known fields by index, the rest kept raw for `attributes`.
#[derive(Debug, PartialEq)]
pub(crate) struct RecordFields<'a, const N: usize> {
    pub fields: [Option<RawValue<'a>>; N],
    /// Unknown keys and their values as written (valid JSON).
    pub unknown: Vec<(Cow<'a, str>, &'a str)>,
}

struct RecordSeed<const N: usize> {
    resolve: fn(&str) -> Option<(usize, &'static str)>,
}

impl<'de, const N: usize> DeserializeSeed<'de> for RecordSeed<N> {
    type Value = Result<RecordFields<'de, N>, RejectReason>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for RecordSeed<N> {
    type Value = Result<RecordFields<'de, N>, RejectReason>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = RecordFields {
            fields: std::array::from_fn(|_| None),
            unknown: Vec::new(),
        };
        let mut seen: [Option<Cow<'de, str>>; N] = std::array::from_fn(|_| None);
        let mut duplicate: Option<String> = None;
        let mut unknown_set: Option<HashSet<Cow<'de, str>, RandomState>> = None;
        while let Some(CowStr(key)) = map.next_key::<CowStr>()? {
            let raw: &'de JsonRaw = map.next_value()?;
            if duplicate.is_some() {
                continue;
            }
            match (self.resolve)(&key) {
                Some((i, name)) => {
                    if let Some(first) = &seen[i] {
                        duplicate = Some(if first == &key {
                            format!("field `{key}` appears twice")
                        } else {
                            format!("field `{name}` is given twice (as `{first}` and `{key}`)")
                        });
                        continue;
                    }
                    out.fields[i] = Some(typed(raw).map_err(de::Error::custom)?);
                    seen[i] = Some(key);
                }
                None => {
                    // A set once there are many unknown keys: a linear search per key would
                    // make a line with tens of thousands of keys take seconds.
                    let repeated = if out.unknown.len() < UNKNOWN_KEYS_SCANNED {
                        out.unknown.iter().any(|(k, _)| k == &key)
                    } else {
                        let set = unknown_set.get_or_insert_with(|| {
                            out.unknown.iter().map(|(k, _)| k.clone()).collect()
                        });
                        !set.insert(key.clone())
                    };
                    if repeated {
                        duplicate = Some(format!("field `{key}` appears twice"));
                        continue;
                    }
                    out.unknown.push((key, raw.get()));
                }
            }
        }
        Ok(match duplicate {
            Some(d) => Err(d),
            None => Ok(out),
        })
    }
}

fn parse_object<'a, const N: usize>(
    line: &'a [u8],
    resolve: fn(&str) -> Option<(usize, &'static str)>,
) -> Result<RecordFields<'a, N>, RejectReason> {
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "line is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        )
    })?;
    let first = text.trim_start().as_bytes().first().copied();
    if first != Some(b'{') {
        let kind = match first {
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            _ => "not JSON",
        };
        return Err(format!("line is {kind}; each line must be one JSON object"));
    }
    // Nearly every line is a plain object that one scan reads; the rest go through serde_json.
    match scan::object(text, resolve) {
        Some(fields) => Ok(fields),
        None => serde_object(text, resolve),
    }
}

/// [`parse_object`] through serde_json: any JSON object, and the errors of any other text.
fn serde_object<'a, const N: usize>(
    text: &'a str,
    resolve: fn(&str) -> Option<(usize, &'static str)>,
) -> Result<RecordFields<'a, N>, RejectReason> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = RecordSeed::<N> { resolve }
        .deserialize(&mut de)
        .map_err(|e| format!("invalid JSON: {e}"))?;
    de.end()
        .map_err(|e| format!("invalid JSON: unexpected text after the object ({e})"))?;
    fields
}

fn resolve_event(key: &str) -> Option<(usize, &'static str)> {
    EventField::from_key(key).map(|f| (f.index(), f.name()))
}

fn resolve_label(key: &str) -> Option<(usize, &'static str)> {
    LabelField::from_key(key).map(|f| (f.index(), f.name()))
}

/// Parses one NDJSON event line into raw fields, with unknown keys merged into `attributes`.
pub(crate) fn event_fields(line: &[u8]) -> Result<EventFields<'_>, RejectReason> {
    let RecordFields {
        mut fields,
        unknown,
    } = parse_object::<EVENT_FIELD_COUNT>(line, resolve_event)?;
    if !unknown.is_empty() {
        let slot = &mut fields[EventField::Attributes.index()];
        let values = unknown
            .iter()
            .map(|(k, raw)| {
                serde_json::from_str::<Box<JsonRaw>>(raw)
                    .map(|v| (k.as_ref(), v))
                    .map_err(|e| format!("invalid JSON: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let merged = merge_attributes(slot.take(), values)?;
        *slot = Some(RawValue::Text(Cow::Owned(merged)));
    }
    Ok(fields)
}

/// Parses one NDJSON label line. Unknown keys are not part of the label schema: rejected, so a
/// misspelt `labeler` is noticed rather than silently dropped.
pub(crate) fn label_fields(line: &[u8]) -> Result<[Option<RawValue<'_>>; 5], RejectReason> {
    let RecordFields { fields, unknown } = parse_object::<5>(line, resolve_label)?;
    if let Some((k, _)) = unknown.first() {
        return Err(format!(
            "unknown field `{k}` in a label record (expected event_id, label, labeler, ts, note)"
        ));
    }
    Ok(fields)
}

/// Builds the `attributes` object: the record's own `attributes` (which win on a clash) plus
/// every unknown top-level key (NDJSON) or column (CSV). Values are kept as the JSON text they
/// came as (`serde_json`'s `RawValue`), so a number too large for 64 bits keeps its digits
/// instead of becoming `1.2345678901234568e+29`; keys come out sorted, as before.
pub(crate) fn merge_attributes<'k>(
    explicit: Option<RawValue<'_>>,
    unknown: impl IntoIterator<Item = (&'k str, Box<JsonRaw>)>,
) -> Result<String, RejectReason> {
    type Object = BTreeMap<String, Box<JsonRaw>>;
    let mut obj: Object = match &explicit {
        None | Some(RawValue::Null) => Object::new(),
        Some(RawValue::Json(j)) if j.starts_with('{') => {
            serde_json::from_str(j).map_err(|e| format!("invalid `attributes`: {e}"))?
        }
        Some(RawValue::Text(t)) if t.trim_start().starts_with('{') => serde_json::from_str(t)
            .map_err(|e| format!("`attributes` is a string but not a JSON object: {e}"))?,
        Some(_) => {
            return Err("`attributes` must be a JSON object".into());
        }
    };
    for (k, v) in unknown {
        obj.entry(k.to_string()).or_insert(v);
    }
    serde_json::to_string(&obj).map_err(|e| format!("cannot write `attributes`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_and_unknown_keys() {
        let line = br#"{"eventId":"a","promptVersion":"v2","top_k":5,"attributes":{"x":1}}"#;
        let f = event_fields(line).unwrap();
        assert_eq!(
            f[EventField::PromptVersion.index()],
            Some(RawValue::Text("v2".into()))
        );
        let Some(RawValue::Text(attrs)) = &f[EventField::Attributes.index()] else {
            panic!("attributes missing")
        };
        let v: serde_json::Value = serde_json::from_str(attrs).unwrap();
        assert_eq!(v["top_k"], 5);
        assert_eq!(v["x"], 1);
    }

    /// Past a few unknown keys, repeats are found with a set (80,000 keys on one line took 7.8 s
    /// when each was compared with all before it): every key is kept, a repeat is still caught.
    #[test]
    fn many_unknown_keys_are_kept_and_a_repeat_is_caught() {
        let keys: Vec<String> = (0..80_000).map(|i| format!("\"k{i}\":{i}")).collect();
        let line = format!("{{\"eventId\":\"a\",{}}}", keys.join(","));
        let f = event_fields(line.as_bytes()).unwrap();
        let Some(RawValue::Text(attrs)) = &f[EventField::Attributes.index()] else {
            panic!("attributes missing")
        };
        let v: serde_json::Value = serde_json::from_str(attrs).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 80_000);
        let repeated = format!("{{{},\"k17\":1}}", keys.join(","));
        let e = event_fields(repeated.as_bytes()).unwrap_err();
        assert!(e.contains("`k17` appears twice"), "{e}");
    }

    /// The scanner's fast path and serde_json agree on every line the scanner accepts (and it
    /// accepts none that serde_json rejects): random lines built from valid and broken pieces.
    #[test]
    fn fast_path_agrees_with_serde_json() {
        use rand::{Rng, SeedableRng};
        const KEYS: &[&str] = &[
            "event_id",
            "eventId",
            "ts",
            "route",
            "prompt_version",
            "promptVersion",
            "tokens_in",
            "duration_ms",
            "status",
            "attributes",
            "unit_id",
            "label",
            "top_k",
            "x",
            "route",
            "e\\u0076ent_id",
            "a\\\"b",
            "",
        ];
        const VALUES: &[&str] = &[
            "\"plain\"",
            "\"\"",
            "\"caf\u{e9} \u{1f600}\"",
            "\"esc \\\" q\"",
            "\"nl \\n tab \\t\"",
            "\"u \\u00e9 \\ud83d\\ude00\"",
            "\"bad \\x\"",
            "\"lone \\ud800\"",
            "\"ctrl \u{1}\"",
            "\"tab\tin\"",
            "\"open",
            "0",
            "-0",
            "12",
            "-3.25",
            "1e5",
            "2E-3",
            "-0.0e+7",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "--1",
            "123456789012345678901234567890",
            "true",
            "false",
            "null",
            "tru",
            "nul",
            "falsey",
            "{}",
            "[]",
            "{\"a\":[1,{\"b\":\"}\"}]}",
            "[1, \"]\", {}]",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1",
            "NaN",
            "\"2026-11-01T00:00:00Z\"",
        ];
        const WS: &[&str] = &["", "", "", " ", "\t", " \r\n "];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (mut fast, mut total) = (0, 0);
        for _ in 0..40_000 {
            let ws = |rng: &mut rand_chacha::ChaCha8Rng| WS[rng.random_range(0..WS.len())];
            let mut line = format!("{}{{{}", ws(&mut rng), ws(&mut rng));
            let members = rng.random_range(0..6);
            for m in 0..members {
                if m > 0 {
                    line.push_str(if rng.random_bool(0.98) { "," } else { ";" });
                }
                let key = KEYS[rng.random_range(0..KEYS.len())];
                let value = VALUES[rng.random_range(0..VALUES.len())];
                let colon = if rng.random_bool(0.99) { ":" } else { "" };
                line.push_str(&format!(
                    "{}\"{key}\"{}{colon}{}{value}{}",
                    ws(&mut rng),
                    ws(&mut rng),
                    ws(&mut rng),
                    ws(&mut rng)
                ));
            }
            if rng.random_bool(0.02) {
                line.push(',');
            }
            line.push('}');
            line.push_str(match rng.random_range(0..50) {
                0 => " x",
                1 => "}",
                2 => "\t",
                _ => "",
            });
            total += 1;
            let Some(scanned) = scan::object::<EVENT_FIELD_COUNT>(&line, resolve_event) else {
                continue;
            };
            fast += 1;
            match serde_object::<EVENT_FIELD_COUNT>(&line, resolve_event) {
                Ok(slow) => assert_eq!(scanned, slow, "line {line}"),
                Err(e) => panic!("the scanner accepted what serde_json rejects ({e}): {line}"),
            }
        }
        // Most lines hold a broken piece; the fast path still takes a good share of them.
        assert!(fast * 10 > total, "fast path took {fast} of {total}");
    }

    #[test]
    fn both_spellings_is_a_duplicate() {
        let e = event_fields(br#"{"prompt_version":"a","promptVersion":"b"}"#).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn not_an_object() {
        assert!(event_fields(b"[1,2]").unwrap_err().contains("array"));
        assert!(
            event_fields(b"{\"a\":")
                .unwrap_err()
                .contains("invalid JSON")
        );
        assert!(
            event_fields(b"{} x")
                .unwrap_err()
                .contains("after the object")
        );
    }
}
