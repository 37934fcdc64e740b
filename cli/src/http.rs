//! The node's HTTP surface (`/metrics`, `/healthz`, `/readyz`, `/snapshot`) on hyper, and the
//! matching client for `dndm status`, `peers` and `routes`.
//!
//! hyper parses HTTP/1.1 (keep-alive, pipelining, header limits); this module decides who gets
//! a connection. At most [`MAX_CONNECTIONS`] are open at once. A connection is *busy* while a
//! request of its is being answered and *waiting* otherwise: before its first request is
//! complete (half-sent), between requests (idle keep-alive), or while its answer drains to a
//! client that may never read it. When every slot is taken, a new connection sheds the oldest
//! waiting one, so a normal scrape always gets through however many clients hold connections
//! open; only when all are busy is the newcomer closed. A request head must arrive within
//! [`READ_TIMEOUT`] of the connection or the previous answer (hyper's header timeout), so slow
//! or silent clients also leave on their own. Memory is bounded by the slots: each holds at most
//! [`MAX_REQUEST`] of request buffer plus the answer being written. An accept loop out of file
//! descriptors pauses ([`AcceptBackoff`]) instead of spinning.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use dndm::remote::backoff::{AcceptAction, AcceptBackoff};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest request head hyper buffers (request line plus headers), in bytes; hyper's minimum.
const MAX_REQUEST: usize = 8 * 1024;

/// How long a client may take to send a request head, from its connection or the previous
/// answer (and the client [`get`] to get its answer).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections open at once; a newcomer beyond sheds the oldest waiting one.
const MAX_CONNECTIONS: usize = 64;

/// Largest response body the client accepts, in bytes.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// An answer: status, content type and body.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) text: String,
}

impl Body {
    /// A `200 OK` answer.
    pub(crate) fn ok(content_type: &'static str, text: String) -> Self {
        Self {
            status: StatusCode::OK,
            content_type,
            text,
        }
    }
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
    let slots = Slots::default();
    serve_with(listener, handler, READ_TIMEOUT, &slots, cancel, tracker).await;
}

async fn serve_with(
    listener: TcpListener,
    handler: Handler,
    read_timeout: Duration,
    slots: &Slots,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut pauses = AcceptBackoff::default();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .max_buf_size(MAX_REQUEST)
        .keep_alive(true);
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
                            "http endpoint: accept failed; pausing until it accepts again \
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
            tracing::info!(errors, "http endpoint: accepting connections again");
        }
        let Some(slot) = slots.admit(&cancel) else {
            tracing::warn!(%peer, "http endpoint: every connection is answering; closing one");
            continue;
        };
        let handler = handler.clone();
        let service_slot = slot.clone();
        let service = hyper::service::service_fn(move |request| {
            let answer = answer(&request, &handler, &service_slot);
            std::future::ready(Ok::<_, Infallible>(answer))
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tracker.spawn(async move {
            tokio::select! {
                biased;
                () = slot.shed.cancelled() => {}
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "http endpoint: connection failed");
                    }
                }
            }
            slot.release();
        });
    }
}

/// The answer to one request.
fn answer(request: &Request<Incoming>, handler: &Handler, slot: &Slot) -> Response<Full<Bytes>> {
    let _busy = slot.busy();
    let body = if request.method() != Method::GET && request.method() != Method::HEAD {
        Body {
            status: StatusCode::METHOD_NOT_ALLOWED,
            content_type: "text/plain",
            text: "only GET is served\n".into(),
        }
    } else {
        handler(request.uri().path()).unwrap_or_else(|| Body {
            status: StatusCode::NOT_FOUND,
            content_type: "text/plain",
            text: "not found: try /metrics, /healthz, /readyz or /snapshot\n".into(),
        })
    };
    let mut response = Response::new(Full::new(Bytes::from(body.text)));
    *response.status_mut() = body.status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(body.content_type),
    );
    response
}

