//! Integration tests: the blind review (sample, run, import, sheet, score) through the binary.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use common::Lake;
use serde_json::Value;

struct Fixture(Lake);

impl Deref for Fixture {
    type Target = Lake;
    fn deref(&self) -> &Lake {
        &self.0
    }
}

const PII: [&str; 6] = [
    "my email is ann.lee@example.com",
    "call me at +44 20 7946 0958",
    "card 4111 1111 1111 1111 was charged twice",
    "refund to IBAN DE89 3704 0044 0532 0130 00",
    "my key sk-abcdefghijklmnopqrstuv123 stopped working",
    "header Authorization: Bearer abcdefghijklmnop.qrstuvwx.yz",
];

impl Fixture {
    fn new() -> Self {
        let f = Fixture(Lake::new());
        // 200 events: m1 x free 50%, m1 x pro 25%, m2 x free 25%; 160 distinct inputs.
        let mut nd = String::new();
        for i in 0..200u32 {
            let (model, tier) = match i % 4 {
                0 | 1 => ("m1", "free"),
                2 => ("m1", "pro"),
                _ => ("m2", "free"),
            };
            let input = if (i as usize) < PII.len() {
                format!("question {i}: {}", PII[i as usize])
            } else {
                format!("question {}: how do I reset my password?", i % 160)
            };
            let v = serde_json::json!({
                "event_id": format!("e-{i}"),
                "ts": format!("2026-11-20T10:{:02}:{:02}Z", i / 60, i % 60),
                "route": "support", "env": "prod", "model": model, "tier": tier,
                "prompt_version": "v1", "duration_ms": 100, "tokens_in": 10, "tokens_out": 5,
                "status": "ok", "input": input,
            });
            nd.push_str(&v.to_string());
            nd.push('\n');
        }
        // Another route and env never leak in.
        nd.push_str(r#"{"event_id":"x-1","ts":"2026-11-20T10:00:00Z","route":"chat","env":"prod","model":"m1","tier":"free","prompt_version":"v1","duration_ms":1,"tokens_in":1,"tokens_out":1,"status":"ok","input":"other route"}"#);
        nd.push('\n');
        let events = f.path("events.ndjson");
        std::fs::write(&events, nd).unwrap();
        f.ok(&["ingest", "--no-progress", events.to_str().unwrap()]);
        for (v, text) in [
            ("v1", "Answer briefly: {{input}}"),
            ("v2", "Answer step by step, kindly: {{input}}"),
        ] {
            let p = f.path(&format!("{v}.txt"));
            std::fs::write(&p, text).unwrap();
            f.ok(&[
                "registry",
                "add",
                "--route",
                "support",
                "--version",
                v,
                "--file",
                p.to_str().unwrap(),
            ]);
        }
        f
    }
    fn expect(&self, args: &[&str], code: i32) -> (String, String) {
        self.output(args, code)
    }
    /// Samples and returns the review id.
    fn sample(&self, n: u32, seed: u32) -> String {
        let out = self.ok(&[
            "review",
            "sample",
            "--route",
            "support",
            "--env",
            "prod",
            "--n",
            &n.to_string(),
            "--seed",
            &seed.to_string(),
        ]);
        out.lines().next().unwrap().to_string()
    }
    fn review_dir(&self, id: &str) -> PathBuf {
        self.lake.join("reviews").join(id)
    }
    fn items(&self, id: &str) -> Vec<Value> {
        std::fs::read_to_string(self.review_dir(id).join("items.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    fn json(&self, id: &str, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.review_dir(id).join(name)).unwrap()).unwrap()
    }
    fn exe(&self) -> String {
        env!("CARGO_BIN_EXE_promptgate").to_string()
    }
    fn run_example(&self, id: &str) -> String {
        let runner = format!("{} review example-runner", self.exe());
        self.ok(&[
            "review",
            "run",
            "--id",
            id,
            "--baseline",
            "v1",
            "--canary",
            "v2",
            "--runner",
            &runner,
            "--jobs",
            "4",
        ])
    }
}

fn strip_ids(items: &[Value]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|v| {
            (
                v["event_id"].as_str().unwrap().into(),
                v["input"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn sample_is_reproducible_stratified_distinct_and_redacted() {
    let f = Fixture::new();
    let id = f.sample(40, 7);
    assert!(
        f.review_dir(&id).join("review.json").is_file(),
        "first line is the id: {id}"
    );
    let items = f.items(&id);
    assert_eq!(items.len(), 40);
    // Same seed, same sample; another seed, another one.
    let again = f.sample(40, 7);
    assert_ne!(id, again);
    assert_eq!(strip_ids(&items), strip_ids(&f.items(&again)));
    assert_ne!(strip_ids(&items), strip_ids(&f.items(&f.sample(40, 8))));
    // Never the same input twice, never another route.
    let inputs: HashSet<&str> = items.iter().map(|v| v["input"].as_str().unwrap()).collect();
    assert_eq!(inputs.len(), 40);
    assert!(!inputs.contains("other route"));
    // Proportional to traffic: 50% / 25% / 25%.
    let mut cells: BTreeMap<(String, String), usize> = BTreeMap::new();
    for v in &items {
        *cells
            .entry((
                v["model"].as_str().unwrap().into(),
                v["tier"].as_str().unwrap().into(),
            ))
            .or_default() += 1;
    }
    assert_eq!(cells[&("m1".into(), "free".into())], 20);
    assert_eq!(cells[&("m1".into(), "pro".into())], 10);
    assert_eq!(cells[&("m2".into(), "free".into())], 10);
    // Every PII input is eligible; sample them all to see each redaction.
    let all = f.sample(1000, 1);
    let m = f.json(&all, "review.json");
    // 160 question texts, 6 of them also asked once with personal data.
    assert_eq!(m["sampled"], 166);
    assert_eq!(m["distinct_inputs"], 166);
    for kind in ["email", "phone", "card", "iban", "api_key", "bearer_token"] {
        assert_eq!(m["redactions"][kind], 1, "{kind}: {}", m["redactions"]);
    }
    let text = std::fs::read_to_string(f.review_dir(&all).join("items.ndjson")).unwrap();
    for secret in [
        "ann.lee@",
        "7946",
        "4111",
        "DE89",
        "sk-abc",
        "abcdefghijklmnop",
    ] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    for ph in [
        "[EMAIL]",
        "[PHONE]",
        "[CARD]",
        "[IBAN]",
        "[API_KEY]",
        "[BEARER_TOKEN]",
    ] {
        assert!(text.contains(ph), "{ph} missing");
    }
    let (out, _) = f.expect(
        &[
            "review", "sample", "--route", "support", "--env", "prod", "--n", "1000", "--seed", "1",
        ],
        0,
    );
    assert!(out.contains("fewer than the 1000 asked"), "{out}");
    // Nothing eligible: an error, not an empty review.
    let (_, err) = f.expect(&["review", "sample", "--route", "nope", "--env", "prod"], 1);
    assert!(err.contains("error:") && err.contains("hint:"), "{err}");
}

#[test]
fn run_records_failures_and_timeouts_and_rerun_fills_gaps() {
    let f = Fixture::new();
    let id = f.sample(12, 3);
    // Fails on even items, answers odd ones with the example runner.
    let flaky = format!(
        "read -r req; case \"$req\" in *'\"item\":2,'*|*'\"item\":4,'*) echo boom >&2; exit 3;; esac; printf '%s' \"$req\" | {} review example-runner",
        f.exe()
    );
    let (out, _) = f.expect(
        &[
            "review",
            "run",
            "--id",
            &id,
            "--baseline",
            "v1",
            "--canary",
            "v2",
            "--runner",
            &flaky,
        ],
        1,
    );
    assert!(out.contains("ran 24 (20 answered, 4 failed)"), "{out}");
    assert!(out.contains("boom"), "{out}");
    let answers = f.json(&id, "answers.json");
    assert_eq!(answers["v1"]["2"]["error"], "runner failed (exit 3): boom");
    let a1 = answers["v2"]["1"]["output"].as_str().unwrap();
    assert!(a1.starts_with("Answer step by step, kindly: "), "{a1}");
    // The re-run only runs the 4 missing answers.
    let out = f.run_example(&id);
    assert!(
        out.contains("ran 4 (4 answered, 0 failed), 20 already answered"),
        "{out}"
    );
    let out = f.run_example(&id);
    assert!(
        out.contains("ran 0 (0 answered, 0 failed), 24 already answered"),
        "{out}"
    );
    // Another pair of versions on the same review is refused.
    let (_, err) = f.expect(
        &[
            "review",
            "run",
            "--id",
            &id,
            "--baseline",
            "v1",
            "--canary",
            "v3",
            "--runner",
            "true",
        ],
        2,
    );
    assert!(err.contains("compares canary v2"), "{err}");

    // A timeout is recorded on its item and the batch goes on.
    let id2 = f.sample(2, 3);
    let (out, _) = f.expect(
        &[
            "review",
            "run",
            "--id",
            &id2,
            "--baseline",
            "v1",
            "--canary",
            "v2",
            "--runner",
            "sleep 5",
            "--timeout",
            "300ms",
            "--jobs",
            "4",
        ],
        1,
    );
    assert!(out.contains("4 failed, 4 timed out"), "{out}");
    assert_eq!(
        f.json(&id2, "answers.json")["v1"]["1"]["error"],
        "timed out after 300ms"
    );
}

#[test]
fn import_is_all_or_nothing() {
    let f = Fixture::new();
    let id = f.sample(3, 5);
    let bad = f.path("bad.ndjson");
    std::fs::write(
        &bad,
        "{\"item\":1,\"version\":\"v1\",\"output\":\"x\"}\n{\"item\":99,\"version\":\"v1\",\"output\":\"y\"}\n",
    )
    .unwrap();
    let args = |p: &Path| {
        vec![
            "review".to_string(),
            "import".into(),
            "--id".into(),
            id.clone(),
            "--outputs".into(),
            p.to_str().unwrap().into(),
            "--baseline".into(),
            "v1".into(),
            "--canary".into(),
            "v2".into(),
        ]
    };
    let a: Vec<String> = args(&bad);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (_, err) = f.expect(&a, 1);
    assert!(
        err.contains("bad.ndjson:2: item 99 is not in review"),
        "{err}"
    );
    assert!(
        !f.review_dir(&id).join("answers.json").exists(),
        "nothing applied"
    );
    let good = f.path("good.ndjson");
    let mut text = String::new();
    for i in 1..=3 {
        for v in ["v1", "v2"] {
            text.push_str(&format!(
                "{{\"item\":{i},\"version\":\"{v}\",\"output\":\"{v} answer {i}\"}}\n"
            ));
        }
    }
    std::fs::write(&good, text).unwrap();
    let a: Vec<String> = args(&good);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (out, _) = f.expect(&a, 0);
    assert!(
        out.contains("imported 6 answers; 0 of 6 still missing"),
        "{out}"
    );
    assert_eq!(
        f.json(&id, "answers.json")["v2"]["3"]["output"],
        "v2 answer 3"
    );
}

/// Reads sheet.csv rows as (item, answer_a, answer_b).
fn sheet_rows(f: &Fixture, id: &str) -> Vec<(u32, String, String)> {
    let mut r = csv::Reader::from_path(f.review_dir(id).join("share/sheet.csv")).unwrap();
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "item",
            "input",
            "answer_a",
            "answer_b",
            "label_a",
            "label_b",
            "preferred",
            "note",
            "labeler"
        ]
    );
    r.records()
        .map(|x| {
            let x = x.unwrap();
            (x[0].parse().unwrap(), x[2].to_string(), x[3].to_string())
        })
        .collect()
}

/// Which side shows the canary, per item, from the key.
fn canary_side(f: &Fixture, id: &str) -> BTreeMap<u32, &'static str> {
    let key = f.json(id, "key.json");
    key["sides"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), if v[0] == "v2" { "A" } else { "B" }))
        .collect()
}

#[test]
fn sheet_is_blind_and_balanced() {
    let f = Fixture::new();
    let id = f.sample(41, 11);
    f.run_example(&id);
    let out = f.ok(&["review", "sheet", "--id", &id]);
    assert!(out.contains("sheet of 41 items"), "{out}");
    let csv = std::fs::read_to_string(f.review_dir(&id).join("share/sheet.csv")).unwrap();
    let html = std::fs::read_to_string(f.review_dir(&id).join("share/sheet.html")).unwrap();
    let key = std::fs::read_to_string(f.review_dir(&id).join("key.json")).unwrap();
    // What labelers get is `share/`, and it holds the sheet only: the key and the answers by
    // version stay beside it.
    let mut shared: Vec<String> = std::fs::read_dir(f.review_dir(&id).join("share"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    shared.sort();
    assert_eq!(shared, ["sheet.csv", "sheet.html"]);
    assert!(f.review_dir(&id).join("answers.json").exists());
    assert!(
        out.contains("hand labelers the folder") && out.contains("share"),
        "{out}"
    );
    for text in [&csv, &html] {
        for hint in [
            "v1",
            "v2",
            "\"sides\"",
            "baseline",
            "canary",
            "prompt_sha",
            "e-1",
        ] {
            assert!(!text.contains(hint), "{hint} in the sheet");
        }
        assert!(!text.contains(&key));
    }
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains(" src="));
    let sides = canary_side(&f, &id);
    let a = sides.values().filter(|s| **s == "A").count();
    assert!(a == 20 || a == 21, "{a} of 41 on A");
    // The key really says where each version's answer is.
    for (item, ans_a, ans_b) in sheet_rows(&f, &id) {
        let canary_text = if sides[&item] == "A" { &ans_a } else { &ans_b };
        assert!(canary_text.starts_with("Answer step by step"), "{item}");
    }
}

/// Writes a filled sheet: `prefs` gives the canary's fate per item in sheet order
/// ('w' win, 'l' loss, 't' tie), both answers good.
fn fill(f: &Fixture, id: &str, name: &str, labeler: &str, prefs: &str) -> PathBuf {
    let sides = canary_side(f, id);
    let path = f.path(name);
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record([
        "item",
        "input",
        "answer_a",
        "answer_b",
        "label_a",
        "label_b",
        "preferred",
        "note",
        "labeler",
    ])
    .unwrap();
    for ((item, a, b), p) in sheet_rows(f, id)
        .into_iter()
        .zip(prefs.chars().chain(std::iter::repeat(' ')))
    {
        let other = |s: &str| if s == "A" { "B" } else { "A" };
        let pref = match p {
            'w' => sides[&item],
            'l' => other(sides[&item]),
            't' => "tie",
            _ => "",
        };
        let (la, lb) = if pref.is_empty() {
            ("", "")
        } else {
            ("good", "good")
        };
        let item = item.to_string();
        w.write_record([item.as_str(), "in", &a, &b, la, lb, pref, "", labeler])
            .unwrap();
    }
    w.flush().unwrap();
    path
}

#[test]
fn score_decides_with_sign_test_and_kappa_and_records_rows() {
    let f = Fixture::new();
    let id = f.sample(45, 21);
    f.run_example(&id);
    f.ok(&["review", "sheet", "--id", &id]);
    let score = |files: &[&Path], extra: &[&str], code: i32| -> Value {
        let mut a = vec![
            "review", "score", "--id", &id, "--format", "json", "--labels",
        ];
        a.extend(files.iter().map(|p| p.to_str().unwrap()));
        a.extend(extra);
        serde_json::from_str(&f.expect(&a, code).0).unwrap()
    };
    // 14 wins, 4 losses, 2 ties: scipy.stats.binomtest(14, 18, 0.5).pvalue = 0.0308838.
    let l1 = fill(
        &f,
        &id,
        "ann.csv",
        "ann",
        &format!("{}{}tt", "w".repeat(14), "l".repeat(4)),
    );
    let s = score(&[&l1], &[], 0);
    assert_eq!(s["verdict"], "ship");
    assert_eq!(
        (s["wins"].as_u64(), s["losses"].as_u64(), s["ties"].as_u64()),
        (Some(14), Some(4), Some(2))
    );
    assert!(
        (s["sign_test_p"].as_f64().unwrap() - 0.0308838).abs() < 1e-6,
        "{s}"
    );
    assert_eq!(s["kappa"], Value::Null);
    assert_eq!(s["canary"]["good_rate"], 1.0);
    let sql = f.ok(&[
        "sql",
        "SELECT COUNT(*) AS n, MIN(labeler) AS who FROM llm_reviews WHERE review_id = $id",
        "--param",
        &format!("id={id}"),
        "--format",
        "csv",
    ]);
    assert_eq!(sql.trim(), "n,who\n20,ann");

    // 19 pairs: not enough (exit 3). A losing canary: do not ship, unless the trade-off is written.
    let few = fill(&f, &id, "few.csv", "ann", &"w".repeat(19));
    assert_eq!(score(&[&few], &[], 3)["verdict"], "not enough labels");
    let lose = fill(
        &f,
        &id,
        "lose.csv",
        "ann",
        &format!("{}{}", "w".repeat(10), "l".repeat(12)),
    );
    assert_eq!(score(&[&lose], &[], 1)["verdict"], "do not ship");
    let s = score(&[&lose], &["--accept-tradeoff", "half the tokens"], 0);
    assert_eq!(s["verdict"], "ship");
    assert!(s["reason"].as_str().unwrap().contains("half the tokens"));

    // Two labelers over 45 items with the confusion table [[20,2,1],[3,10,1],[1,1,6]] of
    // (canary, baseline, tie): statsmodels' cohens_kappa gives 0.669927.
    let table = [[20, 2, 1], [3, 10, 1], [1, 1, 6]];
    let cat = ['w', 'l', 't'];
    let (mut p1, mut p2) = (String::new(), String::new());
    for (i, row) in table.iter().enumerate() {
        for (j, n) in row.iter().enumerate() {
            for _ in 0..*n {
                p1.push(cat[i]);
                p2.push(cat[j]);
            }
        }
    }
    let k1 = fill(&f, &id, "k1.csv", "ann", &p1);
    let k2 = fill(&f, &id, "k2.csv", "bob", &p2);
    // By item majority: 22 wins, 12 losses, 11 ties; p = 0.12, so no ship.
    let s = score(&[&k1, &k2], &[], 1);
    assert_eq!(
        (s["wins"].as_u64(), s["losses"].as_u64()),
        (Some(22), Some(12))
    );
    assert!(
        (s["kappa"].as_f64().unwrap() - 0.669927).abs() < 1e-6,
        "{}",
        s["kappa"]
    );
    // Scored five times: the table holds the last scoring's rows only (45 items, 2 labelers),
    // replaced in one commit each time.
    let sql = f.ok(&[
        "sql",
        "SELECT COUNT(*) AS n, COUNT(DISTINCT labeler) AS who FROM llm_reviews WHERE review_id = $id",
        "--param",
        &format!("id={id}"),
        "--format",
        "csv",
    ]);
    assert_eq!(sql.trim(), "n,who\n90,2");
    let files = f.ok(&["lake", "files", "--table", "llm_reviews", "--json"]);
    assert_eq!(files.lines().count(), 1, "{files}");
    assert_eq!(common::delta_rs_count(&f.lake, "llm_reviews"), 90);
}

#[test]
fn bad_labels_files_name_file_and_line_and_change_nothing() {
    let f = Fixture::new();
    let id = f.sample(25, 2);
    f.run_example(&id);
    f.ok(&["review", "sheet", "--id", &id]);
    let good = fill(&f, &id, "good.csv", "ann", &"w".repeat(25));
    let write = |name: &str, text: &str| {
        let p = f.path(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    };
    let head = "item,input,answer_a,answer_b,label_a,label_b,preferred,note,labeler\n";
    let cases = [
        (
            write(
                "unknown.csv",
                &format!("{head}1,i,a,b,good,bad,A,,bob\n999,i,a,b,good,bad,A,,bob\n"),
            ),
            "unknown.csv:3: item 999 is not in review",
        ),
        (
            write("label.csv", &format!("{head}1,i,a,b,fine,bad,A,,bob\n")),
            "label.csv:2: label_a is \"fine\", not good or bad",
        ),
        (
            write(
                "column.csv",
                "item,input,answer_a,answer_b,label_a,label_b,note,labeler\n1,i,a,b,good,bad,,bob\n",
            ),
            "column.csv:1: missing column \"preferred\"",
        ),
        (
            write(
                "twice.csv",
                &format!("{head}1,i,a,b,good,bad,A,,bob\n1,i,a,b,good,bad,B,,bob\n"),
            ),
            "twice.csv:3: labeler \"bob\" labeled item 1 differently at",
        ),
        // What the sheet page exports: CRLF line ends. Line 3 is line 3.
        (
            write(
                "crlf.csv",
                &format!("{head}1,i,a,b,good,bad,A,,bob\n2,i,a,b,good,meh,A,,bob\n")
                    .replace('\n', "\r\n"),
            ),
            "crlf.csv:3: label_b is \"meh\", not good or bad",
        ),
    ];
    for (path, msg) in &cases {
        // A good file first: nothing of it may be recorded when a later file is bad.
        let out = f.run(&[
            "review",
            "score",
            "--id",
            &id,
            "--labels",
            good.to_str().unwrap(),
            path.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        // Bad input is 2, never the 1 of "do not ship".
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(msg), "want {msg:?} in {err}");
        assert!(!f.lake.join("llm_reviews").exists(), "nothing recorded");
    }
    // Rows labeled in part are skipped and listed, never a reason to refuse the file.
    let half = write(
        "half.csv",
        &format!("{head}1,i,a,b,good,,A,,bob\n2,i,a,b,good,bad,,,bob\n3,i,a,b,,,,,bob\n"),
    );
    let out = f.run(&[
        "review",
        "score",
        "--id",
        &id,
        "--labels",
        good.to_str().unwrap(),
        half.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["unlabeled_rows"], 1, "{s}");
    let half_rows: Vec<&str> = s["half_labeled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(half_rows.len(), 2, "{s}");
    assert!(
        half_rows[0].ends_with("half.csv:2 (item 1)"),
        "{half_rows:?}"
    );
    assert!(
        half_rows[1].ends_with("half.csv:3 (item 2)"),
        "{half_rows:?}"
    );
}
