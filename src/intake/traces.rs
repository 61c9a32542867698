//! `POST /v1/traces`: OTLP/HTTP trace exports (protobuf or JSON). GenAI spans are mapped to
//! events at once, to answer with the accounting. An accepted span is spooled as its event's
//! NDJSON line (committed like any posted event); a rejected one as an export request of its own
//! (OTLP/JSON), which the commit rejects again through `ingest`'s OTLP reader, so it lands in the
//! quarantine as the OTLP JSON of that span. Spans that are not GenAI spans are counted and not
//! kept.
//!
//! The answer follows OTLP/HTTP: `200` with an `ExportTraceServiceResponse` in the request's
//! encoding, `partial_success` naming the rejected spans; the JSON form also carries promptgate's
//! accounting (`read`, `accepted`, `duplicates`, `rejected`, `skipped`, `rejects`).

use std::collections::HashSet;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use serde::Serialize;

use super::body::{MAX_LISTED_REJECTS, Reject};
use super::{Answer, Intake};
use crate::event::validate_event;
use crate::ingest::otlp::{self, Mapped};

/// The bytes of one span's OTLP JSON past which it is rejected, as `ingest` rejects a longer
/// line.
const MAX_SPAN_BYTES: usize = 1 << 20;

/// promptgate's accounting of one export. `read` counts GenAI spans:
/// `read == accepted + duplicates + rejected`; `skipped` spans are not GenAI calls.
#[derive(Debug, Default, Serialize)]
pub struct TraceReport {
    pub read: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub skipped: u64,
    /// `line` is the span's position in the export (1-based, over all its spans).
    pub rejects: Vec<Reject>,
}

/// How the body and the answer are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// What one export leaves to spool: event lines, and the OTLP JSON of rejected spans.
#[derive(Default)]
pub struct Spooled {
    pub events: Vec<u8>,
    pub rejected: Vec<u8>,
}

/// Maps an export's spans; returns the accounting and the lines to spool.
pub fn map_export(
    req: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    mapping: &otlp::OtlpMapping,
) -> (TraceReport, Spooled) {
    let mut report = TraceReport::default();
    let mut out = Spooled::default();
    let mut ids: HashSet<String, foldhash::fast::RandomState> = HashSet::default();
    for (i, (rs, ss, span)) in otlp::spans(req).enumerate() {
        let position = i as u64 + 1;
        let outcome = match otlp::map_span(rs, span, mapping) {
            Mapped::Skipped => {
                report.skipped += 1;
                continue;
            }
            Mapped::Rejected(why) => Err(why),
            Mapped::Event(line) if line.len() > MAX_SPAN_BYTES => Err(format!(
                "the span's event is {} bytes, over the {MAX_SPAN_BYTES}-byte limit of one record",
                line.len()
            )),
            Mapped::Event(line) => crate::ingest::event_fields(line.as_bytes())
                .and_then(validate_event)
                .map(|e| e.event_id.into_owned())
                .map(|id| (id, line)),
        };
        report.read += 1;
        match outcome {
            Ok((id, line)) => {
                if !ids.insert(id) {
                    report.duplicates += 1;
                    continue;
                }
                report.accepted += 1;
                out.events.extend_from_slice(line.as_bytes());
                out.events.push(b'\n');
            }
            Err(reason) => {
                report.rejected += 1;
                if report.rejects.len() < MAX_LISTED_REJECTS {
                    report.rejects.push(Reject {
                        line: position,
                        reason,
                    });
                }
                out.rejected
                    .extend_from_slice(otlp::span_request_json(rs, ss, span).as_bytes());
                out.rejected.push(b'\n');
            }
        }
    }
    (report, out)
}

impl Intake {
    /// Takes one decoded `POST /v1/traces` body.
    pub async fn post_traces(&self, body: Vec<u8>, encoding: Encoding) -> Answer {
        let mapping = self.config.otlp.clone();
        let decode_and_map = move || {
            let req = match encoding {
                Encoding::Protobuf => otlp::decode_protobuf(&body),
                Encoding::Json => otlp::decode_json(&body),
            }?;
            Ok::<_, String>(map_export(&req, &mapping))
        };
        let mapped = tokio::task::spawn_blocking(decode_and_map)
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let (report, spooled) = match mapped {
            Ok(m) => m,
            Err(why) => {
                return self.body_error(
                    super::body::BodyError::Malformed(why),
                    "send an OTLP ExportTraceServiceRequest: Content-Type application/x-protobuf or application/json",
                );
            }
        };
        let partial = (report.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: report.rejected as i64,
            error_message: report
                .rejects
                .first()
                .map(|r| {
                    format!(
                        "{} GenAI spans rejected (kept in the lake's quarantine); span {}: {}",
                        report.rejected, r.line, r.reason
                    )
                })
                .unwrap_or_default(),
        });
        let mut body = serde_json::to_value(&report).expect("report serializes");
        if let Some(p) = &partial {
            body["partialSuccess"] = serde_json::json!({
                "rejectedSpans": p.rejected_spans.to_string(),
                "errorMessage": p.error_message,
            });
        }
        let parts = vec![
            (&self.spool, spooled.events),
            (&self.traces, spooled.rejected),
        ];
        let mut answer = self.spool_into(parts, body).await;
        if answer.status == 200 && encoding == Encoding::Protobuf {
            let response = ExportTraceServiceResponse {
                partial_success: partial,
            };
            answer.protobuf = Some(prost::Message::encode_to_vec(&response));
        }
        answer
    }
}
