//! A tiny HTTP/1.1 server for `GET /metrics` and `GET /snapshot`, and the matching client.
//!
//! The server answers one request per connection (`Connection: close`): requests are bounded in
//! size ([`MAX_REQUEST`]) and time ([`READ_TIMEOUT`]), the answer (and the close) in time
//! ([`WRITE_TIMEOUT`]), so a client that never reads holds its slot no longer than that. At most
//! [`MAX_CONNECTIONS`] are served at once (more are closed unanswered), unknown paths get 404
//! and other methods 405. An accept loop out of file descriptors pauses
//! ([`AcceptBackoff`]) instead of spinning. The client reads at most [`MAX_RESPONSE`] bytes and
//! needs a `200` answer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dndm::remote::backoff::{AcceptAction, AcceptBackoff};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest request head accepted (request line plus headers), in bytes.
const MAX_REQUEST: usize = 8 * 1024;

/// How long a client may take to send its request (and the client [`get`] to get its answer).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to receive the answer, the close included; then the connection
/// is dropped and its slot freed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; further ones are closed without an answer.
const MAX_CONNECTIONS: usize = 32;

/// Largest response body the client accepts, in bytes.
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// A response body with its content type.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) content_type: &'static str,
    pub(crate) text: String,
}

/// Answers a path with a body, or `None` for 404.
pub(crate) type Handler = Arc<dyn Fn(&str) -> Option<Body> + Send + Sync>;

/// How long a connection may take to send its request and to receive its answer.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    read: Duration,
    write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            read: READ_TIMEOUT,
            write: WRITE_TIMEOUT,
        }
    }
}

/// Serves `listener` until `cancel` fires; connection tasks run on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Handler,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    serve_with(listener, handler, Timeouts::default(), cancel, tracker).await;
}

async fn serve_with(
    listener: TcpListener,
    handler: Handler,
    timeouts: Timeouts,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut pauses = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                if let AcceptAction::Pause { delay, first } = pauses.handle_error(&error) {
                    if first {
                        tracing::warn!(
                            %error,
                            pause = ?delay,
                            "metrics endpoint: accept failed; pausing until it accepts again \
                             (not logged again until then)"
                        );
                    }
                    #[allow(clippy::disallowed_methods)]
                    // The pause is the point: accepting at once would fail at once.
                    let wait = tokio::time::sleep(delay);
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return,
                        () = wait => {}
                    }
                }
                continue;
            }
        };
        if let Some(errors) = pauses.handle_accept() {
            tracing::info!(errors, "metrics endpoint: accepting connections again");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "metrics endpoint: too many connections; closing one");
            continue;
        };
        let handler = handler.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _slot = slot;
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                result = answer(stream, &handler, timeouts) => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "metrics endpoint: request failed");
                    }
                }
            }
        });
    }
}

/// Reads one request and writes its answer, each within its timeout.
async fn answer(
    mut stream: TcpStream,
    handler: &Handler,
    timeouts: Timeouts,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(timeouts.read, read_head(&mut stream)).await;
    let (status, content_type, body) = match head {
        Ok(Ok(Some(head))) => route(&head, handler),
        Ok(Ok(None)) => (431, "text/plain", "request too large\n".into()),
        Ok(Err(e)) => return Err(e),
        Err(_) => (408, "text/plain", "request timeout\n".into()),
    };
    let write = respond(&mut stream, status, content_type, &body);
    tokio::time::timeout(timeouts.write, write)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not taken in time")
        })?
}

/// The answer to a request head: status, content type and body.
fn route(head: &str, handler: &Handler) -> (u16, &'static str, String) {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return (400, "text/plain", "bad request\n".into());
    };
    if !version.starts_with("HTTP/1.") {
        return (400, "text/plain", "bad request\n".into());
    }
    if method != "GET" {
        return (405, "text/plain", "only GET is served\n".into());
    }
    let path = target.split('?').next().unwrap_or_default();
    match handler(path) {
        Some(body) => (200, body.content_type, body.text),
        None => (
            404,
            "text/plain",
            "not found: try /metrics or /snapshot\n".into(),
        ),
    }
}

