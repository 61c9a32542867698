//! The accept loop of `serve`: every connection under a limit and a clock, and a shutdown with
//! a deadline.
//!
//! - **Header timeout.** A connection must deliver a whole request head within
//!   [`Limits::header_timeout`] of being opened or of its previous answer, or it is closed:
//!   hyper's header-read timer starts as soon as the connection waits for a request, so one
//!   clock cuts both clients that send headers a byte at a time and idle keep-alive
//!   connections.
//! - **Connection cap.** At most [`Limits::max_connections`] connections are served at once.
//!   One more is answered `503` with the JSON error body and `Retry-After`, then closed; the
//!   server never accepts until it runs out of file descriptors.
//! - **Drain.** On shutdown the listener closes, idle connections close at once, requests in
//!   flight finish, and whatever is still open after [`Limits::drain_timeout`] is dropped.
//! - **One error shape.** hyper answers a request it cannot parse (bad request line `400`, URI
//!   too long `414`, header section too large `431`) before any handler runs, with an empty
//!   body; [`JsonErrors`] gives those answers the same `{"error", "hint"}` body as the rest.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// How `serve` treats connections (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections still open at the drain deadline, and dropped.
    pub dropped: usize,
    /// Connections answered 503 because the cap was reached, over the server's life.
    pub shed: u64,
}

/// Connections being refused at once: each gets up to a second to take its 503, then (if it sent
/// a request) a quarter of one for the rest of it to be read. Past this many, a refused
/// connection is closed without an answer.
const MAX_SHEDDING: usize = 256;
const SHED_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
const SHED_LINGER: Duration = Duration::from_millis(250);

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let open = Arc::new(Semaphore::new(max));
    let shedding = Arc::new(Semaphore::new(MAX_SHEDDING));
    let shed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let service = TowerToHyperService::new(app);
    let mut last_accept_error = None::<std::time::Instant>;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or a connection reset before it was accepted: say so (at
                // most once a second) and try again shortly, without spinning.
                if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    super::log(&format!("cannot accept a connection: {e}"));
                    last_accept_error = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = open.clone().try_acquire_owned() else {
            shed.fetch_add(1, Ordering::Relaxed);
            if let Ok(p) = shedding.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _p = p;
                    refuse(stream, max).await;
                });
            }
            continue;
        };
        let conn = http.serve_connection(JsonErrors::new(TokioIo::new(stream)), service.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            // The watch guard is dropped inside the branch's future (it is not Send).
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let dropped = match tokio::time::timeout(limits.drain_timeout, open.acquire_many(all)).await {
        Ok(_) => 0,
        Err(_) => max - open.available_permits(),
    };
    Stopped {
        dropped,
        shed: shed.load(Ordering::Relaxed),
    }
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = error_body(
        &format!("too many connections: this server serves at most {max} at once"),
        "retry shortly, reuse connections (keep-alive), or raise serve --max-connections",
    );
    let answer = response(503, "Service Unavailable", &body, &[("retry-after", "1")]);
    let written = tokio::time::timeout(SHED_WRITE_TIMEOUT, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    // Closing with the client's request unread would make the kernel reset the connection, and
    // the client could lose the answer: read what it sent. A client that sent nothing (an idle
    // connection) is closed at once, so a flood of them is answered as fast as it arrives.
    let mut sink = [0u8; 1024];
    let mut sent = false;
    while let Ok(n) = stream.try_read(&mut sink) {
        if n == 0 {
            return;
        }
        sent = true;
    }
    if sent {
        let _ = tokio::time::timeout(SHED_LINGER, async {
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
    }
}

fn error_body(error: &str, hint: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"error": error, "hint": hint}))
        .expect("a JSON object serializes")
}

/// A whole HTTP/1.1 response that closes the connection.
fn response(status: u16, reason: &str, body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// The JSON answer for hyper's own bodiless answer to a request it could not parse, if `head`
/// is one: a status line of 400, 414 or 431, `content-length: 0`, and nothing after the head.
fn json_for_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() > 1024 || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let (status, rest) = text.strip_prefix("HTTP/1.1 ")?.split_at_checked(3)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let bodiless = text
        .split("\r\n")
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"));
    if !bodiless {
        return None;
    }
    let (reason, error, hint) = match status {
        "400" => (
            "Bad Request",
            "the request is not valid HTTP/1.1",
            "send a request line `GET /path HTTP/1.1` and well-formed headers",
        ),
        "414" => (
            "URI Too Long",
            "the request's URI is too long",
            "names and parameters are at most a few hundred bytes; check the client",
        ),
        "431" => (
            "Request Header Fields Too Large",
            "the request's header section is too large",
            "send fewer or smaller headers",
        ),
        _ => return None,
    };
    Some(response(
        status.parse().ok()?,
        reason,
        &error_body(error, hint),
        &[],
    ))
}

/// A connection's IO that gives hyper's bodiless parse-error answers a JSON body (see
/// [`json_for_parse_error`]); everything else passes through untouched. It declares no
/// vectored writes, so hyper hands it each answer's head in one contiguous buffer.
pub struct JsonErrors<I> {
    inner: I,
    /// A replacement being written: its bytes, how many are written, and the length of the
    /// buffer it replaces (reported as written once the replacement is).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<I> JsonErrors<I> {
    pub fn new(inner: I) -> Self {
        JsonErrors {
            inner,
            replacing: None,
        }
    }
}

impl<I: Read + Unpin> Read for JsonErrors<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin> Write for JsonErrors<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            match json_for_parse_error(buf) {
                Some(answer) => this.replacing = Some((answer, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        let (answer, done, replaced) = this.replacing.as_mut().expect("set above");
        while *done < answer.len() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &answer[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        let replaced = *replaced;
        this.replacing = None;
        Poll::Ready(Ok(replaced))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_parse_errors_are_rewritten() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 10:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(json_for_parse_error(head).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("header section"));
        assert!(v["hint"].is_string());
        for not_it in [
            // A handler's answer: it has a body.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 17\r\n\r\n{\"error\":\"x\"}   "[..],
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n"[..],
            // Another status, or not the start of an answer.
            &b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"[..],
            &b"content-length: 0\r\n\r\n"[..],
        ] {
            assert!(json_for_parse_error(not_it).is_none(), "{not_it:?}");
        }
    }
}
