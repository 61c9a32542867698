//! The blind sheet (`sheet.html`) in a real headless Chromium, driven over the DevTools
//! protocol on a pipe (`--remote-debugging-pipe`: no port, no network): load a sheet the binary
//! wrote, label every item with the keyboard shortcuts, reload and find the progress kept,
//! export the CSV through the page's own button shortcut, and score the exported file with
//! `promptgate review score`.
//!
//! Chromium comes from the distribution (`./dev test` installs Debian's `chromium`); without it
//! this test fails, saying how to install it. Set `PROMPTGATE_SCREENSHOTS=DIR` to keep the
//! screenshots it takes (PNG); `PROMPTGATE_CHROMIUM` points at another Chromium binary.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_promptgate"))
}

/// How long any one wait on the browser may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// A Chromium process and a DevTools session on its one page.
struct Browser {
    child: Child,
    to_browser: std::fs::File,
    from_browser: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Events received while waiting for replies.
    events: Vec<Value>,
    /// An empty page of the same (file://) origin, opened in a second tab to read what the
    /// browser process holds of the origin's localStorage.
    blank: PathBuf,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn chromium() -> PathBuf {
        let path = std::env::var_os("PROMPTGATE_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        assert!(
            path.exists(),
            "Chromium is missing at {}: this test needs a real browser. `./dev test` installs \
             Debian's package (as root: `DEBIAN_FRONTEND=noninteractive apt-get install -y \
             --no-install-recommends chromium`), or set PROMPTGATE_CHROMIUM to a Chromium binary",
            path.display()
        );
        path
    }

