//! Getting each version's answer to each item from a user's command.
//!
//! The command runs once per item and version through `sh -c`, with one JSON object on its
//! stdin (`item`, `route`, `version`, `prompt`, `input`); its whole stdout is the answer. A
//! non-zero exit, an empty answer or a timeout is recorded on the item, and the batch goes on.
//! Each command runs in its own process group, so a timeout kills the command and whatever it
//! started.

use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a runner is asked.
#[derive(Debug, Clone, Serialize)]
pub struct RunRequest {
    pub item: u32,
    pub route: String,
    pub version: String,
    pub prompt: String,
    pub input: String,
}

/// One run's outcome: the answer, or why there is none.
pub type RunOutcome = std::result::Result<String, String>;

/// Runs `command` for one request, killing it after `timeout`.
pub async fn run_one(command: &str, req: &RunRequest, timeout: Duration) -> RunOutcome {
    let payload = serde_json::to_vec(req).map_err(|e| format!("cannot encode request: {e}"))?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the runner: {e}"))?;
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let work = async {
        let feed = async {
            if let Some(mut s) = stdin.take() {
                // A runner that does not read its stdin is fine: ignore a broken pipe.
                let _ = s.write_all(&payload).await;
                let _ = s.shutdown().await;
            }
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        tokio::join!(feed, read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) on the process group we created; no memory is touched.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            Err(format!("timed out after {}", format_duration(timeout)))
        }
        Ok((status, out, err)) => {
            let status = status.map_err(|e| format!("cannot wait for the runner: {e}"))?;
            if !status.success() {
                let last = String::from_utf8_lossy(&err)
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| format!(": {}", l.trim()))
                    .unwrap_or_default();
                let code = status
                    .code()
                    .map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}"));
                return Err(format!("runner failed ({code}){last}"));
            }
            let answer = String::from_utf8(out)
                .map_err(|_| "the runner's answer is not UTF-8".to_string())?;
            if answer.trim().is_empty() {
                return Err("the runner printed no answer".to_string());
            }
            Ok(answer.trim_end_matches(['\n', '\r']).to_string())
        }
    }
}

/// `60s`, `2m`, `1500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 60s, 2m, 500ms)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("{s:?} is not a duration (e.g. 60s, 2m, 500ms)")),
    };
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{s:?} is out of range (more than 0, at most a day)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The example runner (`promptgate review example-runner`): answers offline, from the prompt
/// and the input alone, so the whole review flow can be tried without a model or a key.
///
/// The prompt is a template: `{{input}}` is replaced by the request's input. A prompt without
/// it answers with its first line followed by the input. The version name is never used, so
/// answers do not give the version away.
///
/// ```
/// use promptgate::review::runner::example_answer;
/// assert_eq!(example_answer("Short: {{input}}", "why?"), "Short: why?");
/// assert_eq!(example_answer("Be kind.\nMore", "hi"), "Be kind. hi");
/// ```
pub fn example_answer(prompt: &str, input: &str) -> String {
    if prompt.contains("{{input}}") {
        prompt.replace("{{input}}", input).trim().to_string()
    } else {
        let first = prompt.lines().next().unwrap_or("").trim();
        format!("{first} {input}").trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
