//! Set-up shared by the integration tests: a lake in a temporary directory, the real binary run
//! against it, and generated traffic whose arms follow `resolve` (as an application's would).
//! Each test crate uses the part it needs.
#![allow(dead_code)]

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output};

use promptgate::r#gen::{Regression, ResolvedTraffic, write_resolved_events};
use promptgate::registry::{Registry, ResolveRequest, now_us, resolve};

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_promptgate"))
}

/// The first line a spawned `promptgate serve` (stderr piped) writes: where it listens and
/// which registry it serves.
pub fn serve_banner(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stderr.take().expect("stderr piped"))
        .read_line(&mut line)
        .unwrap();
    line
}

/// Sends `signal` to our own `child` and waits for it to exit; fails the test, saying `what`
/// was expected, when it still runs after `within`.
pub fn signal_and_wait(
    child: &mut Child,
    signal: i32,
    within: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    // SAFETY: sends a signal to a child of this process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "still running after {within:?}: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The `host:port` in `serve`'s banner line.
pub fn listening_addr(banner: &str) -> String {
    banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_string()
}

/// A file of `testdata/`.
pub fn testdata(name: &str) -> String {
    format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A fresh lake at `<tempdir>/lake`, its registry in the lake, commands run as user `tester`.
pub struct Lake {
    pub dir: tempfile::TempDir,
    pub lake: PathBuf,
    batch: Cell<u64>,
}

impl Lake {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        Lake {
            dir,
            lake,
            batch: Cell::new(0),
        }
    }
    /// A path in the temporary directory, beside the lake.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn registry(&self) -> Registry {
        Registry::new(self.lake.join("registry"))
    }
    pub fn run(&self, args: &[&str]) -> Output {
        bin()
            .arg("--lake")
            .arg(&self.lake)
            .env_remove("PROMPTGATE_REGISTRY")
            .env("USER", "tester")
            .args(args)
            .output()
            .unwrap()
    }
    /// Runs, asserts the exit code (printing both streams when it differs); stdout and stderr.
    pub fn output(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.run(args);
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}\nstdout: {so}\nstderr: {se}"
        );
        (so, se)
    }
    /// Runs, asserts the exit code; stdout.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        self.output(args, code).0
    }
    pub fn ok(&self, args: &[&str]) -> String {
        self.expect(args, 0)
    }
    /// Runs, asserts the exit code; stderr.
    pub fn stderr(&self, args: &[&str], code: i32) -> String {
        self.output(args, code).1
    }
    /// Registers `version` of `route` from `testdata/prompts/<file>`, with a note when given.
    pub fn add_version(&self, route: &str, version: &str, file: &str, why: Option<&str>) {
        let path = testdata(&format!("prompts/{file}"));
        let mut args = vec![
            "registry",
            "add",
            "--route",
            route,
            "--version",
            version,
            "--file",
            &path,
        ];
        if let Some(why) = why {
            args.extend(["--why", why]);
        }
        self.ok(&args);
    }

    /// Generates `t` on route `support`, env `prod`: units `u0..u{units}`, timed inside the
    /// active rollout's current step (from its start to now), each unit on the version
    /// `resolve` gives it, v2 regressed as `t` says; ingests it into the lake.
    pub fn traffic(&self, t: Traffic<'_>) {
        let state = self.registry().load().unwrap();
        let step_start = state.routes["support"]
            .active_rollout("prod")
            .map(|r| r.step_started_us)
            .unwrap_or_else(now_us);
        while now_us() < step_start + 2_000 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let start_us = step_start + 1;
        let batch = self.batch.get();
        self.batch.set(batch + 1);
        let cfg = ResolvedTraffic {
            route: "support".into(),
            env: "prod".into(),
            units: t.units,
            events: t.units * t.events_per_unit.max(1),
            seed: 1000 + t.seed + batch,
            start_us,
            span_us: now_us() - start_us,
            regression: Regression {
                latency: t.canary_latency.unwrap_or(1.0),
                ..Regression::default()
            },
            regressed_version: Some("v2".into()),
            attributes: t
                .attributes
                .iter()
                .map(|(v, a)| (v.to_string(), a.to_string()))
                .collect(),
            sha_chars: 12,
            flagged_rate: 0.02,
        };
        let path = self.path(&format!("batch-{batch}.ndjson"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let canary_sha = t.canary_sha;
        write_resolved_events(
            &cfg,
            &mut |unit, tier| {
                let r = resolve(
                    &state,
                    &ResolveRequest {
                        route: "support",
                        env: "prod",
                        tier: Some(tier),
                        unit,
                    },
                )
                .map_err(|e| e.message)?;
                let sha = match canary_sha {
                    Some(s) if r.version == "v2" => s.to_string(),
                    _ => r.prompt_sha,
                };
                Ok((r.version, sha))
            },
            &mut file,
        )
        .unwrap();
        drop(file);
        self.ok(&["ingest", "--no-progress", path.to_str().unwrap()]);
    }
}

/// What the generated traffic of one batch looks like.
#[derive(Default)]
pub struct Traffic<'a> {
    pub units: u64,
    /// Events per unit (0 means 1).
    pub events_per_unit: u64,
    /// Latency multiplier of v2's events.
    pub canary_latency: Option<f64>,
    /// `attributes` per version.
    pub attributes: Vec<(&'a str, &'a str)>,
    /// Log this prompt_sha for v2 instead of the registry's.
    pub canary_sha: Option<&'a str>,
    /// Added to the generator's seed (batches of one lake differ by their number).
    pub seed: u64,
}

