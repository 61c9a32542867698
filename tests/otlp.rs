//! OpenTelemetry GenAI spans into the lake: OTLP/HTTP protobuf and JSON posted to
//! `serve --intake`, `ingest --format otlp` on what the Collector's file exporter writes, and a
//! trace the real OpenTelemetry Python SDK exports with its OTLP/HTTP exporter.

mod common;

use std::time::{Duration, Instant};

use common::{IntakeServer, Lake, http};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::Value;

const START_NS: u64 = 1_763_632_800_000_000_000; // 2025-11-20T10:00:00Z

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
    }
}

fn s(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

/// One export: a GenAI call, an HTTP span of the same trace, and a GenAI call without a prompt
/// version. `trace` (one byte) keeps the ids of two exports apart.
fn export(trace: u8) -> ExportTraceServiceRequest {
    let span = |id: u8, name: &str, attributes: Vec<KeyValue>, ms: u64| Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        start_time_unix_nano: START_NS,
        end_time_unix_nano: START_NS + ms * 1_000_000,
        attributes,
        status: Some(Status::default()),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "support-api"),
                    s("deployment.environment.name", "prod"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(
                        1,
                        "chat gpt-4o",
                        vec![
                            s("gen_ai.operation.name", "chat"),
                            s("gen_ai.request.model", "gpt-4o"),
                            s("gen_ai.response.model", "gpt-4o-2024-08-06"),
                            i("gen_ai.usage.input_tokens", 321),
                            i("gen_ai.usage.output_tokens", 54),
                            s("gen_ai.prompt.version", "v3"),
                            s("promptgate.route", "support"),
                            s("promptgate.tier", "pro"),
                            s("enduser.id", "user-42"),
                        ],
                        840,
                    ),
                    span(2, "GET /chat", vec![s("http.request.method", "GET")], 900),
                    span(
                        3,
                        "chat gpt-4o",
                        vec![
                            s("gen_ai.request.model", "gpt-4o"),
                            s("promptgate.route", "support"),
                            i("gen_ai.usage.input_tokens", 1),
                            i("gen_ai.usage.output_tokens", 1),
                        ],
                        10,
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn post_traces(server: &IntakeServer, content_type: &str, body: &[u8]) -> common::HttpAnswer {
    http(
        &server.addr,
        "POST",
        "/v1/traces",
        &[("content-type", content_type)],
        body,
    )
}

fn rows(lake: &Lake, query: &str) -> Vec<Value> {
    serde_json::from_str(&lake.ok(&["sql", query, "--format", "json"])).unwrap()
}

fn wait_for(lake: &Lake, n: usize) {
    let start = Instant::now();
    while !(lake.lake.join("_promptgate/log").is_dir()
        && rows(lake, "SELECT event_id FROM llm_events").len() >= n)
    {
        assert!(start.elapsed() < Duration::from_secs(60), "no {n} events");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn quarantined(lake: &Lake) -> String {
    let mut files = Vec::new();
    common::walk(&lake.lake.join("quarantine"), &mut files);
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn protobuf_and_json_exports_land_with_the_expected_fields() {
    let lake = Lake::new();
    let server = IntakeServer::start(&lake.lake, &[], &["--commit-interval", "0.2"]);

    // Protobuf in, protobuf out, with the rejected span counted as OTLP says.
    let body = prost::Message::encode_to_vec(&export(0xa1));
    let a = post_traces(&server, "application/x-protobuf", &body);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/x-protobuf"));
    let r: ExportTraceServiceResponse = prost::Message::decode(&a.body[..]).unwrap();
    let partial = r.partial_success.expect("a span was rejected");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("prompt_version"),
        "{}",
        partial.error_message
    );

    // JSON in (as the OTLP JSON encoding writes it), JSON out with promptgate's accounting.
    let json = serde_json::to_string(&export(0xb2)).unwrap();
    let a = post_traces(&server, "application/json", json.as_bytes());
    assert_eq!(a.status, 200);
    let r = a.json();
    assert_eq!(
        (&r["read"], &r["accepted"], &r["rejected"], &r["skipped"]),
        (
            &Value::from(2),
            &Value::from(1),
            &Value::from(1),
            &Value::from(1)
        )
    );
    assert_eq!(r["partialSuccess"]["rejectedSpans"], "1");
    assert_eq!(r["rejects"][0]["line"], 3);

    // Not OTLP at all.
    let a = post_traces(&server, "application/x-protobuf", b"\xff\xff\xff");
    assert_eq!(a.status, 400);
    let a = post_traces(&server, "text/plain", b"x");
    assert_eq!(a.status, 415);

    wait_for(&lake, 2);
    server.stop();
    let got = rows(
        &lake,
        "SELECT event_id, ts, route, env, model, response_model, tier, prompt_version, duration_ms, tokens_in, tokens_out, status, unit_id, attributes FROM llm_events ORDER BY event_id",
    );
    assert_eq!(got.len(), 2, "{got:?}");
    let e = &got[0];
    assert_eq!(
        e["event_id"],
        format!("{}-{}", "a1".repeat(16), "01".repeat(8))
    );
    assert!(
        e["ts"].as_str().unwrap().starts_with("2025-11-20T10:00:00"),
        "{e}"
    );
    for (k, v) in [
        ("route", "support"),
        ("env", "prod"),
        ("model", "gpt-4o"),
        ("response_model", "gpt-4o-2024-08-06"),
        ("tier", "pro"),
        ("prompt_version", "v3"),
        ("status", "ok"),
        ("unit_id", "user-42"),
    ] {
        assert_eq!(e[k], v, "{k}: {e}");
    }
    assert_eq!(e["duration_ms"], 840.0);
    assert_eq!(
        (e["tokens_in"].as_i64(), e["tokens_out"].as_i64()),
        (Some(321), Some(54))
    );
    let attrs: Value = serde_json::from_str(e["attributes"].as_str().unwrap()).unwrap();
    assert_eq!(attrs["service.name"], "support-api");
    assert_eq!(attrs["gen_ai.operation.name"], "chat");

    // Each rejected span is in the quarantine as the OTLP JSON of that span, with the reason.
    let q = quarantined(&lake);
    for trace in ["a1", "b2"] {
        assert!(q.contains(&trace.repeat(16)), "{q}");
    }
    assert!(q.contains(&"03".repeat(8)), "{q}");
    assert!(
        !q.contains(&"02".repeat(8)),
        "the skipped span was kept: {q}"
    );
    assert!(q.contains("gen_ai.prompt.version"), "{q}");
}

#[test]
fn ingest_format_otlp_reads_the_collector_file_exporter_output() {
    let lake = Lake::new();
    // One export request per line, with 64-bit integers as numbers, as some producers write.
    let mut text = String::new();
    for t in [0xc3u8, 0xd4] {
        let mut v = serde_json::to_value(export(t)).unwrap();
        let span = &mut v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        span["startTimeUnixNano"] = Value::from(START_NS);
        text.push_str(&v.to_string());
        text.push('\n');
    }
    text.push_str("{\"resourceSpans\": 7}\n");
    let file = lake.path("traces.jsonl");
    std::fs::write(&file, text).unwrap();
    let out = lake.ok(&[
        "ingest",
        "--format",
        "otlp",
        "--json",
        "--no-progress",
        file.to_str().unwrap(),
    ]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&r["read"], &r["accepted"], &r["rejected"], &r["skipped"]),
        (
            &Value::from(5),
            &Value::from(2),
            &Value::from(3),
            &Value::from(2)
        ),
        "{r}"
    );
    let got = rows(
        &lake,
        "SELECT model, response_model, prompt_version FROM llm_events",
    );
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|e| e["response_model"] == "gpt-4o-2024-08-06")
    );
    // The line that is not an export request is kept whole, with why.
    assert!(quarantined(&lake).contains("\"resourceSpans\": 7"));
    // A mapping file names other attributes.
    let mapping = lake.path("mapping.toml");
    std::fs::write(&mapping, "prompt_version = [\"app.prompt_rev\"]\n").unwrap();
    let out = lake.ok(&[
        "ingest",
        "--format",
        "otlp",
        "--json",
        "--no-progress",
        "--otlp-mapping",
        mapping.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&r["accepted"], &r["rejected"]),
        (&Value::from(0), &Value::from(5)),
        "{r}"
    );
    assert!(quarantined(&lake).contains("app.prompt_rev"));
    let err = lake.stderr(
        &[
            "ingest",
            "--format",
            "otlp",
            "--otlp-mapping",
            "/nonexistent.toml",
            file.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("nonexistent.toml"), "{err}");
    let printed = lake.ok(&["ingest", "--print-otlp-mapping"]);
    assert!(printed.contains("deployment.environment.name"));
}

#[test]
fn a_trace_from_the_opentelemetry_python_sdk_lands_in_the_lake() {
    common::require_python("opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http");
    let lake = Lake::new();
    let server = IntakeServer::start(&lake.lake, &[], &["--commit-interval", "0.2"]);
    let script = r#"
import sys
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

provider = TracerProvider(resource=Resource.create({
    "service.name": "support-api", "deployment.environment.name": "staging"}))
exporter = OTLPSpanExporter(endpoint=sys.argv[1], compression=Compression.Gzip)
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("app")
with tracer.start_as_current_span("POST /answer") as outer:
    with tracer.start_as_current_span("chat gpt-4o-mini") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.provider.name", "openai")
        span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        span.set_attribute("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
        span.set_attribute("gen_ai.usage.input_tokens", 812)
        span.set_attribute("gen_ai.usage.output_tokens", 97)
        span.set_attribute("langfuse.observation.prompt.version", "12")
        span.set_attribute("promptgate.route", "answer")
        span.set_attribute("user.id", "u-7")
        trace_id = format(span.get_span_context().trace_id, "032x")
provider.shutdown()
print(trace_id)
"#;
    let out = common::python()
        .args(["-c", script, &format!("http://{}/v1/traces", server.addr)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(trace.len(), 32);
    wait_for(&lake, 1);
    server.stop();
    let got = rows(
        &lake,
        "SELECT event_id, route, env, model, response_model, prompt_version, tokens_in, tokens_out, unit_id, status FROM llm_events",
    );
    assert_eq!(got.len(), 1, "only the GenAI span is an event: {got:?}");
    let e = &got[0];
    assert!(e["event_id"].as_str().unwrap().starts_with(&trace), "{e}");
    assert_eq!(e["route"], "answer");
    assert_eq!(e["env"], "staging");
    assert_eq!(e["model"], "gpt-4o-mini");
    assert_eq!(e["response_model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(e["prompt_version"], "12");
    assert_eq!(
        (e["tokens_in"].as_i64(), e["tokens_out"].as_i64()),
        (Some(812), Some(97))
    );
    assert_eq!(e["unit_id"], "u-7");
    assert_eq!(e["status"], "ok");
}
