//! Integration tests: `promptgate serve` on loopback, queried with a real HTTP client (hyper).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{Lake, bin, testdata};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A lake whose registry has route `support`: v1 then v2 as default (so v1 is the
/// last-known-good). The registry is `<lake>/registry`.
fn registry() -> Lake {
    let lake = Lake::new();
    for v in ["v1", "v2"] {
        lake.add_version("support", v, &format!("support-{v}.txt"), None);
        lake.ok(&[
            "registry",
            "set-default",
            "--route",
            "support",
            "--version",
            v,
        ]);
    }
    lake
}

/// A running `promptgate serve`, stopped on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(reg: &Path, token: Option<&str>) -> Server {
        Server::start_with(reg, token, &[])
    }
    fn start_with(reg: &Path, token: Option<&str>, flags: &[&str]) -> Server {
        let mut cmd = bin();
        cmd.arg("--registry")
            .arg(reg)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match token {
            Some(t) => cmd.env("PROMPTGATE_TOKEN", t),
            None => cmd.env_remove("PROMPTGATE_TOKEN"),
        };
        let mut child = cmd.spawn().unwrap();
        let addr = common::listening_addr(&common::serve_banner(&mut child));
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }
    fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn request(c: &HttpClient, method: &str, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = hyper::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = c.request(req.body(Empty::new()).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(ct.as_deref(), Some("application/json"), "{url}: {body:?}");
    (status, serde_json::from_slice(&body).unwrap())
}

async fn get(c: &HttpClient, url: &str) -> (u16, Value) {
    request(c, "GET", url, None).await
}

fn cli_resolve(reg: &Path, unit: &str) -> Value {
    let out = bin()
        .arg("--registry")
        .arg(reg)
        .args([
            "resolve", "--route", "support", "--env", "prod", "--unit", unit, "--tier", "pro",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn endpoints_answer_what_the_cli_answers() {
    let lake = registry();
    let reg = lake.lake.join("registry");
    let out = bin()
        .arg("--registry")
        .arg(&reg)
        .args([
            "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v1", "--plan",
            "5,50,100",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Server::start(&reg, None);
    let c = client();
    for u in ["u1", "user 2", "ü-3"] {
        let url = format!(
            "{}/v1/resolve?route=support&env=prod&tier=pro&unit={}",
            s.base,
            url_encode(u)
        );
        let (status, body) = get(&c, &url).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, cli_resolve(&reg, u));
    }
    let (status, body) = get(&c, &format!("{}/v1/prompts/support/v1", s.base)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["text"],
        std::fs::read_to_string(testdata("prompts/support-v1.txt")).unwrap()
    );
    assert_eq!(
        body["prompt_sha"],
        "10cd1a73c507373dddc51af9c6669c24ab02184d95a40da9269cb26e150f4291"
    );
    let (status, body) = get(&c, &format!("{}/v1/registry", s.base)).await;
    assert_eq!(status, 200);
    assert_eq!(body["routes"]["support"]["default"], "v2");
    let (status, body) = get(&c, &format!("{}/healthz", s.base)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_kill_is_seen_on_the_very_next_request() {
    let lake = registry();
    let reg = lake.lake.join("registry");
    let s = Server::start(&reg, None);
    let c = client();
    let url = format!("{}/v1/resolve?route=support&env=prod&unit=u1", s.base);
    for _ in 0..50 {
        let (_, body) = get(&c, &url).await;
        assert_eq!(
            (body["arm"].as_str(), body["version"].as_str()),
            (Some("default"), Some("v2"))
        );
    }
    let out = bin()
        .arg("--registry")
        .arg(&reg)
        .args(["registry", "kill", "--route", "support", "--why", "pager"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (_, body) = get(&c, &url).await;
    assert_eq!(
        (body["arm"].as_str(), body["version"].as_str()),
        (Some("killed"), Some("v1"))
    );
    // And lifted on the very next request too.
    let out = bin()
        .arg("--registry")
        .arg(&reg)
        .args([
            "registry",
            "set-default",
            "--route",
            "support",
            "--version",
            "v1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (_, body) = get(&c, &url).await;
    assert_eq!(
        (body["arm"].as_str(), body["version"].as_str()),
        (Some("default"), Some("v1"))
    );
}

#[tokio::test]
async fn a_token_guards_every_endpoint() {
    let lake = registry();
    let reg = lake.lake.join("registry");
    let s = Server::start(&reg, Some("s3cret-token"));
    let c = client();
    for path in [
        "/healthz",
        "/v1/registry",
        "/v1/resolve?route=support&env=prod&unit=u",
        "/nope",
    ] {
        let url = format!("{}{path}", s.base);
        let (status, body) = request(&c, "GET", &url, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("missing bearer token")
        );
        let (status, _) = request(&c, "GET", &url, Some("wrong")).await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, body) = request(
        &c,
        "GET",
        &format!("{}/v1/resolve?route=support&env=prod&unit=u", s.base),
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], "v2");
    // The scheme is case-insensitive (RFC 9110), and more than one space may follow it; the
    // token itself must match exactly.
    for (value, expected) in [
        ("bearer s3cret-token", 200),
        ("BEARER  s3cret-token", 200),
        ("bearer S3CRET-TOKEN", 401),
        ("Basic s3cret-token", 401),
    ] {
        let req = hyper::Request::builder()
            .uri(format!("{}/v1/registry", s.base))
            .header("authorization", value)
            .body(Empty::new())
            .unwrap();
        let status = c.request(req).await.unwrap().status().as_u16();
        assert_eq!(status, expected, "{value}");
    }

    // Any address but loopback needs a token; the server refuses to start without one.
    let out = bin()
        .arg("--registry")
        .arg(&reg)
        .env_remove("PROMPTGATE_TOKEN")
        .args(["serve", "--addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve on 0.0.0.0:0 without a bearer token"),
        "{err}"
    );
    assert!(err.contains("hint: set PROMPTGATE_TOKEN"), "{err}");
    let out = bin()
        .arg("--registry")
        .arg(&reg)
        .args(["serve", "--addr", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Sends raw bytes and returns the status line of the answer.
fn raw(addr: &str, bytes: &[u8]) -> String {
    raw_answer(addr, bytes)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Sends raw bytes and returns the whole answer (until the server closes).
fn raw_answer(addr: &str, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The JSON body of a raw answer, asserting its status and content type.
fn json_answer(answer: &str, status: u16) -> Value {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_with_a_json_error() {
    let lake = registry();
    let reg = lake.lake.join("registry");
    let s = Server::start(&reg, None);
    let c = client();
    for (path, status, says) in [
        (
            "/v1/resolve?route=support&env=prod",
            400,
            "missing parameter \"unit\"",
        ),
        ("/v1/resolve", 400, "missing parameter"),
        (
            "/v1/resolve?route=support&env=prod&unit=u&colour=red",
            400,
            "unknown parameter",
        ),
        (
            "/v1/resolve?route=support&env=prod&unit=u&unit=v",
            400,
            "given twice",
        ),
        (
            "/v1/resolve?route=%ff&env=prod&unit=u",
            400,
            "percent-encoded UTF-8",
        ),
        (
            "/v1/resolve?route=sup%zzport&env=prod&unit=u",
            400,
            "percent-encoded UTF-8",
        ),
        ("/v1/resolve?route=support&env=&unit=u", 400, "is empty"),
        (
            "/v1/resolve?route=nope&env=prod&unit=u",
            404,
            "unknown route",
        ),
        ("/v1/prompts/support/v9", 404, "not registered"),
        ("/v1/prompts/nope/v1", 404, "unknown route"),
        ("/v1/prompts/support", 404, "no such endpoint"),
        ("/nope", 404, "no such endpoint"),
        // The names the CLI refuses, HTTP refuses too (one check for both).
        (
            "/v1/resolve?route=support&env=prod&unit=u&tier=a%0Ab",
            400,
            "tier \"a\\nb\" contains a control character",
        ),
        (
            &format!("/v1/resolve?route=support&env={}&unit=u", "e".repeat(300)),
            400,
            "is longer than 200 bytes",
        ),
        (
            "/v1/resolve?route=support&env=prod&unit=u%09",
            400,
            "contains a control character",
        ),
        (
            "/v1/resolve?route=%20support&env=prod&unit=u",
            400,
            "leading or trailing whitespace",
        ),
        ("/v1/prompts/support/v1%0A", 400, "control character"),
    ] {
        let (got, body) = get(&c, &format!("{}{path}", s.base)).await;
        assert_eq!(got, status, "{path}: {body}");
        let e = body["error"].as_str().unwrap();
        assert!(e.contains(says), "{path}: {e}");
    }
    let (got, body) = request(&c, "POST", &format!("{}/v1/resolve", s.base), None).await;
    assert_eq!(got, 405);
    assert!(body["error"].is_string());
    // Not HTTP at all, or an absurd request line: a 4xx, and the server carries on.
    assert!(raw(s.addr(), b"HELLO\r\n\r\n").starts_with("HTTP/1.1 4"));
    let long = format!(
        "GET /v1/resolve?route={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let line = raw(s.addr(), long.as_bytes());
    assert!(line.is_empty() || line.starts_with("HTTP/1.1 4"), "{line}");
    // hyper's own answers to what it cannot parse carry the same JSON error body.
    let long_uri = format!(
        "GET /v1/resolve?route={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let e = json_answer(&raw_answer(s.addr(), long_uri.as_bytes()), 414);
    assert!(e["error"].as_str().unwrap().contains("URI"), "{e}");
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..150)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    let e = json_answer(&raw_answer(s.addr(), many_headers.as_bytes()), 431);
    assert!(e["error"].as_str().unwrap().contains("header"), "{e}");
    let e = json_answer(&raw_answer(s.addr(), b"HELLO\r\n\r\n"), 400);
    assert!(e["hint"].is_string(), "{e}");
    let (got, _) = get(&c, &format!("{}/healthz", s.base)).await;
    assert_eq!(got, 200);
}

/// The CLI refuses what HTTP refuses, with exit 2.
#[test]
fn the_cli_refuses_the_same_names() {
    let lake = registry();
    let long = "e".repeat(300);
    for (env, tier, unit, says) in [
        ("prod", "a\nb", "u", "control character"),
        (long.as_str(), "pro", "u", "longer than 200 bytes"),
        ("prod", "pro", "u\t", "control character"),
    ] {
        let out = bin()
            .arg("--lake")
            .arg(&lake.lake)
            .args(["resolve", "--route", "support", "--env", env])
            .args(["--tier", tier, "--unit", unit])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{env:?} {tier:?} {unit:?}: {err}"
        );
        assert!(err.contains(says), "{err}");
    }
}

/// Reads until the server closes the connection; how long that took (None: still open when
/// `within` ran out).
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(start.elapsed());
            }
            Err(_) => return None,
        }
        if start.elapsed() > within {
            return None;
        }
    }
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_connections_over_the_cap_are_refused() {
    use std::net::TcpStream;
    let lake = registry();
    let reg = lake.lake.join("registry");
    let s = Server::start_with(
        &reg,
        None,
        &["--header-timeout", "3", "--max-connections", "8"],
    );
    // Eight connections take every slot: four idle, three with half a request, one sending its
    // headers a byte at a time (it never stops sending, and is cut off all the same).
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..7 {
        let mut c = TcpStream::connect(s.addr()).unwrap();
        if i >= 4 {
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        held.push(c);
    }
    let dripping = TcpStream::connect(s.addr()).unwrap();
    let mut drip = dripping.try_clone().unwrap();
    let dripper = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut sent = 0usize;
        let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        while start.elapsed() < Duration::from_secs(20) {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if drip.write_all(&[byte]).is_err() {
                return Some(start.elapsed());
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    });
    held.push(dripping);
    std::thread::sleep(Duration::from_millis(300));
    // A ninth is answered 503 with the JSON error, and closed.
    let refused = raw_answer(s.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let e = json_answer(&refused, 503);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("too many connections"),
        "{e}"
    );
    assert!(refused.to_ascii_lowercase().contains("retry-after: 1"));
    // Every held connection is closed by the server after about three seconds (never by the
    // client's 15 s), the dripping one too.
    for (i, c) in held.iter_mut().enumerate() {
        let took = closed_within(c, Duration::from_secs(15));
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(10)),
            "connection {i} still open: {took:?}"
        );
    }
    let dripped = dripper.join().unwrap();
    assert!(dripped.is_some(), "the dripping client was never cut off");
    // The slots are free again.
    let ok = raw_answer(
        s.addr(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(json_answer(&ok, 200)["status"], "ok");
}

#[test]
fn sigterm_stops_within_the_drain_deadline_despite_a_half_sent_request() {
    use std::net::TcpStream;
    let lake = registry();
    let reg = lake.lake.join("registry");
    let mut child = bin()
        .arg("--registry")
        .arg(&reg)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(["--header-timeout", "60", "--drain-timeout", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut banner).unwrap();
    let addr = common::listening_addr(&banner);
    // One connection holds half a request; another is an idle keep-alive connection that
    // already got an answer.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /v1/resolve?route=support&env=prod&unit=u1 HTTP/1.1\r\nHost:")
        .unwrap();
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    std::thread::sleep(Duration::from_millis(200));
    let status = common::signal_and_wait(
        &mut child,
        libc::SIGTERM,
        Duration::from_secs(10),
        "serve stops after SIGTERM within its 1 s drain deadline",
    );
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    stderr.read_to_string(&mut log).unwrap();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    // Both connections are closed, and nobody listens any more.
    assert!(closed_within(&mut half, Duration::from_secs(5)).is_some());
    assert!(closed_within(&mut idle, Duration::from_secs(5)).is_some());
    assert!(TcpStream::connect(&addr).is_err());
}

#[tokio::test]
async fn health_and_every_endpoint_say_503_while_the_registry_cannot_be_read() {
    let lake = registry();
    let reg = lake.lake.join("registry");
    let s = Server::start(&reg, None);
    let c = client();
    let resolve = format!("{}/v1/resolve?route=support&env=prod&unit=u1", s.base);
    let endpoints = [
        format!("{}/healthz", s.base),
        resolve.clone(),
        format!("{}/v1/registry", s.base),
        format!("{}/v1/prompts/support/v1", s.base),
    ];
    let all_are = |want: u16, says: &'static str| {
        let c = &c;
        let endpoints = &endpoints;
        async move {
            for url in endpoints {
                let (status, body) = get(c, url).await;
                assert_eq!(status, want, "{url}: {body}");
                if want != 200 {
                    let e = body["error"].as_str().unwrap();
                    assert!(e.contains(says), "{url}: {e}");
                    assert!(body["hint"].is_string(), "{url}: {body}");
                }
            }
        }
    };
    all_are(200, "").await;
    let (_, health) = get(&c, &endpoints[0]).await;
    assert_eq!(health["routes"], 1);
    // A damaged state file: 503 everywhere, health included; back to 200 once it is repaired.
    let state = reg.join("state.json");
    let good = std::fs::read(&state).unwrap();
    std::fs::write(&state, b"{ not json").unwrap();
    all_are(503, "the registry cannot be read").await;
    // Liveness is not readiness: the process still answers.
    let (status, body) = get(&c, &format!("{}/livez", s.base)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alive")));
    std::fs::write(&state, &good).unwrap();
    all_are(200, "").await;
    // The registry moved away: not an empty registry, a missing one.
    let moved = lake.lake.join("registry-moved");
    std::fs::rename(&reg, &moved).unwrap();
    all_are(503, "has no state any more").await;
    std::fs::rename(&moved, &reg).unwrap();
    all_are(200, "").await;
    // A prompt text gone from prompts/: a 500 that names the version, not the server's path.
    let v1 = "10cd1a73c507373dddc51af9c6669c24ab02184d95a40da9269cb26e150f4291";
    std::fs::remove_file(reg.join("prompts").join(v1)).unwrap();
    let (status, body) = get(&c, &endpoints[3]).await;
    assert_eq!(status, 500, "{body}");
    let e = body["error"].as_str().unwrap();
    assert!(e.contains("\"v1\"") && e.contains("missing"), "{e}");
    assert!(
        !body.to_string().contains(lake.lake.to_str().unwrap()),
        "{body}"
    );
    let (status, _) = get(&c, &resolve).await;
    assert_eq!(status, 200);
}
