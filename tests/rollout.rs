//! Integration tests: staged rollouts through the real binary, driven by generated events
//! whose arms follow `resolve` (as an application's would).

mod common;

use std::ops::Deref;
use std::process::Stdio;

use common::{Lake, Traffic, bin, testdata};
use serde_json::Value;

struct World(Lake);

impl Deref for World {
    type Target = Lake;
    fn deref(&self) -> &Lake {
        &self.0
    }
}

impl World {
    /// A lake with route `support`: v1 (default), v2 and v3 registered.
    fn new() -> Self {
        let w = World(Lake::new());
        for (v, f) in [
            ("v1", "support-v1.txt"),
            ("v2", "support-v2.txt"),
            ("v3", "support-v3.txt"),
        ] {
            w.add_version("support", v, f, None);
        }
        w.ok(&[
            "registry",
            "set-default",
            "--route",
            "support",
            "--version",
            "v1",
        ]);
        w
    }
    /// Starts v2 over v1 in prod with the test policy. The id is fixed, so the same units get
    /// the canary on every run: the verdicts these tests assert do not depend on a random
    /// draw (the judge's error rates are measured in tests/judge_simulation.rs).
    fn start(&self, extra: &[&str]) {
        let mut args = vec![
            "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v2", "--id",
            "r-test", "--policy",
        ];
        let policy = testdata("rollout-policy.toml");
        args.push(&policy);
        args.extend_from_slice(extra);
        self.ok(&args);
    }
    /// `rollout step --format json`, asserting its exit code.
    fn step(&self, code: i32) -> Value {
        let out = self.expect(
            &[
                "rollout", "step", "--route", "support", "--env", "prod", "--format", "json",
            ],
            code,
        );
        serde_json::from_str(&out).unwrap()
    }
    fn resolve(&self, unit: &str) -> Value {
        serde_json::from_str(&self.ok(&[
            "resolve", "--route", "support", "--env", "prod", "--unit", unit,
        ]))
        .unwrap()
    }
    fn status(&self) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["rollout", "status", "--format", "json"])).unwrap()
    }
    fn steps_logged(&self) -> Vec<Value> {
        self.registry()
            .history()
            .unwrap()
            .into_iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .filter(|e| e["action"] == "rollout-step")
            .collect()
    }
}

