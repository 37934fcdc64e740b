//! A tiny HTTP/1.1 server for `GET /metrics` and `GET /snapshot`, and the matching client.
//!
//! The server answers one request per connection (`Connection: close`): requests are bounded in
//! size ([`MAX_REQUEST`]) and time ([`READ_TIMEOUT`]), at most [`MAX_CONNECTIONS`] are served at
//! once (more are closed unanswered), unknown paths get 404 and other methods 405. The client
//! reads at most [`MAX_RESPONSE`] bytes and needs a `200` answer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest request head accepted (request line plus headers), in bytes.
const MAX_REQUEST: usize = 8 * 1024;

/// How long a client may take to send its request, and to receive the answer.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Serves `listener` until `cancel` fires; connection tasks run on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Handler,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                continue;
            }
        };
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
                result = answer(stream, &handler) => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "metrics endpoint: request failed");
                    }
                }
            }
        });
    }
}

/// Reads one request and writes its answer.
async fn answer(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(&mut stream, 431, "text/plain", "request too large\n").await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return respond(&mut stream, 408, "text/plain", "request timeout\n").await,
    };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut stream, 400, "text/plain", "bad request\n").await;
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut stream, 400, "text/plain", "bad request\n").await;
    }
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET is served\n").await;
    }
    let path = target.split('?').next().unwrap_or_default();
    match handler(path) {
        Some(body) => respond(&mut stream, 200, body.content_type, &body.text).await,
        None => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "not found: try /metrics or /snapshot\n",
            )
            .await
        }
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
