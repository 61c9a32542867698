//! OpenTelemetry GenAI spans as events: OTLP export requests (JSON or protobuf, the types of
//! the `opentelemetry-proto` crate) mapped to `llm_events` records.
//!
//! A span is a GenAI span when one of its attributes starts with `gen_ai.`; other spans (HTTP
//! handlers, database calls of the same trace) are skipped and counted. A GenAI span becomes
//! one event, built as an NDJSON event line and validated by the same rules as any other:
//!
//! | event field | from |
//! |---|---|
//! | `event_id` | `<trace id>-<span id>` (hex) |
//! | `ts`, `duration_ms` | the span's start, and end - start |
//! | `model` | `gen_ai.request.model`, else `gen_ai.response.model` |
//! | `response_model` | `gen_ai.response.model` |
//! | `tokens_in`, `tokens_out` | `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` (or the older `prompt_tokens`, `completion_tokens`); 0 on a failed call that reports none |
//! | `status` | `error` when the span's status is ERROR; else the mapped status attribute; else `ok` |
//! | `route`, `env`, `tier`, `prompt_version`, `prompt_sha`, `unit_id` | the first attribute set of those the [`OtlpMapping`] names, the span's own before its resource's |
//!
//! A GenAI span missing a required field is rejected naming the attributes tried, and kept in
//! the quarantine as the OTLP JSON of that span.

use std::path::Path;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, status};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// Which span or resource attributes fill the event fields OpenTelemetry has no convention
/// for. Each field lists attribute names tried in order, on the span, then on its resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpMapping {
    pub route: Vec<String>,
    pub env: Vec<String>,
    pub tier: Vec<String>,
    pub prompt_version: Vec<String>,
    pub prompt_sha: Vec<String>,
    pub unit_id: Vec<String>,
    pub status: Vec<String>,
}

/// The mapping used when no file is given (also printed by `ingest --print-otlp-mapping`).
pub const DEFAULT_MAPPING_TOML: &str = r#"# promptgate's mapping of OpenTelemetry span attributes to event fields.
# Each field lists attribute names tried in order: the span's attributes first, then its
# resource's. The first one set wins. A field left out keeps this list. The gen_ai.* fields
# (model, response model, tokens) follow the GenAI semantic conventions and are not mapped here.
route = ["promptgate.route", "gen_ai.prompt.name", "langfuse.observation.prompt.name", "traceloop.prompt.key"]
env = ["promptgate.env", "deployment.environment.name", "deployment.environment"]
tier = ["promptgate.tier"]
prompt_version = ["promptgate.prompt_version", "gen_ai.prompt.version", "langfuse.observation.prompt.version", "traceloop.prompt.version"]
prompt_sha = ["promptgate.prompt_sha", "traceloop.prompt.version_hash"]
unit_id = ["promptgate.unit_id", "enduser.id", "user.id"]
# Values ok, flagged or error; a span whose status is ERROR is an error whatever this says.
status = ["promptgate.status"]
"#;

/// A mapping file as written: every field optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    route: Option<Vec<String>>,
    env: Option<Vec<String>>,
    tier: Option<Vec<String>>,
    prompt_version: Option<Vec<String>>,
    prompt_sha: Option<Vec<String>>,
    unit_id: Option<Vec<String>>,
    status: Option<Vec<String>>,
}

impl Default for OtlpMapping {
    fn default() -> Self {
        Self::from_toml(DEFAULT_MAPPING_TOML).expect("the default mapping is valid")
    }
}