/// The open connections, oldest first, and whether each is answering a request.
#[derive(Debug, Default, Clone)]
struct Slots {
    inner: Arc<Mutex<SlotTable>>,
}

#[derive(Debug, Default)]
struct SlotTable {
    next: u64,
    /// Connection id (increasing with age) → its shed token and busy flag.
    open: BTreeMap<u64, (CancellationToken, bool)>,
}

/// One connection's place in [`Slots`].
#[derive(Debug, Clone)]
struct Slot {
    slots: Slots,
    id: u64,
    /// Cancelled to shed the connection.
    shed: CancellationToken,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection, shedding the oldest waiting one when all are taken; `None`
    /// when every open connection is answering a request.
    fn admit(&self, cancel: &CancellationToken) -> Option<Slot> {
        let mut table = self.lock();
        if table.open.len() >= MAX_CONNECTIONS {
            let oldest_waiting = table
                .open
                .iter()
                .find(|(_, (_, busy))| !busy)
                .map(|(id, _)| *id)?;
            if let Some((shed, _)) = table.open.remove(&oldest_waiting) {
                shed.cancel();
            }
        }
        let id = table.next;
        table.next += 1;
        let shed = cancel.child_token();
        table.open.insert(id, (shed.clone(), false));
        Some(Slot {
            slots: self.clone(),
            id,
            shed,
        })
    }
}

impl Slot {
    /// Marks the connection busy until the guard drops.
    fn busy(&self) -> BusyGuard<'_> {
        self.set_busy(true);
        BusyGuard(self)
    }

    fn set_busy(&self, busy: bool) {
        if let Some(entry) = self.slots.lock().open.get_mut(&self.id) {
            entry.1 = busy;
        }
    }

    /// Frees the slot (a shed connection's is already free).
    fn release(&self) {
        self.slots.lock().open.remove(&self.id);
    }
}

/// Marks a [`Slot`] waiting again when dropped.
struct BusyGuard<'a>(&'a Slot);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.set_busy(false);
    }
}

/// A `GET` answer: its status and body.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) status: StatusCode,
    pub(crate) text: String,
}

/// `GET base + path` where `base` is `http://host:port` (or just `host:port`); returns the body
/// of a `200` answer.
///
/// # Errors
/// When the address is not `http://host:port`, the connection fails, the answer is not `200`,
/// or it takes longer than [`READ_TIMEOUT`].
pub(crate) async fn get(base: &str, path: &str) -> anyhow::Result<String> {
    let fetched = fetch(base, path).await?;
    if fetched.status != StatusCode::OK {
        bail!(
            "GET {path} on {base}: {} {}",
            fetched.status,
            fetched.text.trim()
        );
    }
    Ok(fetched.text)
}

/// `GET base + path`, whatever the status.
///
/// # Errors
/// As [`get`], except that any status is an answer.
pub(crate) async fn fetch(base: &str, path: &str) -> anyhow::Result<Fetched> {
    if base.starts_with("https://") {
        bail!("{base}: https is not supported; the node serves plain http");
    }
    let rest = base.strip_prefix("http://").unwrap_or(base);
    let authority = rest.split('/').next().unwrap_or_default().to_owned();
    if authority.is_empty() || !authority.contains(':') {
        bail!("{base:?} is not an http://host:port address");
    }
    let exchange = async {
        let stream = TcpStream::connect(&authority)
            .await
            .with_context(|| format!("cannot connect to {authority}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let request = Request::get(path)
            .header(HOST, &authority)
            .body(http_body_util::Empty::<Bytes>::new())?;
        let answer = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
                .to_bytes();
            anyhow::Ok(Fetched {
                status,
                text: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        // The connection is driven here, next to the exchange, and dropped with it.
        tokio::select! {
            fetched = answer => fetched,
            ended = connection => {
                ended?;
                bail!("{authority} closed the connection before answering")
            }
        }
    };
    tokio::time::timeout(READ_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{authority} did not answer within {READ_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests;
