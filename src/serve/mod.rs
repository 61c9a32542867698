//! The HTTP adapter over the registry (axum on tokio): handlers parse the request, call the same
//! library functions as the CLI ([`crate::registry::resolve`], [`Registry::load`]) and render
//! JSON. No logic of their own, so `promptgate resolve` and `GET /v1/resolve` cannot disagree.
//!
//! Routes: `GET /v1/resolve?route=&env=&tier=&unit=`, `GET /v1/prompts/{route}/{version}`,
//! `GET /v1/registry`, `GET /healthz` (readiness: the registry can be read), `GET /livez`
//! (liveness: the process answers). Every error is a 4xx/5xx with a JSON body
//! `{"error": ..., "hint": ...}`.
//!
//! **No stale state.** Each request reads `state.json` (a few KB, from the page cache) and
//! reuses the parsed state only when the bytes are identical to the last ones parsed, so a
//! change made by the CLI (a kill) is seen by the very next request. Writers replace the file
//! by rename, so a read sees one whole state, old or new.
//!
//! **Health tells the truth.** A registry that cannot be read (a damaged `state.json`, a
//! registry that was there and is gone, a store that does not answer) is a `503` with the
//! reason on `/healthz` and on every endpoint that needs the registry; the server never answers
//! from an older state than the one on disk, so a load balancer takes it out of rotation
//! instead of letting it serve what may be a killed version.
//!
//! With `--intake`, `POST /v1/events` and `POST /v1/traces` take events into the lake through
//! [`crate::intake`]; `/healthz` then also says whether the intake's spool takes posts.
//!
//! Connections, timeouts and shutdown: [`listen`].

pub mod listen;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::intake::{self, Intake};
use crate::registry::state::check_name;
use crate::registry::{self, Registry, ResolveRequest, State};

/// A line on the server's log (stderr), prefixed `promptgate serve: `. A log nobody reads any
/// more (a closed pipe) never stops the server, as `eprintln!` would by panicking.
pub fn log(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "promptgate serve: {message}");
}

/// What the server needs: the registry it reads and the bearer token requests must carry.
#[derive(Clone)]
pub struct ServeState {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    token: Option<String>,
    cache: Mutex<Option<(Vec<u8>, Arc<State>)>>,
    /// Whether a state was ever read: from then on, no state is a registry gone, not a new one.
    seen: AtomicBool,
    /// With `--intake`: the spool and committer that take events into the lake.
    intake: Option<Arc<Intake>>,
}

impl ServeState {
    pub fn new(registry: Registry, token: Option<String>, intake: Option<Arc<Intake>>) -> Self {
        ServeState {
            inner: Arc::new(Inner {
                registry,
                token,
                cache: Mutex::new(None),
                seen: AtomicBool::new(false),
                intake,
            }),
        }
    }

    /// The registry's state as of now (see the module docs on why this is never stale).
    pub fn current(&self) -> Result<Arc<State>> {
        let path = self.inner.registry.state_path();
        let Some(bytes) = self.inner.registry.state_bytes()? else {
            if self.inner.seen.load(Ordering::Relaxed) {
                return Err(Error::runtime(format!(
                    "the registry at {} has no state any more (it had one while this server ran)",
                    self.inner.registry.location()
                ))
                .with_hint("was the registry moved or deleted? restore it, or restart serve with --registry pointing at it"));
            }
            return Ok(Arc::new(State::empty()));
        };
        self.inner.seen.store(true, Ordering::Relaxed);
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, state)) = cache.as_ref()
            && *cached == bytes
        {
            return Ok(state.clone());
        }
        let state = Arc::new(registry::parse_state(&bytes, &path)?);
        *cache = Some((bytes, state.clone()));
        Ok(state)
    }
}

/// The router with every route, the JSON fallbacks and (with a token) the bearer check.
pub fn router(state: ServeState) -> Router {
    let token = state.inner.token.is_some();
    let r = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/v1/resolve", get(resolve))
        .route("/v1/prompts/{route}/{version}", get(prompt))
        .route("/v1/registry", get(registry_state));
    let r = match state.inner.intake.is_some() {
        true => r
            .route("/v1/events", post(post_events))
            .route("/v1/traces", post(post_traces)),
        false => r
            .route("/v1/events", post(no_intake))
            .route("/v1/traces", post(no_intake)),
    };
    let r = r
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    let r = if token {
        r.layer(middleware::from_fn_with_state(state.clone(), require_token))
    } else {
        r
    };
    r.with_state(state)
}

/// An error as a JSON response.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    error: String,
    hint: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            hint: None,
        }
    }
    fn hint(mut self, hint: &str) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e.kind {
            ErrorKind::Usage => StatusCode::BAD_REQUEST,
            ErrorKind::Input => StatusCode::NOT_FOUND,
            ErrorKind::Query | ErrorKind::Runtime => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            error: e.message,
            hint: e.hint,
        }
    }
}