/// The canary's share of the step's units, from the step report.
fn canary_share(report: &Value) -> f64 {
    let units = |v: &str| -> f64 {
        report["arms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["version"] == v)
            .map(|a| a["units"].as_f64().unwrap())
            .sum()
    };
    units("v2") / (units("v1") + units("v2"))
}

#[test]
fn full_rollout_promotes_at_each_step_and_switches_the_default() {
    let w = World::new();
    w.start(&[]);
    // Units per step: about 500 canary events at each share.
    for (step, (share, units)) in [(0.01, 50_000), (0.05, 10_000), (0.25, 2_000), (0.50, 1_000)]
        .into_iter()
        .enumerate()
    {
        w.traffic(Traffic {
            units,
            ..Traffic::default()
        });
        let r = w.step(0);
        let got = canary_share(&r);
        // Binomial over `units` units: well inside 4 standard errors.
        let se = (share * (1.0 - share) / units as f64).sqrt();
        assert!(
            (got - share).abs() < 4.0 * se,
            "step {step}: canary share {got}, plan {share}"
        );
        assert_eq!(r["judge"]["verdict"], "promote", "{r}");
        if step < 3 {
            assert_eq!(r["action"]["action"], "advanced", "{r}");
            assert_eq!(r["rollout"]["step"], step + 1);
        } else {
            assert_eq!(r["action"]["action"], "completed", "{r}");
            assert_eq!(r["rollout"]["status"], "completed");
        }
    }
    // The canary is the default now, for every unit.
    for u in 0..50 {
        let v = w.resolve(&format!("u{u}"));
        assert_eq!(
            (v["arm"].as_str(), v["version"].as_str()),
            (Some("default"), Some("v2"))
        );
    }
    let logged = w.steps_logged();
    assert_eq!(logged.len(), 4);
    for e in &logged {
        assert_eq!(e["verdict"]["verdict"], "promote");
        assert!(e["verdict"]["n_canary"].as_u64().unwrap() >= 200);
    }
    let st = w.status();
    assert_eq!(st[0]["status"], "completed");
    let table = w.ok(&["registry", "history", "--route", "support"]);
    assert!(table.contains("completed: v2 is the default"), "{table}");
}

#[test]
fn a_planted_regression_aborts_at_5_percent_and_rolls_back() {
    let w = World::new();
    w.start(&[]);
    w.traffic(Traffic {
        units: 50_000,
        ..Traffic::default()
    });
    w.step(0);
    w.traffic(Traffic {
        units: 10_000,
        canary_latency: Some(3.0),
        ..Traffic::default()
    });
    let r = w.step(1);
    assert_eq!(r["action"]["action"], "aborted", "{r}");
    assert_eq!(r["rollout"]["status"], "aborted");
    assert!(
        r["judge"]["reason"]
            .as_str()
            .unwrap()
            .contains("p95_duration_ms"),
        "{r}"
    );
    // Everyone is back on the baseline.
    for u in 0..300 {
        let v = w.resolve(&format!("u{u}"));
        assert_eq!(v["version"], "v1");
        assert_eq!(v["arm"], "default");
    }
    let logged = w.steps_logged();
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[1]["verdict"]["verdict"], "abort");
    assert!(
        logged[1]["verdict"]["reason"]
            .as_str()
            .unwrap()
            .contains("p95_duration_ms")
    );
    // No second step on an aborted rollout.
    let out = w.run(&["rollout", "step", "--route", "support", "--env", "prod"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no active rollout"));
}

#[test]
fn too_little_traffic_holds_the_step() {
    let w = World::new();
    w.start(&[]);
    w.traffic(Traffic {
        units: 2_000,
        ..Traffic::default()
    });
    let r = w.step(3);
    assert_eq!(r["action"]["action"], "held", "{r}");
    assert_eq!(r["rollout"]["step"], 0);
    assert_eq!(r["rollout"]["status"], "active");
    let st = w.status();
    assert_eq!(st[0]["step"], 1);
    assert_eq!(st[0]["last_verdict"]["verdict"], "continue");
    assert!(st[0]["events_canary"].as_u64().unwrap() > 0);
    assert!(st[0]["next"].as_str().unwrap().contains("rollout step"));
    let table = w.ok(&["rollout", "status"]);
    assert!(table.contains("continue"), "{table}");
}

#[test]
fn a_changed_pinned_knob_makes_the_step_invalid() {
    let w = World::new();
    w.start(&["--pin", "top_k,reranker"]);
    w.traffic(Traffic {
        units: 50_000,
        attributes: vec![
            ("v1", r#"{"top_k":5,"reranker":"bge"}"#),
            ("v2", r#"{"top_k":8,"reranker":"bge"}"#),
        ],
        ..Traffic::default()
    });
    let r = w.step(4);
    let reason = r["judge"]["reason"].as_str().unwrap();
    assert!(reason.contains("top_k"), "{reason}");
    assert_eq!(r["action"]["action"], "held");
}

#[test]
fn events_logging_another_prompt_than_the_registry_make_the_step_invalid() {
    let w = World::new();
    w.start(&[]);
    w.traffic(Traffic {
        units: 50_000,
        canary_sha: Some("0123456789abcdef"),
        ..Traffic::default()
    });
    let r = w.step(4);
    assert_eq!(r["action"]["action"], "held");
    let m = r["registry_mismatch"][0].as_str().unwrap();
    assert!(m.contains("\"0123456789ab\"") && m.contains("v2"), "{m}");
    assert_eq!(w.steps_logged()[0]["verdict"]["verdict"], "invalid");
}

#[test]
fn two_concurrent_steps_advance_once() {
    let w = World::new();
    w.start(&[]);
    w.traffic(Traffic {
        units: 50_000,
        ..Traffic::default()
    });
    let children: Vec<_> = (0..2)
        .map(|_| {
            bin()
                .arg("--lake")
                .arg(&w.lake)
                .args(["rollout", "step", "--route", "support", "--env", "prod"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|mut c| c.wait().unwrap().code().unwrap())
        .collect();
    // One promoted (0); the other found the rollout moved while it judged (3), or judged the
    // new step before it had traffic (3 or 4): either way it did nothing, so it never says 0.
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| [0, 3, 4].contains(c)), "{codes:?}");
    let st = w.status();
    assert_eq!(st[0]["step"], 2, "advanced exactly once: {st:?}");
    let advanced = w
        .steps_logged()
        .iter()
        .filter(|e| e["after"].as_str().unwrap().starts_with("step 2/5"))
        .count();
    assert_eq!(advanced, 1);
}

#[test]
fn a_cohort_goes_first_then_shares() {
    let w = World::new();
    let cohort = w.path("cohort.txt");
    let ids: Vec<String> = (0..300).map(|u| format!("u{u}")).collect();
    std::fs::write(&cohort, format!("# beta customers\n{}\n", ids.join("\n"))).unwrap();
    w.start(&[
        "--cohort-units",
        cohort.to_str().unwrap(),
        "--plan",
        "10,25,100",
    ]);
    assert_eq!(w.resolve("u7")["arm"], "canary");
    assert_eq!(w.resolve("u300")["arm"], "baseline");
    w.traffic(Traffic {
        units: 3_000,
        events_per_unit: 2,
        ..Traffic::default()
    });
    let r = w.step(0);
    assert_eq!(r["judge"]["n_canary"], 600);
    assert_eq!(r["rollout"]["step"], 1);
    // At 10% and then 25%, every cohort unit is still on the canary (the canary set only
    // grows), and the sample-ratio check holds the units outside the cohort to the share: on
    // 5,000 units the cohort alone would be 6% of them on top of the plan.
    let population: Vec<String> = (0..5_000).map(|u| format!("u{u}")).collect();
    let mut was_canary = vec![true; 300];
    for (step, share) in [(1, 0.10), (2, 0.25)] {
        let state = w.registry().load().unwrap();
        let canary: Vec<bool> = population
            .iter()
            .map(|u| {
                let req = promptgate::registry::ResolveRequest {
                    route: "support",
                    env: "prod",
                    tier: None,
                    unit: u,
                };
                promptgate::registry::resolve(&state, &req).unwrap().arm
                    == promptgate::registry::ResolvedArm::Canary
            })
            .collect();
        assert!(
            canary[..300].iter().all(|&c| c),
            "step {step}: a cohort unit left"
        );
        assert!(
            was_canary.iter().zip(&canary).all(|(p, n)| !p || *n),
            "step {step}: a canary unit left the canary"
        );
        was_canary = canary.clone();
        // The binary agrees with the library on a few of them.
        for u in ["u0", "u150", "u299"] {
            assert_eq!(w.resolve(u)["arm"], "canary", "step {step}: {u}");
        }
        let outside = canary[300..].iter().filter(|&&c| c).count() as f64 / 4_700.0;
        let se = (share * (1.0 - share) / 4_700.0_f64).sqrt();
        assert!((outside - share).abs() < 4.0 * se, "step {step}: {outside}");
        w.traffic(Traffic {
            units: 5_000,
            seed: step,
            ..Traffic::default()
        });
        let r = w.step(0);
        assert_eq!(r["judge"]["verdict"], "promote", "step {step}: {r}");
        let srm = &r["judge"]["srm"];
        assert_eq!(srm["basis"], "units", "step {step}: {srm}");
        assert_eq!(srm["mismatch"], false, "step {step}: {srm}");
    }
    assert_eq!(w.status()[0]["status"], "completed");
}

#[test]
fn start_refuses_and_changes_nothing() {
    let w = World::new();
    let state = || std::fs::read(w.lake.join("registry/state.json")).unwrap();
    let before = state();
    for (args, code, says) in [
        (vec!["--canary", "v9"], 1, "not registered"),
        (vec!["--canary", "v1"], 1, "already what"),
        (
            vec!["--canary", "v2", "--plan", "1,5,5,100"],
            2,
            "does not rise",
        ),
        (vec!["--canary", "v2", "--plan", "10,50,100"], 2, "1-5%"),
        (
            vec!["--canary", "v2", "--plan", "1,5,50"],
            2,
            "does not end at 100",
        ),
    ] {
        let mut a = vec!["rollout", "start", "--route", "support", "--env", "prod"];
        a.extend(args);
        let out = w.run(&a);
        assert_eq!(out.status.code(), Some(code), "{a:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{a:?}: {err}");
    }
    assert_eq!(state(), before);
    w.start(&[]);
    let before = state();
    let out = w.run(&[
        "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has an active rollout"));
    assert_eq!(state(), before);
}

#[test]
fn a_fixed_id_reproduces_the_assignment_and_is_not_reused() {
    let arms = |w: &World| -> Vec<String> {
        (0..200)
            .map(|u| {
                w.resolve(&format!("u{u}"))["arm"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let start = |w: &World, plan: &str| {
        w.ok(&[
            "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v2", "--id",
            "ci-4711", "--plan", plan,
        ])
    };
    let (a, b) = (World::new(), World::new());
    assert!(start(&a, "5,50,100").contains("started rollout ci-4711"));
    start(&b, "5,50,100");
    let first = arms(&a);
    assert_eq!(first, arms(&b), "same route, id and units: same arms");
    let canary = first.iter().filter(|x| *x == "canary").count();
    assert!((1..60).contains(&canary), "about 5% of 200 units: {canary}");

    // Once that rollout has ended, its id is not drawn again.
    a.ok(&[
        "registry", "kill", "--route", "support", "--env", "prod", "--why", "test",
    ]);
    a.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v1",
        "--env",
        "prod",
    ]);
    let before = std::fs::read(a.lake.join("registry/state.json")).unwrap();
    let out = a.run(&[
        "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v2", "--id",
        "ci-4711",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already had a rollout with id \"ci-4711\""),
        "{err}"
    );
    assert_eq!(
        std::fs::read(a.lake.join("registry/state.json")).unwrap(),
        before
    );
    // A name that is not one is refused as a usage error.
    let out = a.run(&[
        "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v2", "--id", " ci",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A hand-edited rollout the code cannot follow (no steps, a step past the plan, a share out of
/// range) is refused when the state is read, with the rollout named, by every command that
/// reads it: exit 1 and one message, never a panic (`resolve` exited 101 on no steps).
#[test]
fn a_hand_edited_rollout_is_refused_not_a_panic() {
    let w = World::new();
    w.start(&[]);
    let path = w.lake.join("registry").join("state.json");
    let original: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (edit, says) in [
        (serde_json::json!({"steps": []}), "has no steps"),
        (serde_json::json!({"step": 9}), "is at step 10 of a plan of"),
        (
            serde_json::json!({"steps": [{"percent": 250.0}]}),
            "has a step of 250%",
        ),
    ] {
        let mut state = original.clone();
        let rollout = &mut state["routes"]["support"]["rollouts"][0];
        for (k, v) in edit.as_object().unwrap() {
            rollout[k] = v.clone();
        }
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        for args in [
            &[
                "resolve", "--route", "support", "--env", "prod", "--unit", "u1",
            ][..],
            &["rollout", "status"][..],
        ] {
            let err = w.stderr(args, 1);
            assert!(
                err.contains("rollout \"r-test\" of route \"support\"") && err.contains(says),
                "{edit} {args:?}: {err}"
            );
        }
    }
}