    fn launch(profile: &Path, downloads: &Path) -> Browser {
        // fd 3: commands to the browser; fd 4: replies and events from it.
        let (cmd_read, cmd_write) = pipe();
        let (resp_read, resp_write) = pipe();
        let (cr, rw) = (cmd_read.as_raw_fd(), resp_write.as_raw_fd());
        let mut c = Command::new(Self::chromium());
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            "--window-size=1280,900",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: between fork and exec this only calls dup/dup2 (async-signal-safe); moving
        // both ends above 4 first keeps one dup2 from closing the other's source.
        unsafe {
            c.pre_exec(move || {
                let a = libc::fcntl(cr, libc::F_DUPFD, 10);
                let b = libc::fcntl(rw, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("start chromium");
        drop(cmd_read);
        drop(resp_write);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut reader = std::fs::File::from(resp_read);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..end])
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to_browser: std::fs::File::from(cmd_write),
            from_browser: rx,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
            blank: profile.with_file_name("blank.html"),
        };
        std::fs::write(&b.blank, "<!doctype html><title>blank</title>").unwrap();
        b.call_browser(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": downloads, "eventsEnabled": true}),
        );
        let targets = b.call_browser("Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .unwrap_or_else(|| panic!("no page target: {targets}"))["targetId"]
            .clone();
        let attached = b.call_browser(
            "Target.attachToTarget",
            json!({"targetId": page, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b.call("Network.enable", json!({}));
        b
    }

    /// Every URL the page requested so far (events that arrived while waiting for replies,
    /// and any still queued).
    fn requested_urls(&mut self) -> Vec<String> {
        while let Ok(v) = self.from_browser.try_recv() {
            self.events.push(v);
        }
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_string))
            .collect()
    }

    fn send(&mut self, method: &str, params: Value, session: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if session {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("{method}: the browser's pipe closed: {e}"));
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_browser.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    if let Some(err) = v.get("error") {
                        panic!("{method} failed: {err}");
                    }
                    return v["result"].clone();
                }
                Ok(v) => self.events.push(v),
                Err(RecvTimeoutError::Timeout) => panic!("{method}: no reply within {WAIT:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("{method}: the browser exited"),
            }
        }
    }
    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, false)
    }
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("{expr}: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in the page.
    fn wait_for(&mut self, expr: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.eval(expr) == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {expr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for("document.readyState === 'complete' && !!document.getElementById('done')");
    }

    /// Waits until the browser's own copy of the page's localStorage (what a reloaded page
    /// reads) holds what the page wrote: the page's writes reach it asynchronously, and a
    /// reload that outruns them starts from older progress (seen once in five runs).
    fn wait_for_storage(&mut self) {
        const ENTRIES: &str = "JSON.stringify(Object.entries(localStorage).sort())";
        let page = self.eval(ENTRIES);
        // What a reloaded page reads is the browser process's copy, which the page's writes
        // reach asynchronously. Another renderer of the same origin reads that copy: a second
        // tab on an empty page (which writes nothing), polled until it sees the page's entries.
        let url = format!("file://{}", self.blank.display());
        let target =
            self.call_browser("Target.createTarget", json!({"url": url}))["targetId"].clone();
        let other = self.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        let page_session = std::mem::replace(&mut self.session, other);
        self.wait_for("document.readyState === 'complete'");
        let deadline = Instant::now() + WAIT;
        while self.eval(ENTRIES) != page {
            assert!(
                Instant::now() < deadline,
                "the browser never held the page's localStorage"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.session = page_session;
        self.call_browser("Target.closeTarget", json!({"targetId": target}));
    }

    fn reload(&mut self) {
        self.wait_for_storage();
        self.eval("window.__before_reload = true");
        self.call("Page.reload", json!({}));
        self.wait_for(
            "document.readyState === 'complete' && window.__before_reload === undefined && !!document.getElementById('done')",
        );
    }

    /// Presses one key as a person would (keydown with its text, keyup).
    fn key(&mut self, key: &str) {
        let (code, vk, text) = match key {
            "Enter" => ("Enter".to_string(), 13, "\r".to_string()),
            k if k.len() == 1 => {
                let c = k.chars().next().unwrap();
                let code = if c.is_ascii_digit() {
                    format!("Digit{c}")
                } else {
                    format!("Key{}", c.to_ascii_uppercase())
                };
                (code, c.to_ascii_uppercase() as i64, k.to_string())
            }
            k => panic!("no key {k}"),
        };
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk, "text": text}),
        );
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": vk}),
        );
    }

    /// Types text into the focused element, key by key.
    fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": "keyDown", "key": c.to_string(), "text": c.to_string()}),
            );
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": "keyUp", "key": c.to_string()}),
            );
        }
    }

    /// Clicks the middle of the element with this id.
    fn click(&mut self, id: &str) {
        let r = self.eval(&format!(
            "(() => {{ const r = document.getElementById('{id}').getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
        for t in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": t, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    fn text(&mut self, id: &str) -> String {
        self.eval(&format!("document.getElementById('{id}').textContent"))
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A PNG of the viewport, kept in `$PROMPTGATE_SCREENSHOTS` when set.
    fn screenshot(&mut self, name: &str) -> Vec<u8> {
        // Let the progress bar's transition finish.
        std::thread::sleep(Duration::from_millis(300));
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
        if let Some(dir) = std::env::var_os("PROMPTGATE_SCREENSHOTS") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(Path::new(&dir).join(name), &png).unwrap();
        }
        png
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A lake with 40 distinct `support` requests, two template prompts, a sample of 30 answered
/// by both (the offline example runner), and its sheet.
struct Review {
    dir: tempfile::TempDir,
    lake: PathBuf,
    id: String,
}

impl Review {
    fn run(&self, args: &[&str]) -> Output {
        bin()
            .arg("--lake")
            .arg(&self.lake)
            .env_remove("PROMPTGATE_REGISTRY")
            .args(args)
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Answers from the offline example runner.
    fn new() -> Review {
        Review::answered_by(None)
    }

    /// Answers from `runner` (a `sh -c` command; it may use `$REVIEW_WORK`, the work
    /// directory), or the offline example runner.
    fn answered_by(runner: Option<&str>) -> Review {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let mut r = Review {
            dir,
            lake,
            id: String::new(),
        };
        let topics = [
            "reset my password",
            "change the e-mail on my account",
            "get a refund for a double charge",
            "export my invoices as PDF",
            "add a second admin to our team",
        ];
        let mut nd = String::new();
        for i in 0..40u32 {
            let v = json!({
                "event_id": format!("e-{i}"),
                "ts": format!("2026-11-20T10:{i:02}:00Z"),
                "route": "support", "env": "prod",
                "model": if i % 4 == 3 { "m2" } else { "m1" }, "tier": "free",
                "prompt_version": "v1", "duration_ms": 100, "tokens_in": 10, "tokens_out": 5,
                "status": "ok",
                "input": format!("Ticket {i}: how do I {}? I tried twice already.", topics[i as usize % 5]),
            });
            nd.push_str(&v.to_string());
            nd.push('\n');
        }
        let events = r.dir.path().join("events.ndjson");
        std::fs::write(&events, nd).unwrap();
        r.ok(&["ingest", "--no-progress", events.to_str().unwrap()]);
        for (v, text) in [
            ("v1", "Answer briefly: {{input}}"),
            ("v2", "Answer step by step and offer a next step: {{input}}"),
        ] {
            let p = r.dir.path().join(format!("{v}.txt"));
            std::fs::write(&p, text).unwrap();
            r.ok(&[
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
        let out = r.ok(&[
            "review", "sample", "--route", "support", "--env", "prod", "--n", "30", "--seed", "11",
        ]);
        r.id = out.lines().next().unwrap().to_string();
        let runner = match runner {
            Some(cmd) => cmd.replace("$REVIEW_WORK", &r.dir.path().display().to_string()),
            None => format!("{} review example-runner", env!("CARGO_BIN_EXE_promptgate")),
        };
        r.ok(&[
            "review",
            "run",
            "--id",
            &r.id,
            "--baseline",
            "v1",
            "--canary",
            "v2",
            "--runner",
            &runner,
        ]);
        r.ok(&["review", "sheet", "--id", &r.id]);
        r
    }
    /// `review score --format json` of one labels file.
    fn score(&self, labels: &Path) -> Output {
        self.run(&[
            "review",
            "score",
            "--id",
            &self.id,
            "--labels",
            labels.to_str().unwrap(),
            "--format",
            "json",
        ])
    }
    fn review_dir(&self) -> PathBuf {
        self.lake.join("reviews").join(&self.id)
    }
    /// Per item, the side (`A` or `B`) showing the canary, from the key kept apart from the sheet.
    fn canary_side(&self) -> BTreeMap<u64, String> {
        let key: Value =
            serde_json::from_slice(&std::fs::read(self.review_dir().join("key.json")).unwrap())
                .unwrap();
        key["sides"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let side = if v[0] == "v2" { "A" } else { "B" };
                (k.parse().unwrap(), side.to_string())
            })
            .collect()
    }
}

/// What the labeler decides on the `i`-th item shown (0-based): the canary wins the first 22,
/// loses the next 5, ties the last 3; B is marked bad where the baseline loses on side B.
fn decision(i: usize) -> &'static str {
    match i {
        0..22 => "win",
        22..27 => "loss",
        _ => "tie",
    }
}

/// The text of the file the page downloaded to `path`, once it holds `records` CSV records
/// after its header (a download lands complete once renamed to its final name; answers may
/// span lines).
fn downloaded(path: &Path, records: usize) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        let parsed = csv::Reader::from_reader(t.as_bytes())
            .records()
            .collect::<Result<Vec<_>, _>>()
            .map(|r| r.len());
        if t.ends_with("\r\n") && parsed.as_ref().is_ok_and(|n| *n == records) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "no complete download at {} ({} bytes, {parsed:?} records)",
            path.display(),
            t.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A browser on the review's sheet, downloading into the review's work directory: the browser,
/// that directory and the sheet's URL.
fn open_sheet(review: &Review) -> (Browser, PathBuf, String) {
    let work = review.dir.path();
    let downloads = work.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let mut b = Browser::launch(&work.join("profile"), &downloads);
    let url = format!(
        "file://{}",
        review.review_dir().join("share/sheet.html").display()
    );
    b.open(&url);
    (b, downloads, url)
}

#[test]
fn label_with_the_keyboard_reload_export_and_score() {
    let review = Review::new();
    let sides = review.canary_side();
    assert_eq!(sides.len(), 30);
    let (mut b, downloads, url) = open_sheet(&review);
    assert_eq!(b.text("done"), "0 of 30 labeled");
    assert_eq!(b.text("pos"), "1 / 30");
    let first = b.screenshot("sheet-1-fresh.png");
    assert!(first.len() > 10_000, "a page with content");

    // Label the first 15 items with the keyboard: both answers good (1, 3), the preference
    // (a, b or t), then next (j). The first item gets a note (n, type, Enter).
    let mut shown = Vec::new();
    let label = |b: &mut Browser, i: usize, shown: &mut Vec<u64>| {
        let item: u64 = b
            .text("itemno")
            .trim_start_matches("Item ")
            .parse()
            .unwrap();
        shown.push(item);
        let canary = &sides[&item];
        let pref = match (decision(i), canary.as_str()) {
            ("win", "A") | ("loss", "B") => "a",
            ("win", "B") | ("loss", "A") => "b",
            _ => "t",
        };
        b.key("1");
        b.key("3");
        b.key(pref);
        if i == 0 {
            b.key("n");
            b.type_text("clearer steps, same facts");
            b.key("Enter");
        }
        b.key("j");
    };
    for i in 0..15 {
        label(&mut b, i, &mut shown);
    }
    assert_eq!(b.text("done"), "15 of 30 labeled");
    assert_eq!(b.text("pos"), "16 / 30");

    // A reload keeps the progress (and the position).
    b.reload();
    assert_eq!(b.text("done"), "15 of 30 labeled");
    assert_eq!(b.text("pos"), "16 / 30");
    b.screenshot("sheet-2-after-reload.png");
    // Back on item 1: its labels and note are still there.
    for _ in 0..15 {
        b.key("k");
    }
    assert_eq!(b.text("pos"), "1 / 30");
    assert_eq!(
        b.eval("document.getElementById('note').value"),
        json!("clearer steps, same facts")
    );
    assert_eq!(
        b.eval("document.querySelectorAll('button.on').length"),
        json!(3),
        "A good, B good and the preference are lit"
    );
    // `u` jumps to the next unfinished item: the 16th.
    b.key("u");
    assert_eq!(b.text("pos"), "16 / 30");
    for i in 15..30 {
        label(&mut b, i, &mut shown);
    }
    assert_eq!(b.text("done"), "30 of 30 labeled");
    let distinct: std::collections::BTreeSet<u64> = shown.iter().copied().collect();
    assert_eq!(distinct.len(), 30, "every item was shown once: {shown:?}");

    // Export without a name: an inline notice, not a dialog (a dialog would block the page and
    // this evaluation with it).
    b.key("e");
    assert!(
        b.text("notice")
            .starts_with("Enter your name in the Labeler field"),
        "{}",
        b.text("notice")
    );
    // Export: the labeler's name first (typed into its field), then `e`.
    b.click("labeler");
    b.type_text("ann");
    b.key("Enter");
    b.screenshot("sheet-3-done.png");
    b.key("e");
    // Every item complete: nothing to warn about.
    assert_eq!(b.text("notice"), "");
    let exported = downloads.join("labels-ann.csv");
    let text = downloaded(&exported, 30);
    assert!(
        text.starts_with("item,input,answer_a,answer_b,label_a,label_b,preferred,note,labeler\r\n")
    );
    assert!(text.contains("clearer steps, same facts"));
    // The page is self-contained: it loaded itself (twice) and fetched nothing else.
    let urls = b.requested_urls();
    assert!(urls.iter().filter(|u| **u == url).count() >= 2, "{urls:?}");
    assert!(
        urls.iter()
            .all(|u| u == &url || u.starts_with("blob:") || u.starts_with("data:")),
        "the sheet requested something else: {urls:?}"
    );
    drop(b);

    // Score the exported file.
    let out = review.score(&exported);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["verdict"], "ship");
    assert_eq!(s["pairs"], 30);
    assert_eq!(
        (s["wins"].as_u64(), s["losses"].as_u64(), s["ties"].as_u64()),
        (Some(22), Some(5), Some(3))
    );
    assert_eq!(s["labelers"], json!(["ann"]));
    assert_eq!(s["baseline"]["good"], 30);
    assert_eq!(s["canary"]["good"], 30);
}

/// Answers as a model writes them, from a runner: the baseline's with a 300-character URL, the
/// canary's in Markdown (a heading, a list, a code block, a table) with hostile HTML and links
/// mixed in. The Markdown is rendered and nothing in it runs, links or loads; `m` shows the raw
/// text and back; long tokens wrap: at 1,280 px both answers stand side by side and at 390 px
/// (a phone) they stack, nothing wider than the window and every label button inside it
/// (asserted from element geometry; screenshots kept with `PROMPTGATE_SCREENSHOTS`).
#[test]
fn real_answers_render_safely_wrap_and_keep_the_buttons_in_view() {
    let long = format!("https://docs.example.com/{}", "a1b2c3d4".repeat(35));
    assert!(long.len() >= 300);
    let markdown = "## Reset your password\n\n1. Open **Settings**\n2. Run the command:\n\n\
        ```sh\ncurl -X POST https://api.example.com/v1/password/reset --data-urlencode email=someone\n```\n\n\
        | step | time |\n|---|---|\n| open settings | 1 min |\n| reset | 2 min |\n\n\
        <script>window.pwned = 1</script>\n\n\
        <img src=\"http://127.0.0.1:9/leak.png\" onerror=\"window.pwned = 2\">\n\n\
        [click here](javascript:window.pwned=3) or ![logo](http://127.0.0.1:9/logo.png)\n";
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("v1.md"),
        format!("See {long} for the steps.\n"),
    )
    .unwrap();
    std::fs::write(work.path().join("v2.md"), markdown).unwrap();
    let runner = format!(
        "if grep -q '\"version\":\"v2\"'; then cat {0}/v2.md; else cat {0}/v1.md; fi",
        work.path().display()
    );
    let review = Review::answered_by(Some(&runner));
    let sides = review.canary_side();
    let (mut b, downloads, _) = open_sheet(&review);
    let item: u64 = b
        .text("itemno")
        .trim_start_matches("Item ")
        .parse()
        .unwrap();
    let (md, plain) = if sides[&item] == "A" {
        ("textA", "textB")
    } else {
        ("textB", "textA")
    };

    // Rendered, and inert.
    let r = b.eval(&format!(
        "(() => {{ const el = document.getElementById('{md}'); return {{ \
           h2: (el.querySelector('h2') || {{}}).textContent, \
           items: el.querySelectorAll('ol li').length, \
           code: (el.querySelector('pre code') || {{}}).textContent, \
           cells: el.querySelectorAll('table td').length, \
           strong: (el.querySelector('strong') || {{}}).textContent, \
           dangerous: document.querySelectorAll('.answer img, .answer script, .answer a, .answer iframe, .answer [onerror]').length, \
           pwned: window.pwned === undefined ? null : window.pwned, \
           text: el.textContent }}; }})()"
    ));
    assert_eq!(r["h2"], "Reset your password", "{r}");
    assert_eq!(r["items"], 2, "{r}");
    assert!(
        r["code"].as_str().unwrap().starts_with("curl -X POST"),
        "{r}"
    );
    assert_eq!(r["cells"], 4, "{r}");
    assert_eq!(r["strong"], "Settings", "{r}");
    assert_eq!(r["dangerous"], 0, "{r}");
    assert_eq!(r["pwned"], Value::Null, "{r}");
    let text = r["text"].as_str().unwrap();
    for shown in [
        "<script>window.pwned = 1</script>",
        "click here (javascript:window.pwned=3)",
        "[image: logo] (http://127.0.0.1:9/logo.png)",
    ] {
        assert!(text.contains(shown), "{shown:?} in {text}");
    }
    // Raw text and back, with the `m` key.
    b.key("m");
    let raw = b.eval(&format!(
        "[document.getElementById('{md}').textContent, document.querySelectorAll('#{md} h2').length]"
    ));
    assert_eq!(
        raw[0].as_str().unwrap().trim_end(),
        markdown.trim_end(),
        "{raw}"
    );
    assert_eq!(raw[1], 0, "{raw}");
    b.key("m");
    assert_eq!(
        b.eval(&format!("document.querySelectorAll('#{md} h2').length")),
        1
    );
    assert!(b.text(plain).contains(&long));

    for (width, side_by_side) in [(1280, true), (390, false)] {
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 500}),
        );
        let g = b.eval(
            "(() => { const r = id => document.getElementById(id).getBoundingClientRect(); \
             const buttons = [...document.querySelectorAll('.answer button')].map(x => x.getBoundingClientRect()); \
             return { inner: window.innerWidth, scroll: document.documentElement.scrollWidth, \
               a: [r('boxA').left, r('boxA').top, r('boxA').right, r('boxA').bottom], \
               b: [r('boxB').left, r('boxB').top, r('boxB').right, r('boxB').bottom], \
               buttons: buttons.map(x => [x.left, x.right]) }; })()",
        );
        let inner = g["inner"].as_f64().unwrap();
        assert_eq!(inner, width as f64, "{g}");
        assert!(
            g["scroll"].as_f64().unwrap() <= inner,
            "{width} px: wider than the window: {g}"
        );
        let buttons = g["buttons"].as_array().unwrap();
        assert_eq!(buttons.len(), 4, "{g}");
        for x in buttons {
            let (l, r) = (x[0].as_f64().unwrap(), x[1].as_f64().unwrap());
            assert!(
                l >= 0.0 && r <= inner,
                "{width} px: a label button out of view: {g}"
            );
        }
        let (a, bb) = (&g["a"], &g["b"]);
        let f = |v: &Value, i: usize| v[i].as_f64().unwrap();
        if side_by_side {
            assert_eq!(f(a, 1), f(bb, 1), "{width} px: side by side: {g}");
            // Neither answer squeezed: the long one no longer takes the other's width.
            let (wa, wb) = (f(a, 2) - f(a, 0), f(bb, 2) - f(bb, 0));
            assert!((wa - wb).abs() < 2.0 && wa > 400.0, "{width} px: {g}");
        } else {
            assert!(f(bb, 1) >= f(a, 3), "{width} px: stacked: {g}");
        }
        b.screenshot(&format!("sheet-real-{width}.png"));
    }
    // Nothing was requested from the network: every URL the page asked for is the sheet's own.
    let urls = b.requested_urls();
    assert!(
        urls.iter()
            .all(|u| u.starts_with("file://") || u.starts_with("blob:")),
        "{urls:?}"
    );

    // Partial work exports, and the page says which items scoring will skip.
    b.call("Emulation.clearDeviceMetricsOverride", json!({}));
    b.click("labeler");
    b.type_text("bo");
    b.key("Enter");
    b.key("1");
    b.key("e");
    assert_eq!(
        b.text("notice"),
        format!(
            "Exported. 1 half-labeled item ({item}) will be skipped when scored: label both answers and a preference to count it."
        )
    );
    // Scoring takes the file and counts the half-labeled item, naming it, instead of refusing.
    let exported = downloads.join("labels-bo.csv");
    downloaded(&exported, 30);
    drop(b);
    let out = review.score(&exported);
    let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(s["pairs"], 0, "{s}");
    let half = s["half_labeled"].as_array().unwrap();
    assert_eq!(half.len(), 1, "{s}");
    assert!(
        half[0]
            .as_str()
            .unwrap()
            .ends_with(&format!("(item {item})")),
        "{s}"
    );
}

