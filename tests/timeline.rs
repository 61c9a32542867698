//! `promptgate timeline` on traffic with a planted regression and a registry history: the
//! bucket where the flagged rate rises names the version live then, the registry's change sits
//! right before it, `--at` says what each env was served and gives the command that goes back,
//! and the HTML page draws a chart per metric.

mod common;

use common::Lake;
use promptgate::registry::now_us;
use serde_json::{Value, json};

const MIN_US: i64 = 60_000_000;

/// Events of route `support`, env `prod`: ten a minute over `[from, to)` on `version`, one in
/// `flag_every` flagged.
fn events(version: &str, from_us: i64, to_us: i64, flag_every: i64, duration_ms: i64) -> String {
    let mut out = String::new();
    let mut t = from_us;
    let mut i = 0i64;
    while t < to_us {
        for k in 0..10 {
            i += 1;
            let line = json!({
                "event_id": format!("{version}-{i}"),
                "ts": (t + k * 5_000_000) / 1000,
                "route": "support", "env": "prod", "model": "m1", "tier": "free",
                "prompt_version": version, "unit_id": format!("u{}", i % 97),
                "duration_ms": duration_ms + (i % 7) * 10, "tokens_in": 100, "tokens_out": 40,
                "status": if i % flag_every == 0 { "flagged" } else { "ok" },
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        t += MIN_US;
    }
    out
}

#[test]
fn the_timeline_names_the_version_live_when_the_flagged_rate_rose() {
    let lake = Lake::new();
    lake.add_version("support", "v1", "support-v1.txt", None);
    lake.add_version("support", "v2", "support-v2.txt", None);
    for (version, why) in [("v1", "first"), ("v2", "more concise")] {
        lake.ok(&[
            "registry",
            "set-default",
            "--route",
            "support",
            "--env",
            "prod",
            "--version",
            version,
            "--why",
            why,
        ]);
    }
    // The switch happened just now; the window is two hours before it and one after, cut in
    // buckets of 10 minutes, so the switch falls on the boundary of bucket 12.
    let switch = now_us() / MIN_US * MIN_US + MIN_US;
    let since = switch - 120 * MIN_US;
    let until = switch + 60 * MIN_US;
    let file = lake.path("events.ndjson");
    std::fs::write(
        &file,
        events("v1", since, switch, 50, 300) + &events("v2", switch, until, 5, 450),
    )
    .unwrap();
    lake.ok(&["ingest", "--no-progress", file.to_str().unwrap()]);
    let rfc = |us: i64| promptgate::registry::format_us(us);
    let window = [
        "--route",
        "support",
        "--env",
        "prod",
        "--since",
        &rfc(since),
        "--until",
        &rfc(until),
    ];

    let t: Value = serde_json::from_str(
        &lake.ok(&[
            &["timeline"][..],
            &window,
            &["--bucket", "10m", "--format", "json"],
        ]
        .concat()),
    )
    .unwrap();
    let buckets = t["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 18, "{t}");
    let rose = buckets
        .iter()
        .position(|b| b["versions"][0]["flagged_rate"].as_f64().unwrap() > 0.1)
        .unwrap();
    assert_eq!(rose, 12, "{t}");
    assert_eq!(buckets[rose]["start"], rfc(switch));
    for (i, b) in buckets.iter().enumerate() {
        let versions = b["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1, "{b}");
        assert_eq!(
            versions[0]["version"],
            if i < 12 { "v1" } else { "v2" },
            "{b}"
        );
        assert_eq!(versions[0]["events"], 100, "{b}");
        assert_eq!(versions[0]["share"], 1.0, "{b}");
    }
    assert_eq!(buckets[0]["versions"][0]["flagged_rate"], 0.02);
    assert_eq!(buckets[12]["versions"][0]["flagged_rate"], 0.2);
    // Both set-defaults were made inside the window (just before the switch), in order.
    let changes = t["changes"].as_array().unwrap();
    let afters: Vec<&str> = changes
        .iter()
        .map(|c| c["after"].as_str().unwrap())
        .collect();
    assert_eq!(afters, ["v1", "v2"], "{t}");
    assert_eq!(changes[1]["why"], "more concise");

    // The table puts the change before the bucket where the rate rose.
    let table = lake.ok(&[&["timeline"][..], &window].concat());
    let lines: Vec<&str> = table.lines().collect();
    let change = lines
        .iter()
        .position(|l| l.contains(">> set-default env=prod v1 -> v2 (by tester: more concise)"))
        .unwrap_or_else(|| panic!("{table}"));
    let short = rfc(switch).replace('T', " ").replace(".000000Z", "Z");
    assert!(lines[change + 1].starts_with(&short), "{table}");
    assert!(
        lines[change + 1].contains("v2") && lines[change + 1].contains("20.00%"),
        "{table}"
    );

    // --at before the switch: v1 served all of prod, and the command to go back to it works.
    let at = lake.ok(&[
        &["timeline"][..],
        &window,
        &["--at", &rfc(switch - 30 * MIN_US)],
    ]
    .concat());
    assert!(
        at.contains("env prod         tier free       v1                100.0% of 100 events"),
        "{at}"
    );
    let command = at
        .lines()
        .find_map(|l| l.trim().strip_prefix("promptgate registry set-default "))
        .unwrap_or_else(|| panic!("{at}"));
    assert!(
        command.starts_with("--route support --env prod --version v1 --why "),
        "{command}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_promptgate"),
        dir.path().join("promptgate"),
    )
    .unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promptgate registry set-default {command}"))
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .env("PROMPTGATE_LAKE", &lake.lake)
        .env_remove("PROMPTGATE_REGISTRY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let resolved: Value = serde_json::from_str(&lake.ok(&[
        "resolve", "--route", "support", "--env", "prod", "--unit", "u1",
    ]))
    .unwrap();
    assert_eq!(resolved["version"], "v1", "{resolved}");

    // The page: a chart per metric, a line per version, the changes marked and listed.
    let page = lake.path("timeline.html");
    lake.ok(&[
        &["timeline"][..],
        &window,
        &["--format", "html", "--out", page.to_str().unwrap()],
    ]
    .concat());
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<svg").count(), 4);
    assert_eq!(html.matches("<polyline").count(), 8);
    assert!(html.contains("set-default env=prod v1 -&gt; v2"), "{html}");
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));

    // Clear errors for a window the timeline cannot draw.
    let err = lake.stderr(
        &[
            "timeline", "--route", "support", "--since", "30d", "--bucket", "1s",
        ],
        2,
    );
    assert!(
        err.contains("more than a timeline draws") && err.contains("wider --bucket"),
        "{err}"
    );
    let err = lake.stderr(
        &["timeline", "--route", "support", "--bucket", "ten minutes"],
        2,
    );
    assert!(
        err.contains("--bucket") && err.contains("not a span of time"),
        "{err}"
    );
}
