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
