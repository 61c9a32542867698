//! Benchmark of resolution: as a library call, and over HTTP on loopback beside a
//! constant-response endpoint of the same server (`/healthz`, the ceiling), while a kill switch
//! pulled mid-run must be seen by the very next request.
//!
//! ```sh
//! cargo bench --bench resolve          # release build; prints a Markdown table
//! BENCH_SECS=10 BENCH_CONNS=32 cargo bench --bench resolve
//! ```
//! Client and server share the machine: the numbers are for both on the same cores.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use promptgate::registry::{Registry, ResolveRequest, resolve};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_promptgate"))
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A registry like a busy production one: 3 versions, a default, an env default, two
/// overrides on another env, and an active rollout at 5% on `prod`.
fn setup(dir: &Path) -> std::path::PathBuf {
    let reg = dir.join("registry");
    let run = |args: &[&str]| {
        let out = bin()
            .arg("--registry")
            .arg(&reg)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for v in ["v1", "v2", "v3"] {
        let f = dir.join(format!("{v}.txt"));
        std::fs::write(&f, format!("prompt {v}\n")).unwrap();
        run(&[
            "registry",
            "add",
            "--route",
            "support",
            "--version",
            v,
            "--file",
            f.to_str().unwrap(),
        ]);
    }
    run(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v1",
    ]);
    run(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v1",
        "--env",
        "staging",
    ]);
    run(&[
        "registry",
        "override",
        "--route",
        "support",
        "--env",
        "eu",
        "--version",
        "v3",
    ]);
    run(&[
        "registry",
        "override",
        "--route",
        "support",
        "--env",
        "eu",
        "--tier",
        "pro",
        "--version",
        "v1",
    ]);
    run(&[
        "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v2", "--plan",
        "5,100",
    ]);
    reg
}

fn library(reg: &Path) -> (f64, f64) {
    let state = Registry::new(reg).load().unwrap();
    let units: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let n = env_num("BENCH_RESOLVES", 5_000_000) as usize;
    let mut canary = 0u64;
    let t = Instant::now();
    for i in 0..n {
        let req = ResolveRequest {
            route: "support",
            env: "prod",
            tier: Some("pro"),
            unit: &units[i % units.len()],
        };
        let r = resolve(&state, std::hint::black_box(&req)).unwrap();
        canary += u64::from(r.arm == promptgate::registry::ResolvedArm::Canary);
    }
    let secs = t.elapsed().as_secs_f64();
    (n as f64 / secs, canary as f64 / n as f64)
}

struct Load {
    requests: u64,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

/// `conns` keep-alive connections, each sending GETs of `path(i)` back to back for `secs`.
async fn load(addr: &str, conns: usize, secs: f64, path: fn(u64) -> String) -> Load {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let addr = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut i = c as u64 * 1_000_003;
            while Instant::now() < deadline {
                let req = hyper::Request::get(path(i))
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if !ok {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
                lat.push(t.elapsed().as_micros() as u32);
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let q = |p: f64| u64::from(all[((all.len() as f64 * p) as usize).min(all.len() - 1)]);
    Load {
        requests: all.len() as u64,
        secs,
        p50_us: q(0.50),
        p99_us: q(0.99),
        errors,
    }
}

async fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "bench")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let body = sender
        .send_request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    serde_json::from_slice(&body.to_bytes()).unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let dir = tempfile::tempdir().unwrap();
    let reg = setup(dir.path());

    let (per_sec, share) = library(&reg);
    println!(
        "library resolve: {per_sec:.0} resolves/s (1 thread; canary share {share:.4}, plan 0.05)"
    );

    let mut server = bin()
        .arg("--registry")
        .arg(&reg)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stderr.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("server address")
        .to_string();

    let conns = env_num("BENCH_CONNS", 32) as usize;
    let secs = env_num("BENCH_SECS", 8) as f64;
    let client_threads = env_num("BENCH_CLIENT_THREADS", 1) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm-up.
        load(&addr, conns, 1.0, |_| "/healthz".into()).await;
        let ceiling = load(&addr, conns, secs, |_| "/healthz".into()).await;
        let resolve_path =
            |i: u64| format!("/v1/resolve?route=support&env=prod&tier=pro&unit=user-{}", i % 100_000);
        // The kill switch is pulled halfway through the resolve run, by the CLI, and the very
        // next request must see it.
        let kill_addr = addr.clone();
        let kill_reg = reg.clone();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(secs / 2.0)).await;
            let before = get_json(&kill_addr, "/v1/resolve?route=support&env=prod&unit=u1").await;
            let out = tokio::task::spawn_blocking(move || {
                bin()
                    .arg("--registry")
                    .arg(&kill_reg)
                    .args(["registry", "kill", "--route", "support", "--env", "prod", "--why", "bench"])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            assert!(out.status.success());
            let after = get_json(&kill_addr, "/v1/resolve?route=support&env=prod&unit=u1").await;
            (before["arm"].clone(), after["arm"].clone(), after["version"].clone())
        });
        let resolved = load(&addr, conns, secs, resolve_path).await;
        let (before, after, version) = killer.await.unwrap();
        println!(
            "\n| endpoint | requests | req/s | p50 | p99 | errors |\n|---|---|---|---|---|---|"
        );
        for (name, l) in [("GET /healthz (constant response)", &ceiling), ("GET /v1/resolve", &resolved)] {
            println!(
                "| {name} | {} | {:.0} | {:.2} ms | {:.2} ms | {} |",
                l.requests,
                l.requests as f64 / l.secs,
                l.p50_us as f64 / 1000.0,
                l.p99_us as f64 / 1000.0,
                l.errors
            );
        }
        println!(
            "\nkill switch pulled mid-run: the next request answered arm {after} (version {version}); the one before, arm {before}"
        );
        assert_eq!(after, "killed", "the kill was not seen on the next request");
        println!(
            "({conns} keep-alive connections, client on {client_threads} thread(s), {secs} s per endpoint, server and client on the same {} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    });
    let _ = server.kill();
    let _ = server.wait();
}
