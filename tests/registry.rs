//! Integration tests: the prompt registry and `resolve` through the real binary.

mod common;

use std::ops::Deref;
use std::path::PathBuf;

use common::{Lake, bin, testdata};
use serde_json::Value;

fn prompt(name: &str) -> String {
    testdata(&format!("prompts/{name}"))
}

/// `sha256sum testdata/prompts/support-v*.txt`
const SHA_V1: &str = "10cd1a73c507373dddc51af9c6669c24ab02184d95a40da9269cb26e150f4291";
const SHA_V2: &str = "bfad3dc3d0765ee9e0b02965e80437c7ccb4297671088f4fca74db696f000ea6";

struct Reg(Lake);

impl Deref for Reg {
    type Target = Lake;
    fn deref(&self) -> &Lake {
        &self.0
    }
}

impl Reg {
    fn new() -> Self {
        Reg(Lake::new())
    }
    fn dir(&self) -> PathBuf {
        self.lake.join("registry")
    }
    fn resolve(&self, env: &str, tier: Option<&str>, unit: &str) -> Value {
        let mut args = vec![
            "resolve", "--route", "support", "--env", env, "--unit", unit,
        ];
        if let Some(t) = tier {
            args.extend(["--tier", t]);
        }
        serde_json::from_str(&self.ok(&args)).unwrap()
    }
    fn state_bytes(&self) -> Vec<u8> {
        std::fs::read(self.dir().join("state.json")).unwrap_or_default()
    }
    fn history(&self, route: &str) -> Vec<Value> {
        serde_json::from_str(
            &self.ok(&["registry", "history", "--route", route, "--format", "json"]),
        )
        .unwrap()
    }
}

fn arm(v: &Value) -> (&str, &str) {
    (v["arm"].as_str().unwrap(), v["version"].as_str().unwrap())
}

#[test]
fn add_stores_text_by_sha256_and_versions_are_immutable() {
    let r = Reg::new();
    let out = r.ok(&[
        "registry",
        "add",
        "--route",
        "support",
        "--version",
        "v1",
        "--file",
        &prompt("support-v1.txt"),
        "--why",
        "first prompt",
    ]);
    assert!(out.contains(SHA_V1), "{out}");
    let text = std::fs::read(r.dir().join("prompts").join(SHA_V1)).unwrap();
    assert_eq!(text, std::fs::read(prompt("support-v1.txt")).unwrap());

    // Same content again: a no-op, exit 0, nothing written.
    let before = r.state_bytes();
    let out = r.ok(&[
        "registry",
        "add",
        "--route",
        "support",
        "--version",
        "v1",
        "--file",
        &prompt("support-v1.txt"),
    ]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(r.state_bytes(), before);

    // Other content under the same version: exit 1, one line naming it, nothing changed.
    let err = r.stderr(
        &[
            "registry",
            "add",
            "--route",
            "support",
            "--version",
            "v1",
            "--file",
            &prompt("support-v2.txt"),
        ],
        1,
    );
    assert!(
        err.starts_with("error: version \"v1\" of route \"support\" is already registered"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(r.state_bytes(), before);
    assert!(!r.dir().join("prompts").join(SHA_V2).exists());

    let show: Value =
        serde_json::from_str(&r.ok(&["registry", "show", "--format", "json"])).unwrap();
    assert_eq!(
        show["routes"]["support"]["versions"]["v1"]["sha256"],
        SHA_V1
    );
    let h = r.history("support");
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["action"], "add");
    assert_eq!(h[0]["actor"], "tester");
    assert_eq!(h[0]["why"], "first prompt");

    // The state is a file a person can read.
    let state = String::from_utf8(r.state_bytes()).unwrap();
    assert!(
        state.contains("\n    \"routes\"") || state.contains("\n  \"routes\""),
        "{state}"
    );
}

#[test]
fn unknown_route_or_version_is_one_line_exit_1_and_no_change() {
    let r = Reg::new();
    r.add_version("support", "v1", "support-v1.txt", None);
    r.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v1",
    ]);
    let before = r.state_bytes();
    for (args, names) in [
        (
            vec![
                "registry",
                "set-default",
                "--route",
                "nope",
                "--version",
                "v1",
            ],
            "\"nope\"",
        ),
        (
            vec![
                "registry",
                "set-default",
                "--route",
                "support",
                "--version",
                "v9",
            ],
            "\"v9\"",
        ),
        (
            vec![
                "registry",
                "override",
                "--route",
                "support",
                "--env",
                "prod",
                "--version",
                "v9",
            ],
            "\"v9\"",
        ),
        (
            vec![
                "registry", "override", "--route", "support", "--env", "prod", "--clear",
            ],
            "no override",
        ),
        (
            vec![
                "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v9",
            ],
            "\"v9\"",
        ),
        (
            vec![
                "resolve", "--route", "nope", "--env", "prod", "--unit", "u1",
            ],
            "\"nope\"",
        ),
    ] {
        let err = r.stderr(&args, 1);
        let first = err.lines().next().unwrap();
        assert!(
            first.starts_with("error: ") && first.contains(names),
            "{args:?}: {err}"
        );
        assert!(err.lines().count() <= 2, "{err}");
    }
    assert_eq!(r.state_bytes(), before);
    // A bad name is a usage error (2).
    r.stderr(
        &[
            "registry",
            "set-default",
            "--route",
            " support",
            "--version",
            "v1",
        ],
        2,
    );
    r.stderr(&["registry", "kill", "--route", "support"], 2); // --why is required
}