/// The registry cannot be read: every endpoint that needs it answers 503 with the reason.
fn unavailable(e: Error) -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error: format!("the registry cannot be read: {}", e.message),
        hint: e.hint,
    }
}

impl ServeState {
    /// [`ServeState::current`] for a handler: a registry that cannot be read is a 503.
    fn registry(&self) -> Result<Arc<State>, ApiError> {
        self.current().map_err(unavailable)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            hint: Option<String>,
        }
        let body = Body {
            error: self.error,
            hint: self.hint,
        };
        (self.status, json(&body)).into_response()
    }
}

/// A JSON body with the right content type and no caching (answers change with the registry).
fn json<T: Serialize>(value: &T) -> Response {
    let body = serde_json::to_vec(value).expect("response serializes");
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn require_token(
    AxState(state): AxState<ServeState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let expected = state.inner.token.as_deref().unwrap_or_default();
    // RFC 9110 §11.1: the scheme is case-insensitive, and one or more spaces follow it.
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start_matches(' '));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        return next.run(request).await;
    }
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        if given.is_some() {
            "wrong bearer token"
        } else {
            "missing bearer token"
        },
    )
    .hint("send `Authorization: Bearer <PROMPTGATE_TOKEN>`")
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 200 while the process serves: liveness, which a registry that cannot be read does not
/// change (restarting would not repair it). Readiness is `/healthz`.
async fn livez() -> Response {
    json(&serde_json::json!({"status": "alive"}))
}

/// Readiness: 200 with the registry's revision when it can be read, else 503 with the reason.
async fn healthz(AxState(state): AxState<ServeState>) -> Response {
    let s = match state.registry() {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let mut body = serde_json::json!({
        "status": "ok",
        "revision": s.revision,
        "routes": s.routes.len(),
    });
    if let Some(intake) = &state.inner.intake {
        let status = intake.status();
        let full = !status.accepting;
        body["intake"] = serde_json::to_value(&status).expect("status serializes");
        if full {
            body["status"] = "intake spool full".into();
            let mut r = json(&body);
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
    }
    json(&body)
}

/// Seconds a client has to send a whole request body once its head arrived.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a body of at most `limit` bytes (as sent, and as inflated when it is gzip) within
/// [`BODY_TIMEOUT`].
async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    intake: &Intake,
) -> Result<Vec<u8>, intake::Answer> {
    use futures::StreamExt;
    let limit = intake.config().max_body_bytes;
    let too_large = |what: String| intake.body_error(intake::body::BodyError::TooLarge(what), "");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(format!(
            "the body is {} bytes, over the limit of {limit}",
            declared.unwrap_or(0)
        )));
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" || e == "x-gzip" => true,
        Some(e) => {
            return Err(intake::Answer::error(
                415,
                format!("Content-Encoding {e:?} is not supported"),
                "send the body as is, or gzip it with Content-Encoding: gzip",
            ));
        }
    };
    let read = async {
        let mut out = Vec::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                intake.body_error(
                    intake::body::BodyError::Malformed(format!("the body could not be read: {e}")),
                    "send the whole body, with a correct Content-Length",
                )
            })?;
            if out.len() + chunk.len() > limit {
                return Err(too_large(format!(
                    "the body is over the limit of {limit} bytes"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    };
    let raw = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(intake::Answer::error(
                408,
                format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
                "nothing of this request was kept; send it again",
            ));
        }
    };
    if gzip {
        intake::body::gunzip(&raw, limit)
            .map_err(|e| intake.body_error(e, "send valid gzip with Content-Encoding: gzip"))
    } else {
        Ok(raw)
    }
}

fn answer(a: intake::Answer) -> Response {
    let mut r = match a.protobuf {
        Some(bytes) => {
            let mut r = (StatusCode::OK, bytes).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            );
            r
        }
        None => json(&a.body),
    };
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(secs) = a.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// Reads the body of a post to the intake and hands it to `take`.
async fn intake_post<F, Fut>(
    state: ServeState,
    headers: HeaderMap,
    body: axum::body::Body,
    take: F,
) -> Response
where
    F: FnOnce(Arc<Intake>, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = intake::Answer>,
{
    let Some(intake) = state.inner.intake.clone() else {
        return no_intake().await.into_response();
    };
    match read_body(&headers, body, &intake).await {
        Ok(bytes) => answer(take(intake, bytes).await),
        Err(a) => answer(a),
    }
}

async fn post_events(
    AxState(state): AxState<ServeState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    intake_post(state, headers, body, |intake, bytes| async move {
        intake.post_events(bytes).await
    })
    .await
}

async fn post_traces(
    AxState(state): AxState<ServeState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let encoding = match content_type.as_deref() {
        Some("application/x-protobuf" | "application/protobuf") => {
            intake::traces::Encoding::Protobuf
        }
        Some("application/json") | None => intake::traces::Encoding::Json,
        Some(other) => {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type {other:?} is not an OTLP/HTTP encoding"),
            )
            .hint("send application/x-protobuf or application/json")
            .into_response();
        }
    };
    intake_post(state, headers, body, move |intake, bytes| async move {
        intake.post_traces(bytes, encoding).await
    })
    .await
}

