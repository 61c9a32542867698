//! `serve --intake` against a real server: the accounting of `POST /v1/events`, gzip, limits and
//! the bearer token; every acknowledged event in `llm_events` exactly once after a SIGKILL and a
//! restart; posts while a CLI ingest and a compaction run lose and duplicate nothing.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{IntakeServer, Lake, event_line, http};
use serde_json::Value;

const DAY_MS: i64 = 86_400_000;
const T0: i64 = 1_763_625_600_000; // 2025-11-20T08:00:00Z

fn count(lake: &Lake) -> (u64, u64) {
    let out = lake.ok(&[
        "sql",
        "SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS ids FROM llm_events",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    (v[0]["n"].as_u64().unwrap(), v[0]["ids"].as_u64().unwrap())
}

/// Waits until the lake holds `n` events (the committer runs every few tenths of a second in
/// these tests).
fn wait_for(lake: &Lake, n: u64) {
    let start = Instant::now();
    loop {
        if lake.lake.join("_promptgate/log").is_dir() && count(lake).0 >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the lake did not reach {n} events: {:?}",
            count(lake)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[test]
fn posts_are_accounted_for_and_limits_and_the_token_hold() {
    let lake = Lake::new();
    let token = "s3cret-token";
    let server = IntakeServer::start(
        &lake.lake,
        &[("PROMPTGATE_TOKEN", token)],
        &["--commit-interval", "0.2", "--max-body-mib", "0.5"],
    );
    let auth = format!("Bearer {token}");
    let post = |body: &[u8], extra: &[(&str, &str)]| {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        http(&server.addr, "POST", "/v1/events", &headers, body)
    };

    // No token, a wrong one.
    let body = event_line("a-1", T0, "v1");
    let a = http(&server.addr, "POST", "/v1/events", &[], body.as_bytes());
    assert_eq!(a.status, 401);
    let a = http(
        &server.addr,
        "POST",
        "/v1/events",
        &[("authorization", "Bearer nope")],
        body.as_bytes(),
    );
    assert_eq!(a.status, 401);

    // NDJSON: two good, one without `ts`, one repeated id, a blank line, CRLF.
    let mut bad: Value = serde_json::from_str(&event_line("a-3", T0, "v1")).unwrap();
    bad.as_object_mut().unwrap().remove("ts");
    let bad = bad.to_string();
    let ndjson = format!(
        "{}\r\n{}\n\n{bad}\n{}\n",
        event_line("a-1", T0, "v1"),
        event_line("a-2", T0 + 1000, "v1"),
        event_line("a-1", T0, "v1"),
    );
    let a = post(ndjson.as_bytes(), &[]);
    assert_eq!(a.status, 200, "{:?}", a.json());
    let r = a.json();
    assert_eq!(
        (&r["read"], &r["accepted"], &r["duplicates"], &r["rejected"]),
        (
            &Value::from(4),
            &Value::from(2),
            &Value::from(1),
            &Value::from(1)
        )
    );
    assert_eq!(r["rejects"][0]["line"], 4);
    assert!(r["rejects"][0]["reason"].as_str().unwrap().contains("`ts`"));

    // A JSON array, gzipped, across two days.
    let array = format!(
        "[{}, {}]",
        event_line("b-1", T0 + DAY_MS, "v2"),
        event_line("b-2", T0 + 2 * DAY_MS, "v2")
    );
    let a = post(&gzip(array.as_bytes()), &[("content-encoding", "gzip")]);
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["accepted"], 2);

    // Malformed: a line that is not JSON names its line, and nothing of the body is kept.
    let broken = format!(
        "{}\n{{\"event_id\": \"c-2\", \n",
        event_line("c-1", T0, "v1")
    );
    let a = post(broken.as_bytes(), &[]);
    assert_eq!(a.status, 400);
    let e = a.json()["error"].as_str().unwrap().to_string();
    assert!(e.starts_with("line 2 "), "{e}");
    // Not gzip though it says so; an encoding it does not know.
    assert_eq!(post(b"plain", &[("content-encoding", "gzip")]).status, 400);
    assert_eq!(post(b"x", &[("content-encoding", "br")]).status, 415);

    // Over the limit as sent, and inflated past it from a small gzip.
    let big = vec![b' '; 600 * 1024];
    let a = post(&big, &[]);
    assert_eq!(a.status, 413);
    assert!(
        a.json()["hint"]
            .as_str()
            .unwrap()
            .contains("--max-body-mib")
    );
    assert_eq!(
        post(&gzip(&big), &[("content-encoding", "gzip")]).status,
        413
    );

    // Visible within the commit interval: the 4 accepted events, once each.
    wait_for(&lake, 4);
    assert_eq!(count(&lake), (4, 4));
    // The rejected record is in the quarantine, verbatim.
    let mut files = Vec::new();
    common::walk(&lake.lake.join("quarantine"), &mut files);
    let kept: String = files
        .iter()
        .filter(|p| !p.ends_with("reasons.ndjson"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(kept.contains(&bad), "quarantine: {kept}");

    // Health says what the committer did (once it has counted the commit the lake shows).
    let start = Instant::now();
    let health = loop {
        let h = http(
            &server.addr,
            "GET",
            "/healthz",
            &[("authorization", auth.as_str())],
            b"",
        );
        assert_eq!(h.status, 200);
        let v = h.json();
        if v["intake"]["committed_events"] == 4 || start.elapsed() > Duration::from_secs(30) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let intake = &health["intake"];
    assert_eq!(intake["committed_events"], 4, "{health}");
    assert_eq!(intake["accepting"], true);
    assert!(intake["last_lake_version"].as_u64().is_some(), "{health}");
    server.stop();
}

#[test]
fn every_acknowledged_event_lands_exactly_once_after_a_sigkill_and_a_restart() {
    let lake = Lake::new();
    // Commits now and then, so the kill finds some posts committed and some only spooled.
    let server = IntakeServer::start(&lake.lake, &[], &["--commit-interval", "0.3"]);
    let mut acknowledged = 0u64;
    let mut sent_lines = Vec::new();
    let start = Instant::now();
    let mut batch = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let lines: Vec<String> = (0..50)
            .map(|i| event_line(&format!("k-{batch}-{i}"), T0 + batch * 1000 + i, "v1"))
            .collect();
        let a = server.post_events(&lines.join("\n"));
        assert_eq!(a.status, 200);
        acknowledged += a.json()["accepted"].as_u64().unwrap();
        sent_lines.extend(lines);
        batch += 1;
    }
    // Killed right after the last answer: no last commit.
    server.kill();

    // The crash window between a commit and the spool's clean-up, and a torn last line: a
    // segment holding events already in the lake, ending in half a line.
    let spool = lake.lake.join("_promptgate/intake/events");
    let mut replay = sent_lines[..100].join("\n");
    replay.push_str("\n{\"event_id\": \"half");
    std::fs::write(spool.join(format!("{:020}.ndjson", 999_999)), replay).unwrap();

    let server = IntakeServer::start(&lake.lake, &[], &["--commit-interval", "0.3"]);
    wait_for(&lake, acknowledged);
    server.stop();
    assert_eq!(count(&lake), (acknowledged, acknowledged));
    // Nothing is left in the spool, and nothing was quarantined (the torn line was cut).
    let mut left = Vec::new();
    common::walk(&spool, &mut left);
    assert!(left.is_empty(), "{left:?}");
    let mut rejected = Vec::new();
    common::walk(&lake.lake.join("quarantine"), &mut rejected);
    assert!(rejected.is_empty(), "{rejected:?}");
}

#[test]
fn posts_while_the_cli_ingests_and_compacts_lose_and_duplicate_nothing() {
    let lake = Lake::new();
    let server = IntakeServer::start(&lake.lake, &[], &["--commit-interval", "0.1"]);
    let addr = server.addr.clone();
    let poster = std::thread::spawn(move || {
        let mut n = 0u64;
        for batch in 0..60 {
            let lines: Vec<String> = (0..100)
                .map(|i| {
                    event_line(
                        &format!("p-{batch}-{i}"),
                        T0 + (batch * 100 + i) * 997,
                        "v1",
                    )
                })
                .collect();
            let a = http(
                &addr,
                "POST",
                "/v1/events",
                &[],
                lines.join("\n").as_bytes(),
            );
            assert_eq!(a.status, 200);
            n += a.json()["accepted"].as_u64().unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        n
    });
    // Meanwhile the CLI ingests other events on the same days, and compacts and vacuums.
    for round in 0..3 {
        let file = lake.path(&format!("cli-{round}.ndjson"));
        let lines: Vec<String> = (0..2000)
            .map(|i| event_line(&format!("c-{round}-{i}"), T0 + i * 2999, "v2"))
            .collect();
        std::fs::write(&file, lines.join("\n")).unwrap();
        lake.ok(&["ingest", "--no-progress", file.to_str().unwrap()]);
        lake.ok(&["compact"]);
        lake.ok(&["lake", "vacuum"]);
    }
    let posted = poster.join().unwrap();
    assert_eq!(posted, 6000);
    server.stop();
    assert_eq!(count(&lake), (12_000, 12_000));
}

#[test]
fn a_full_spool_answers_503_with_retry_after_and_health_says_so() {
    let lake = Lake::new();
    // A spool of 10 KB that is committed only at shutdown.
    let server = IntakeServer::start(
        &lake.lake,
        &[],
        &["--commit-interval", "3600", "--max-spool-mib", "0.01"],
    );
    let body = |from: i64| {
        (from..from + 20)
            .map(|i| event_line(&format!("f-{i}"), T0 + i, "v1"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = server.post_events(&body(0));
    assert_eq!(first.status, 200);
    let mut refused = None;
    for k in 1..10 {
        let a = server.post_events(&body(k * 20));
        if a.status != 200 {
            refused = Some(a);
            break;
        }
    }
    let a = refused.expect("the spool never filled");
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after"), Some("3600"));
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("spool is full")
    );
    let h = http(&server.addr, "GET", "/healthz", &[], b"");
    assert_eq!(h.status, 503);
    assert_eq!(h.json()["intake"]["accepting"], false);
    // What was acknowledged is committed at shutdown; what was refused is not there.
    let accepted = count_spooled(&lake);
    server.stop();
    assert_eq!(count(&lake), (accepted, accepted));
}

/// Lines in the spool's segments.
fn count_spooled(lake: &Lake) -> u64 {
    let mut files = Vec::new();
    common::walk(&lake.lake.join("_promptgate/intake/events"), &mut files);
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count() as u64)
        .sum()
}