impl OtlpMapping {
    /// Reads a mapping file: fields it leaves out keep their default lists.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::input(format!(
                "cannot read the OTLP mapping {}: {e}",
                path.display()
            ))
        })?;
        Self::from_toml(&text).map_err(|e| {
            Error::usage(format!("invalid OTLP mapping {}: {e}", path.display())).with_hint(
                "start from `promptgate ingest --print-otlp-mapping`; each field is a list of attribute names",
            )
        })
    }

    pub fn from_toml(text: &str) -> std::result::Result<Self, String> {
        let parse = |t: &str| toml::from_str::<MappingFile>(t).map_err(|e| e.to_string());
        let f = parse(text)?;
        let d = parse(DEFAULT_MAPPING_TOML)?;
        let pick = |name: &str, v: Option<Vec<String>>, d: Option<Vec<String>>| match v {
            Some(v) if v.is_empty() => Err(format!(
                "{name} = []: give at least one attribute name, or leave the field out for the default"
            )),
            Some(v) => Ok(v),
            None => Ok(d.unwrap_or_default()),
        };
        Ok(OtlpMapping {
            route: pick("route", f.route, d.route)?,
            env: pick("env", f.env, d.env)?,
            tier: pick("tier", f.tier, d.tier)?,
            prompt_version: pick("prompt_version", f.prompt_version, d.prompt_version)?,
            prompt_sha: pick("prompt_sha", f.prompt_sha, d.prompt_sha)?,
            unit_id: pick("unit_id", f.unit_id, d.unit_id)?,
            status: pick("status", f.status, d.status)?,
        })
    }
}

/// Decodes an OTLP/HTTP protobuf body.
pub fn decode_protobuf(body: &[u8]) -> std::result::Result<ExportTraceServiceRequest, String> {
    <ExportTraceServiceRequest as prost::Message>::decode(body)
        .map_err(|e| format!("not an OTLP ExportTraceServiceRequest in protobuf: {e}"))
}

/// Decodes OTLP/JSON: ids in hex, 64-bit integers as strings or numbers, enums as numbers or
/// their names, unknown fields ignored.
pub fn decode_json(body: &[u8]) -> std::result::Result<ExportTraceServiceRequest, String> {
    // Most exporters write the canonical form, which the crate's types read directly; the
    // rest (numbers for 64-bit fields, enum names, empty values) go through `normalize`.
    if let Ok(req) = serde_json::from_slice::<ExportTraceServiceRequest>(body) {
        return Ok(req);
    }
    let mut v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        return Err("not an OTLP export request: the JSON is not an object".into());
    }
    normalize(&mut v, "");
    if v.get("resourceSpans").is_none() {
        v["resourceSpans"] = json!([]);
    }
    serde_json::from_value(v).map_err(|e| format!("not an OTLP ExportTraceServiceRequest: {e}"))
}

/// Puts OTLP/JSON in the one form the crate's types read: 64-bit integers as strings, enum
/// names as numbers, empty attribute values dropped.
fn normalize(v: &mut Value, key: &str) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                normalize(child, k);
            }
            if map
                .get("value")
                .is_some_and(|x| x.as_object().is_some_and(Map::is_empty))
            {
                map.remove("value");
            }
        }
        Value::Array(items) => {
            for item in items {
                normalize(item, key);
            }
        }
        Value::Number(n)
            if matches!(
                key,
                "startTimeUnixNano" | "endTimeUnixNano" | "timeUnixNano" | "observedTimeUnixNano"
            ) =>
        {
            *v = Value::String(n.to_string());
        }
        Value::String(s) if key == "code" => {
            if let Some(c) = status::StatusCode::from_str_name(s) {
                *v = json!(c as i32);
            }
        }
        Value::String(s) if key == "kind" => {
            if let Some(k) = opentelemetry_proto::tonic::trace::v1::span::SpanKind::from_str_name(s)
            {
                *v = json!(k as i32);
            }
        }
        _ => {}
    }
}

/// One span's fate.
pub enum Mapped {
    /// Not a GenAI span.
    Skipped,
    /// An NDJSON event line.
    Event(String),
    /// A GenAI span without a required field: why.
    Rejected(String),
}

/// Every span of `req`, with its resource and scope, in order.
pub fn spans(
    req: &ExportTraceServiceRequest,
) -> impl Iterator<Item = (&ResourceSpans, &ScopeSpans, &Span)> {
    req.resource_spans.iter().flat_map(|rs| {
        rs.scope_spans
            .iter()
            .flat_map(move |ss| ss.spans.iter().map(move |s| (rs, ss, s)))
    })
}