async fn no_intake() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "this server does not take events",
    )
    .hint("start it with `promptgate serve --intake` to take POST /v1/events and /v1/traces into the lake")
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint").hint(
        "endpoints: GET /v1/resolve, /v1/prompts/{route}/{version}, /v1/registry, /healthz, /livez; with --intake, POST /v1/events and /v1/traces",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        .hint("every endpoint answers GET, but /v1/events and /v1/traces, which take POST")
}

const RESOLVE_HINT: &str = "GET /v1/resolve?route=R&env=E&unit=U[&tier=T]";

/// Parses `route`, `env`, `unit` (required) and `tier` (optional): each at most once, no
/// other parameter, valid percent-encoded UTF-8.
fn resolve_params(query: Option<&str>) -> Result<[Option<String>; 4], ApiError> {
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, msg).hint(RESOLVE_HINT);
    let mut out: [Option<String>; 4] = Default::default();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k).ok_or_else(|| {
            bad(format!(
                "parameter name {k:?} is not valid percent-encoded UTF-8"
            ))
        })?;
        let slot = match k.as_str() {
            "route" => 0,
            "env" => 1,
            "tier" => 2,
            "unit" => 3,
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        };
        let v = decode(v).ok_or_else(|| {
            bad(format!(
                "parameter {k:?} is not valid percent-encoded UTF-8"
            ))
        })?;
        if v.is_empty() {
            return Err(bad(format!("parameter {k:?} is empty")));
        }
        if out[slot].replace(v).is_some() {
            return Err(bad(format!("parameter {k:?} is given twice")));
        }
    }
    for (i, name) in ["route", "env", "", "unit"].iter().enumerate() {
        if !name.is_empty() && out[i].is_none() {
            return Err(bad(format!("missing parameter {name:?}")));
        }
    }
    Ok(out)
}

/// Percent-decoding (`+` is a space, as in forms); `None` when malformed or not UTF-8.
fn decode(s: &str) -> Option<String> {
    String::from_utf8(percent_decode(s)?).ok()
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

async fn resolve(AxState(state): AxState<ServeState>, RawQuery(q): RawQuery) -> Response {
    let run = || -> Result<Response, ApiError> {
        let [route, env, tier, unit] = resolve_params(q.as_deref())?;
        let req = ResolveRequest {
            route: route.as_deref().unwrap_or_default(),
            env: env.as_deref().unwrap_or_default(),
            tier: tier.as_deref(),
            unit: unit.as_deref().unwrap_or_default(),
        };
        req.check().map_err(|e| {
            let e = ApiError::from(e);
            match e.hint {
                Some(_) => e,
                None => e.hint(RESOLVE_HINT),
            }
        })?;
        let current = state.registry()?;
        Ok(json(&registry::resolve(&current, &req)?))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

async fn prompt(
    AxState(state): AxState<ServeState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let run = || -> Result<Response, ApiError> {
        let Path((route, version)) = path.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, e.body_text())
                .hint("GET /v1/prompts/{route}/{version}")
        })?;
        check_name("route", &route)?;
        check_name("version", &version)?;
        let current = state.registry()?;
        let r = current.route(&route)?;
        let v = r.require_version(&route, &version)?;
        let text = state.inner.registry.prompt_text(&v.sha256).map_err(|e| {
            // The operator gets the path; the client only which version is missing.
            log(&e.message);
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the text of version {version:?} of route {route:?} (sha256 {}) is missing from the registry",
                    v.sha256
                ),
            )
            .hint("restore the registry's prompts/ from its copy (git, or the store's versioning); the server's log names the file")
        })?;
        Ok(json(&serde_json::json!({
            "route": route,
            "version": version,
            "prompt_sha": v.sha256,
            "bytes": v.bytes,
            "added_at": v.added_at,
            "text": text,
        })))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

async fn registry_state(AxState(state): AxState<ServeState>) -> Response {
    match state.registry() {
        Ok(s) => json(&*s),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_strict() {
        let ok = resolve_params(Some("route=a%20b&env=prod&unit=u+1")).unwrap();
        assert_eq!(ok[0].as_deref(), Some("a b"));
        assert_eq!(ok[2], None);
        assert_eq!(ok[3].as_deref(), Some("u 1"));
        for bad in [
            "route=a&env=p",
            "route=a&env=p&unit=u&unit=v",
            "route=a&env=p&unit=u&color=red",
            "route=%ff&env=p&unit=u",
            "route=%zz&env=p&unit=u",
            "route=&env=p&unit=u",
        ] {
            let e = resolve_params(Some(bad)).err().unwrap();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