#[test]
fn precedence_kill_then_tier_override_then_env_override_then_rollout_then_default() {
    let r = Reg::new();
    r.add_version("support", "v1", "support-v1.txt", None);
    r.add_version("support", "v2", "support-v2.txt", None);
    r.add_version("support", "v3", "support-v3.txt", None);
    // No default yet: a clear error.
    let err = r.stderr(
        &[
            "resolve", "--route", "support", "--env", "prod", "--unit", "u1",
        ],
        1,
    );
    assert!(err.contains("no default version"), "{err}");

    r.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v1",
    ]);
    let v = r.resolve("prod", None, "u1");
    assert_eq!(arm(&v), ("default", "v1"));
    assert_eq!(v["prompt_sha"], SHA_V1);
    assert_eq!(v["tier"], "default");
    assert_eq!(v["route"], "support");
    assert_eq!(v["env"], "prod");
    assert!(v["reason"].as_str().unwrap().contains("route default"));

    // Env default beats the route default for that env only.
    r.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v2",
        "--env",
        "staging",
    ]);
    assert_eq!(arm(&r.resolve("staging", None, "u1")), ("default", "v2"));
    assert_eq!(arm(&r.resolve("prod", None, "u1")), ("default", "v1"));

    // Active rollout (100% of... a plan whose first step is 5%): units split by bucket.
    r.ok(&[
        "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v2", "--plan",
        "5,100",
    ]);
    let arms: Vec<(String, String)> = (0..200)
        .map(|u| {
            let v = r.resolve("prod", Some("pro"), &format!("user-{u}"));
            (
                v["arm"].as_str().unwrap().to_string(),
                v["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        arms.iter().any(|a| a.0 == "canary" && a.1 == "v2"),
        "{arms:?}"
    );
    assert!(arms.iter().any(|a| a.0 == "baseline" && a.1 == "v1"));
    assert!(arms.iter().all(|a| a.0 == "canary" || a.0 == "baseline"));
    let canary_unit = format!(
        "user-{}",
        arms.iter().position(|a| a.0 == "canary").unwrap()
    );

    // Env override beats the rollout; a tier override beats the env override.
    r.ok(&[
        "registry",
        "override",
        "--route",
        "support",
        "--env",
        "prod",
        "--version",
        "v3",
    ]);
    assert_eq!(
        arm(&r.resolve("prod", Some("pro"), &canary_unit)),
        ("override", "v3")
    );
    r.ok(&[
        "registry",
        "override",
        "--route",
        "support",
        "--env",
        "prod",
        "--tier",
        "enterprise",
        "--version",
        "v1",
    ]);
    let v = r.resolve("prod", Some("enterprise"), &canary_unit);
    assert_eq!(arm(&v), ("override", "v1"));
    assert!(v["reason"].as_str().unwrap().contains("tier override"));
    assert_eq!(
        arm(&r.resolve("prod", Some("pro"), &canary_unit)),
        ("override", "v3")
    );

    // Clearing the env override gives the rollout back its traffic.
    r.ok(&[
        "registry", "override", "--route", "support", "--env", "prod", "--clear",
    ]);
    assert_eq!(
        arm(&r.resolve("prod", Some("pro"), &canary_unit)),
        ("canary", "v2")
    );

    // The kill switch beats everything: the rollout ends, traffic on the last-known-good.
    let out = r.ok(&[
        "registry",
        "kill",
        "--route",
        "support",
        "--env",
        "prod",
        "--why",
        "bad answers",
    ]);
    assert!(
        out.contains("v2") && out.contains("last-known-good v1"),
        "{out}"
    );
    for tier in ["enterprise", "pro"] {
        let v = r.resolve("prod", Some(tier), &canary_unit);
        assert_eq!(arm(&v), ("killed", "v1"), "{tier}");
        assert!(v["reason"].as_str().unwrap().contains("bad answers"));
    }
    // Staging is not killed.
    assert_eq!(arm(&r.resolve("staging", None, "u1")), ("default", "v2"));

    // A later set-default lifts the kill and says so; the tier override is back in force.
    let out = r.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v1",
        "--env",
        "prod",
    ]);
    assert!(out.contains("lifted the kill switch"), "{out}");
    assert_eq!(
        arm(&r.resolve("prod", Some("enterprise"), "u1")),
        ("override", "v1")
    );
    assert_eq!(
        arm(&r.resolve("prod", Some("pro"), &canary_unit)),
        ("default", "v1")
    );

    let actions: Vec<String> = r
        .history("support")
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "add",
            "add",
            "add",
            "set-default",
            "set-default",
            "rollout-start",
            "override",
            "override",
            "clear-override",
            "kill",
            "set-default"
        ]
    );
}