/// The Python the tests run DuckDB, delta-rs, moto and boto3 with: `PROMPTGATE_PYTHON`, which
/// `./dev test` sets to the project's virtual environment; `python3` when it is not set.
pub fn python() -> Command {
    Command::new(std::env::var_os("PROMPTGATE_PYTHON").unwrap_or_else(|| "python3".into()))
}

/// Fails the test, saying how to install them, when `modules` (an import list) are missing
/// from [`python`].
pub fn require_python(modules: &str) {
    let probe = python().args(["-c", &format!("import {modules}")]).output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "Python cannot import {modules}: run the tests with `./dev test`, which installs them into the project's environment (or point PROMPTGATE_PYTHON at a Python that has them)"
    );
}

/// Rows of the latest Delta version of `table` in the lake at `lake`, as the `deltalake` Python
/// package (delta-rs, a reader independent of promptgate's) counts them.
pub fn delta_rs_count(lake: &std::path::Path, table: &str) -> u64 {
    delta_rs_count_at(python(), lake.join(table).to_str().unwrap())
}

/// Rows of the latest Delta version of the table at `uri` (a path or a store's URL), counted
/// by the `deltalake` Python package run by `python3` (with the environment its store needs).
pub fn delta_rs_count_at(mut python3: Command, uri: &str) -> u64 {
    require_python("deltalake");
    let script = r#"
import sys
from deltalake import DeltaTable, QueryBuilder
dt = DeltaTable(sys.argv[1])
r = QueryBuilder().register("t", dt).execute("SELECT COUNT(*) AS n FROM t").read_all()
print(r.column("n")[0].as_py())
"#;
    let out = python3.args(["-c", script, uri]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Every file under `dir`, recursively (appended to `out`, in no particular order).
pub fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

/// An HTTP answer: status, headers (names lowercased) and body.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: status {}, body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request to `addr` on a fresh connection (closed after the answer), with
/// `headers` and `body`, and reads the whole answer.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) before reading all of a large body, and close.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpAnswer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[i + 2 + size + 2..];
    }
    out
}

/// A `promptgate serve --intake` on loopback for the lake `lake` (its registry in the lake),
/// killed on drop.
pub struct IntakeServer {
    pub child: Child,
    pub addr: String,
    /// The server's log after its banner (read all along: a pipe nobody reads would fill and
    /// block the server's writes to it).
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl IntakeServer {
    pub fn start(lake: &std::path::Path, env: &[(&str, &str)], flags: &[&str]) -> IntakeServer {
        let mut cmd = bin();
        cmd.arg("--lake")
            .arg(lake)
            .args(["serve", "--addr", "127.0.0.1:0", "--intake"])
            .args(flags)
            .env_remove("PROMPTGATE_TOKEN")
            .env_remove("PROMPTGATE_REGISTRY")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr piped"));
        let mut banner = String::new();
        stderr.read_line(&mut banner).unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        IntakeServer {
            addr: listening_addr(&banner),
            child,
            log,
        }
    }

    /// POSTs NDJSON (or any JSON) to /v1/events.
    pub fn post_events(&self, body: &str) -> HttpAnswer {
        http(
            &self.addr,
            "POST",
            "/v1/events",
            &[("content-type", "application/x-ndjson")],
            body.as_bytes(),
        )
    }

    /// Stops the server with SIGTERM (its last commit included) and checks it exits 0.
    pub fn stop(mut self) {
        let status = signal_and_wait(
            &mut self.child,
            libc::SIGTERM,
            std::time::Duration::from_secs(60),
            "serve --intake stops on SIGTERM after its last commit",
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        assert!(status.success(), "serve exited with {status}: {log}");
        assert!(
            !log.contains("did not finish"),
            "the last commit did not finish: {log}"
        );
    }

    /// Kills the server with SIGKILL: no last commit, no clean-up.
    pub fn kill(mut self) {
        let _ = signal_and_wait(
            &mut self.child,
            libc::SIGKILL,
            std::time::Duration::from_secs(10),
            "SIGKILL",
        );
    }
}

impl Drop for IntakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One NDJSON event line: route `support`, env `prod`, at `ts_ms`.
pub fn event_line(id: &str, ts_ms: i64, version: &str) -> String {
    serde_json::json!({
        "event_id": id, "ts": ts_ms, "route": "support", "env": "prod", "model": "m1",
        "tier": "free", "prompt_version": version, "duration_ms": 100 + ts_ms % 50,
        "tokens_in": 10, "tokens_out": 5, "status": "ok",
    })
    .to_string()
}