/// The timeline's page (`timeline --format html`) in the same browser: four charts, one line per
/// version, the registry's change marked and listed; nothing requested but the page itself;
/// nothing wider than the window at 1,280 and 390 px (screenshots kept with
/// `PROMPTGATE_SCREENSHOTS`).
#[test]
fn the_timeline_page_draws_its_charts_and_fits_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let run = |args: &[&str]| {
        let out = bin()
            .arg("--lake")
            .arg(&lake)
            .env_remove("PROMPTGATE_REGISTRY")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Six hours of traffic up to now, 30% on v2 with four times the flagged rate.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = format!("@{}", now_s - 6 * 3600);
    let start = String::from_utf8(
        Command::new("date")
            .args(["-u", "-d", &start, "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let events = run(&[
        "gen",
        "--events",
        "6000",
        "--days",
        "1",
        "--start",
        start.trim(),
        "--routes",
        "support",
        "--canary-share",
        "0.3",
        "--regress-flagged",
        "4",
    ]);
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events).unwrap();
    run(&["ingest", "--no-progress", file.to_str().unwrap()]);
    for v in ["v1", "v2"] {
        let p = dir.path().join(v);
        std::fs::write(&p, format!("prompt {v}")).unwrap();
        run(&[
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
    run(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v1",
        "--why",
        "<b>pinned</b>",
    ]);
    let page = dir.path().join("timeline.html");
    run(&[
        "timeline",
        "--route",
        "support",
        "--since",
        "6h",
        "--bucket",
        "15m",
        "--format",
        "html",
        "--out",
        page.to_str().unwrap(),
    ]);

    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let mut b = Browser::launch(&dir.path().join("profile"), &downloads);
    let url = format!("file://{}", page.display());
    b.call("Page.navigate", json!({"url": url}));
    b.wait_for("document.readyState === 'complete' && document.querySelectorAll('svg').length > 0");
    let r = b.eval(
        "(() => ({ svgs: document.querySelectorAll('svg').length, \
           lines: document.querySelectorAll('svg polyline').length, \
           marks: document.querySelectorAll('svg line[stroke-dasharray]').length, \
           changes: [...document.querySelectorAll('ol li')].map(li => li.textContent), \
           bold: document.querySelectorAll('li b').length }))()",
    );
    assert_eq!(r["svgs"], 4, "{r}");
    assert_eq!(r["lines"], 8, "{r}");
    assert_eq!(r["marks"], 4, "{r}");
    assert_eq!(r["bold"], 0, "the reason is text, not markup: {r}");
    let changes = r["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{r}");
    assert!(
        changes[0]
            .as_str()
            .unwrap()
            .contains("set-default -> v1 (by ")
            && changes[0].as_str().unwrap().contains(": <b>pinned</b>)"),
        "{r}"
    );
    for width in [1280, 390] {
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 500}),
        );
        let g = b.eval(
            "(() => ({ inner: window.innerWidth, scroll: document.documentElement.scrollWidth, \
               widths: [...document.querySelectorAll('svg')].map(s => s.getBoundingClientRect().right) }))()",
        );
        let inner = g["inner"].as_f64().unwrap();
        assert!(g["scroll"].as_f64().unwrap() <= inner, "{width} px: {g}");
        for right in g["widths"].as_array().unwrap() {
            assert!(
                right.as_f64().unwrap() <= inner,
                "{width} px: a chart out of view: {g}"
            );
        }
        b.screenshot(&format!("timeline-{width}.png"));
    }
    let urls = b.requested_urls();
    assert!(urls.iter().all(|u| *u == url), "{urls:?}");
}