#[test]
fn kill_goes_to_the_last_known_good_or_refuses() {
    let r = Reg::new();
    r.add_version("support", "v1", "support-v1.txt", None);
    r.add_version("support", "v2", "support-v2.txt", None);
    r.add_version("support", "v3", "support-v3.txt", None);
    r.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v1",
    ]);

    // Only one version ever served: nothing to go back to. Exit 1, nothing changed.
    let before = r.state_bytes();
    let err = r.stderr(&["registry", "kill", "--route", "support", "--why", "x"], 1);
    assert!(err.contains("no last-known-good"), "{err}");
    assert_eq!(r.state_bytes(), before);

    r.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v2",
    ]);
    r.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v3",
        "--actor",
        "ann",
    ]);
    r.ok(&[
        "registry", "kill", "--route", "support", "--why", "v3 leaks", "--actor", "bob",
    ]);
    assert_eq!(arm(&r.resolve("prod", None, "u1")), ("killed", "v2"));
    assert_eq!(arm(&r.resolve("staging", None, "u1")), ("killed", "v2"));

    // Lift by making v3 default again, kill again: v2 is still good.
    r.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v3",
    ]);
    r.ok(&["registry", "kill", "--route", "support", "--why", "again"]);
    assert_eq!(arm(&r.resolve("prod", None, "u1")), ("killed", "v2"));
    // Now v2 is default and gets killed: v3 was killed since it last served, so v1.
    r.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v2",
    ]);
    r.ok(&["registry", "kill", "--route", "support", "--why", "v2 too"]);
    assert_eq!(arm(&r.resolve("prod", None, "u1")), ("killed", "v1"));

    let h = r.history("support");
    let kill = h.iter().find(|e| e["action"] == "kill").unwrap();
    assert_eq!(kill["actor"], "bob");
    assert_eq!(kill["why"], "v3 leaks");
    assert_eq!(kill["before"], "v3");
    assert_eq!(kill["after"], "v2");
    let table = r.ok(&["registry", "history", "--route", "support"]);
    assert!(
        table.contains("v3 leaks") && table.contains("bob"),
        "{table}"
    );
    let show = r.ok(&["registry", "show", "--route", "support"]);
    assert!(show.contains("KILL SWITCH"), "{show}");
}

#[test]
fn resolve_is_sticky_across_processes_and_matches_the_library() {
    let r = Reg::new();
    r.add_version("support", "v1", "support-v1.txt", None);
    r.add_version("support", "v2", "support-v2.txt", None);
    r.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v1",
    ]);
    r.ok(&[
        "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v2", "--plan",
        "5,50,100",
    ]);
    let state = promptgate::registry::Registry::new(r.dir()).load().unwrap();
    for u in 0..40 {
        let unit = format!("customer-{u}");
        let a = r.resolve("prod", None, &unit);
        let b = r.resolve("prod", None, &unit);
        assert_eq!(a, b);
        let lib = promptgate::registry::resolve(
            &state,
            &promptgate::registry::ResolveRequest {
                route: "support",
                env: "prod",
                tier: None,
                unit: &unit,
            },
        )
        .unwrap();
        assert_eq!(a, serde_json::to_value(&lib).unwrap());
        let id = a["rollout_id"].as_str().unwrap();
        assert_eq!(
            a["bucket"].as_u64().unwrap() as u32,
            promptgate::registry::bucket("support", id, &unit)
        );
    }
}

#[test]
fn concurrent_writers_never_lose_an_update() {
    let r = Reg::new();
    r.add_version("support", "v1", "support-v1.txt", None);
    let children: Vec<_> = (0..8)
        .map(|i| {
            bin()
                .arg("--lake")
                .arg(&r.lake)
                .args([
                    "registry",
                    "override",
                    "--route",
                    "support",
                    "--env",
                    &format!("env{i}"),
                    "--version",
                    "v1",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let show: Value =
        serde_json::from_str(&r.ok(&["registry", "show", "--format", "json"])).unwrap();
    assert_eq!(
        show["routes"]["support"]["overrides"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert_eq!(show["revision"], 9);
    let h = r.history("support");
    assert_eq!(h.len(), 9);
    let mut revs: Vec<u64> = h.iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    revs.dedup();
    assert_eq!(revs, (1..=9).collect::<Vec<_>>());
    // No temp files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(r.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn registry_dir_can_live_outside_the_lake() {
    let r = Reg::new();
    let elsewhere = r.path("prompts-repo");
    let out = bin()
        .env("PROMPTGATE_REGISTRY", &elsewhere)
        .arg("--lake")
        .arg(&r.lake)
        .args([
            "registry",
            "add",
            "--route",
            "chat",
            "--version",
            "a",
            "--file",
            &prompt("support-v1.txt"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(elsewhere.join("state.json").is_file());
    assert!(elsewhere.join("audit.ndjson").is_file());
    assert!(!r.dir().exists());
    let out = bin()
        .arg("--registry")
        .arg(&elsewhere)
        .args(["registry", "show", "--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["routes"]["chat"]["versions"]["a"].is_object());
}
