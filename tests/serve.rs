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
        let mut cmd = bin();
        cmd.arg("--registry")
            .arg(reg)
            .args(["serve", "--addr", "127.0.0.1:0"])
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
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
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
    let (got, _) = get(&c, &format!("{}/healthz", s.base)).await;
    assert_eq!(got, 200);
}