/// The OTLP JSON of one span as an export request of its own (its resource and scope kept):
/// what the spool and the quarantine keep of it.
pub fn span_request_json(rs: &ResourceSpans, ss: &ScopeSpans, span: &Span) -> String {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: rs.resource.clone(),
            scope_spans: vec![ScopeSpans {
                scope: ss.scope.clone(),
                spans: vec![span.clone()],
                schema_url: ss.schema_url.clone(),
            }],
            schema_url: rs.schema_url.clone(),
        }],
    };
    serde_json::to_string(&req).expect("OTLP types serialize")
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

/// An attribute's value as event text: strings as they are, numbers and booleans written out;
/// arrays, maps and bytes are not a name.
fn text(v: &any_value::Value) -> Option<String> {
    match v {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn json_of(v: &any_value::Value) -> Value {
    match v {
        any_value::Value::StringValue(s) => json!(s),
        any_value::Value::IntValue(i) => json!(i),
        any_value::Value::DoubleValue(d) => json!(d),
        any_value::Value::BoolValue(b) => json!(b),
        any_value::Value::ArrayValue(a) => Value::Array(
            a.values
                .iter()
                .filter_map(|x| x.value.as_ref().map(json_of))
                .collect(),
        ),
        any_value::Value::KvlistValue(kv) => Value::Object(
            kv.values
                .iter()
                .filter_map(|x| Some((x.key.clone(), json_of(x.value.as_ref()?.value.as_ref()?))))
                .collect(),
        ),
        any_value::Value::BytesValue(b) => {
            json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
    }
}

/// Maps one span (see the module docs).
pub fn map_span(rs: &ResourceSpans, span: &Span, mapping: &OtlpMapping) -> Mapped {
    if !span
        .attributes
        .iter()
        .any(|kv| kv.key.starts_with("gen_ai."))
    {
        return Mapped::Skipped;
    }
    let resource: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
    let attr = |key: &str| find(&span.attributes, key).or_else(|| find(resource, key));
    let first = |keys: &[String]| keys.iter().find_map(|k| attr(k).and_then(text));
    let required = |field: &str, keys: &[String]| {
        first(keys).ok_or_else(|| {
            format!(
                "GenAI span {:?} has no {field}: none of the attributes {} is set on the span or its resource (name yours in an OTLP mapping file, see `promptgate ingest --print-otlp-mapping`)",
                span.name,
                keys.join(", ")
            )
        })
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let run = || -> std::result::Result<String, String> {
        if span.trace_id.is_empty() || span.span_id.is_empty() {
            return Err(format!(
                "GenAI span {:?} has no trace id or span id, from which its event_id is made",
                span.name
            ));
        }
        if span.start_time_unix_nano == 0 {
            return Err(format!(
                "GenAI span {:?} has no startTimeUnixNano",
                span.name
            ));
        }
        let failed = span
            .status
            .as_ref()
            .is_some_and(|s| s.code == status::StatusCode::Error as i32);
        let model = attr("gen_ai.request.model")
            .or_else(|| attr("gen_ai.response.model"))
            .and_then(text)
            .ok_or_else(|| {
                format!(
                    "GenAI span {:?} has no model: neither gen_ai.request.model nor gen_ai.response.model is set",
                    span.name
                )
            })?;
        let tokens = |names: [&str; 2]| -> std::result::Result<Value, String> {
            match names.iter().find_map(|n| attr(n)) {
                Some(any_value::Value::IntValue(i)) => Ok(json!(i)),
                Some(any_value::Value::DoubleValue(d)) => Ok(json!(d)),
                Some(any_value::Value::StringValue(s)) => Ok(json!(s)),
                Some(_) => Err(format!(
                    "GenAI span {:?}: {} is not a number",
                    span.name, names[0]
                )),
                None if failed => Ok(json!(0)),
                None => Err(format!(
                    "GenAI span {:?} has no {} (a call that succeeded reports its usage)",
                    span.name, names[0]
                )),
            }
        };
        let end = span.end_time_unix_nano.max(span.start_time_unix_nano);
        let start_us = (span.start_time_unix_nano / 1000) as i64;
        let ts = chrono::DateTime::from_timestamp_micros(start_us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .ok_or_else(|| format!("GenAI span {:?} starts at an impossible time", span.name))?;
        let mut e = Map::new();
        e.insert(
            "event_id".into(),
            json!(format!("{}-{}", hex(&span.trace_id), hex(&span.span_id))),
        );
        e.insert("ts".into(), json!(ts));
        e.insert("route".into(), json!(required("route", &mapping.route)?));
        e.insert("env".into(), json!(required("env", &mapping.env)?));
        e.insert("model".into(), json!(model));
        if let Some(t) = first(&mapping.tier) {
            e.insert("tier".into(), json!(t));
        }
        e.insert(
            "prompt_version".into(),
            json!(required("prompt_version", &mapping.prompt_version)?),
        );
        if let Some(s) = first(&mapping.prompt_sha) {
            e.insert("prompt_sha".into(), json!(s));
        }
        e.insert(
            "duration_ms".into(),
            json!((end - span.start_time_unix_nano) as f64 / 1e6),
        );
        e.insert(
            "tokens_in".into(),
            tokens(["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"])?,
        );
        e.insert(
            "tokens_out".into(),
            tokens([
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
            ])?,
        );
        let status = if failed {
            "error".to_string()
        } else {
            first(&mapping.status).unwrap_or_else(|| "ok".into())
        };
        e.insert("status".into(), json!(status));
        if let Some(u) = first(&mapping.unit_id) {
            e.insert("unit_id".into(), json!(u));
        }
        if let Some(m) = attr("gen_ai.response.model").and_then(text) {
            e.insert("response_model".into(), json!(m));
        }
        // What the span says beyond the event's fields, for SQL over `attributes`.
        let mut extra = Map::new();
        extra.insert("otel.span_name".into(), json!(span.name));
        for key in [
            "gen_ai.operation.name",
            "gen_ai.provider.name",
            "gen_ai.system",
            "gen_ai.response.id",
            "gen_ai.response.finish_reasons",
            "service.name",
        ] {
            if let Some(v) = attr(key) {
                extra.insert(key.into(), json_of(v));
            }
        }
        if let Some(s) = span.status.as_ref().filter(|s| !s.message.is_empty()) {
            extra.insert("otel.status_message".into(), json!(s.message));
        }
        e.insert("attributes".into(), Value::Object(extra));
        Ok(Value::Object(e).to_string())
    };
    match run() {
        Ok(line) => Mapped::Event(line),
        Err(reason) => Mapped::Rejected(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OTLP/JSON export as the Collector's file exporter writes it, with numbers where
    /// producers write numbers for 64-bit fields and an enum by name.
    const EXPORT: &str = r#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"support-api"}},
        {"key":"deployment.environment.name","value":{"stringValue":"prod"}}]},
      "scopeSpans":[{"scope":{"name":"openai"},"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"chat gpt-4o",
         "kind":3,"startTimeUnixNano":"1763632800000000000","endTimeUnixNano":1763632801250000000,
         "attributes":[
           {"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},
           {"key":"gen_ai.request.model","value":{"stringValue":"gpt-4o"}},
           {"key":"gen_ai.response.model","value":{"stringValue":"gpt-4o-2024-08-06"}},
           {"key":"gen_ai.usage.input_tokens","value":{"intValue":"120"}},
           {"key":"gen_ai.usage.output_tokens","value":{"intValue":42}},
           {"key":"gen_ai.prompt.version","value":{"stringValue":"v7"}},
           {"key":"promptgate.route","value":{"stringValue":"support"}},
           {"key":"enduser.id","value":{"stringValue":"u-1"}},
           {"key":"empty","value":{}}],
         "status":{"code":"STATUS_CODE_UNSET"},"someFutureField":1},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"aaa19b7ec3c1b174","name":"GET /chat",
         "startTimeUnixNano":"1763632800000000000","endTimeUnixNano":"1763632802000000000",
         "attributes":[{"key":"http.method","value":{"stringValue":"GET"}}]},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"bbb19b7ec3c1b174","name":"chat",
         "startTimeUnixNano":"1763632800000000000","endTimeUnixNano":"1763632800500000000",
         "attributes":[{"key":"gen_ai.request.model","value":{"stringValue":"gpt-4o"}},
                       {"key":"promptgate.route","value":{"stringValue":"support"}}],
         "status":{"code":2,"message":"rate limited"}}
      ]}]}]}"#;

    fn mapped(req: &ExportTraceServiceRequest) -> Vec<Mapped> {
        let m = OtlpMapping::default();
        spans(req).map(|(rs, _, s)| map_span(rs, s, &m)).collect()
    }

    #[test]
    fn genai_spans_map_to_events_and_others_are_skipped() {
        let req = decode_json(EXPORT.as_bytes()).unwrap();
        let out = mapped(&req);
        let Mapped::Event(line) = &out[0] else {
            panic!("first span not mapped")
        };
        let e: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            e["event_id"],
            "5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174"
        );
        assert_eq!(e["ts"], "2025-11-20T10:00:00.000000Z");
        assert_eq!(e["duration_ms"], 1250.0);
        assert_eq!(e["route"], "support");
        assert_eq!(e["env"], "prod", "from the resource");
        assert_eq!(e["model"], "gpt-4o");
        assert_eq!(e["response_model"], "gpt-4o-2024-08-06");
        assert_eq!(e["prompt_version"], "v7");
        assert_eq!(e["tokens_in"], 120);
        assert_eq!(e["tokens_out"], 42);
        assert_eq!(e["unit_id"], "u-1");
        assert_eq!(e["status"], "ok");
        assert_eq!(e["attributes"]["service.name"], "support-api");
        assert!(matches!(out[1], Mapped::Skipped));
        // The failed call has no prompt version: rejected, naming what was tried.
        let Mapped::Rejected(why) = &out[2] else {
            panic!("third span not rejected")
        };
        assert!(why.contains("gen_ai.prompt.version"), "{why}");
    }

    #[test]
    fn protobuf_and_json_decode_to_the_same_request() {
        let req = decode_json(EXPORT.as_bytes()).unwrap();
        let bytes = prost::Message::encode_to_vec(&req);
        assert_eq!(decode_protobuf(&bytes).unwrap(), req);
        // What the spool keeps of a span reads back as that span.
        let (rs, ss, span) = spans(&req).next().unwrap();
        let one = decode_json(span_request_json(rs, ss, span).as_bytes()).unwrap();
        assert_eq!(spans(&one).next().unwrap().2, span);
        assert!(decode_protobuf(b"\xff\xff\xff").is_err());
        assert!(decode_json(b"[1]").is_err());
    }

    #[test]
    fn a_failed_call_without_usage_is_an_error_event_with_no_tokens() {
        let text = EXPORT.replace(
            r#"{"key":"promptgate.route","value":{"stringValue":"support"}}],"#,
            r#"{"key":"promptgate.route","value":{"stringValue":"support"}},{"key":"traceloop.prompt.version","value":{"stringValue":"v7"}}],"#,
        );
        let req = decode_json(text.as_bytes()).unwrap();
        let Mapped::Event(line) = &mapped(&req)[2] else {
            panic!("not mapped")
        };
        let e: Value = serde_json::from_str(line).unwrap();
        assert_eq!(e["status"], "error");
        assert_eq!(e["tokens_in"], 0);
        assert_eq!(e["attributes"]["otel.status_message"], "rate limited");
    }

    #[test]
    fn a_mapping_file_overrides_some_fields_and_keeps_the_rest() {
        let m = OtlpMapping::from_toml("route = [\"app.feature\"]").unwrap();
        assert_eq!(m.route, ["app.feature"]);
        assert_eq!(m.env, OtlpMapping::default().env);
        assert!(OtlpMapping::from_toml("colour = [\"x\"]").is_err());
        assert!(OtlpMapping::from_toml("env = []").is_err());
    }
}