/// Reads until the blank line ending the request head; `None` when it exceeds [`MAX_REQUEST`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

/// Writes a complete response and closes the write side.
async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// `GET base + path` where `base` is `http://host:port` (or just `host:port`); returns the body
/// of a `200` answer.
///
/// # Errors
/// When the address is not `http://host:port`, the connection fails, the answer is not `200`,
/// or it takes longer than [`READ_TIMEOUT`].
pub(crate) async fn get(base: &str, path: &str) -> anyhow::Result<String> {
    let rest = base.strip_prefix("http://").unwrap_or(base);
    if base.starts_with("https://") {
        bail!("{base}: https is not supported; the node serves plain http");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || !authority.contains(':') {
        bail!("{base:?} is not an http://host:port address");
    }
    let exchange = async {
        let mut stream = TcpStream::connect(authority)
            .await
            .with_context(|| format!("cannot connect to {authority}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(READ_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{authority} did not answer within {READ_TIMEOUT:?}"))??;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("{authority} sent a malformed HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        bail!("GET {path} on {authority}: {status}");
    }
    Ok(String::from_utf8_lossy(&raw[end + 4..]).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Bounds a failure only.
    const GUARD: Duration = Duration::from_secs(60);

    /// A body larger than what the socket buffers between a server and a client that reads
    /// nothing can take (4 MiB at most on the server's side, 4 KiB set on the client's).
    const LARGE: usize = 8 << 20;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_that_never_read_do_not_block_a_later_scrape() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(|_: &str| {
            Some(Body {
                content_type: "text/plain",
                text: "x".repeat(LARGE),
            })
        });
        let timeouts = Timeouts {
            read: READ_TIMEOUT,
            write: Duration::from_millis(500),
        };
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let server = tokio::spawn(serve_with(
            listener,
            handler,
            timeouts,
            cancel.clone(),
            tracker.clone(),
        ));
        // Every slot taken by a client that sends a valid GET, reads the first byte of the
        // answer (so its slot is surely taken) and never reads again.
        let mut stalled = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let mut stream = socket.connect(addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let mut first = [0u8; 1];
            stream.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"H");
            stalled.push(stream);
        }
        // Each stalled answer ends at its write timeout (without one they would hold the slots
        // for as long as the clients stay) ...
        tracker.close();
        tokio::time::timeout(GUARD, tracker.wait())
            .await
            .expect("the stalled answers time out and free their slots");
        // ... and a scrape gets its answer while the stalled clients are still connected.
        let body = tokio::time::timeout(GUARD, get(&addr.to_string(), "/metrics"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body.len(), LARGE);
        drop(stalled);
        cancel.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn oversized_and_bad_requests_get_their_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(|path: &str| {
            (path == "/metrics").then(|| Body {
                content_type: "text/plain",
                text: "ok\n".into(),
            })
        });
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, handler, cancel.clone(), TaskTracker::new()));
        let ask = |request: Vec<u8>| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // The server may answer (and close) before it read all of an oversized request.
            let _ = stream.write_all(&request).await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        };
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST * 2, b'a');
        assert!(ask(huge).await.starts_with("HTTP/1.1 431 "));
        let post = b"POST /metrics HTTP/1.1\r\n\r\n".to_vec();
        assert!(ask(post).await.starts_with("HTTP/1.1 405 "));
        let other = b"GET /nope HTTP/1.1\r\n\r\n".to_vec();
        assert!(ask(other).await.starts_with("HTTP/1.1 404 "));
        assert_eq!(get(&addr.to_string(), "/metrics").await.unwrap(), "ok\n");
        cancel.cancel();
        server.await.unwrap();
    }
}
