#![allow(clippy::unwrap_used)]

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

/// Bounds a failure only.
const GUARD: Duration = Duration::from_secs(60);

/// Longer than any test: the shedding, not the header timeout, must make room.
const PATIENT: Duration = Duration::from_secs(3600);

/// A body larger than what the socket buffers between a server and a client that reads nothing
/// can take (4 MiB at most on the server's side, 4 KiB set on the client's).
const LARGE: usize = 8 << 20;

/// A server on an ephemeral port answering `/metrics` and `/healthz` with `body`.
struct Server {
    address: String,
    slots: Slots,
    cancel: CancellationToken,
    tracker: TaskTracker,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(body: impl Fn() -> String + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let handler: Handler = Arc::new(move |path: &str| {
            matches!(path, "/metrics" | "/healthz").then(|| Body::ok("text/plain", body()))
        });
        let slots = Slots::default();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let task = tokio::spawn({
            let (slots, cancel, tracker) = (slots.clone(), cancel.clone(), tracker.clone());
            async move { serve_with(listener, handler, PATIENT, &slots, cancel, tracker).await }
        });
        Self {
            address,
            slots,
            cancel,
            tracker,
            task,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
        self.tracker.close();
        tokio::time::timeout(GUARD, self.tracker.wait())
            .await
            .expect("every connection task ends on cancel");
    }
}

/// Whether the server closed `stream` (it reads to the end, whatever was sent before).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut sink))
        .await
        .is_ok_and(|read| read.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_and_idle_connections_do_not_block_scrapes() {
    let server = Server::start(|| "up\n".to_owned()).await;
    // 64 clients that send half a request head and wait, then 64 that send nothing.
    let mut half_sent = Vec::new();
    for _ in 0..64 {
        let mut stream = TcpStream::connect(&server.address).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        half_sent.push(stream);
    }
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(&server.address).await.unwrap());
    }
    // Every scrape gets its answer while all 128 are still connected.
    for _ in 0..16 {
        for path in ["/metrics", "/healthz"] {
            let body = get(&server.address, path).await.unwrap();
            assert_eq!(body, "up\n");
            // Memory stays bounded: never more than MAX_CONNECTIONS connections are kept.
            assert!(server.slots.lock().open.len() <= MAX_CONNECTIONS);
        }
    }
    // The oldest waiting connections made room: the half-sent ones were shed first.
    for stream in &mut half_sent {
        assert!(
            closed_by_server(stream).await,
            "a half-sent client was shed"
        );
    }
    drop(idle);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_do_not_block_a_later_scrape() {
    let server = Server::start(|| "x".repeat(LARGE)).await;
    // Every slot taken by a client that sends a valid GET, reads the first byte of the answer
    // (so its slot is surely taken) and never reads again.
    let mut stalled = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket
            .connect(server.address.parse().unwrap())
            .await
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"H");
        stalled.push(stream);
    }
    // A scrape gets its whole answer while the stalled clients are still connected: an answer
    // draining to a client that does not read is waiting, not busy, and is shed.
    let body = tokio::time::timeout(GUARD, get(&server.address, "/metrics"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body.len(), LARGE);
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn oversized_and_bad_requests_get_their_status() {
    let server = Server::start(|| "ok\n".to_owned()).await;
    let address = server.address.clone();
    let ask = |request: Vec<u8>| {
        let address = address.clone();
        async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            // The server may answer (and close) before it read all of an oversized request.
            let _ = stream.write_all(&request).await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.resize(MAX_REQUEST * 4, b'a');
    assert!(ask(huge).await.starts_with("HTTP/1.1 431 "));
    let post =
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec();
    assert!(ask(post).await.starts_with("HTTP/1.1 405 "));
    let fetched = fetch(&server.address, "/nope").await.unwrap();
    assert_eq!(fetched.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&server.address, "/metrics").await.unwrap(), "ok\n");
    let error = get(&server.address, "/nope").await.unwrap_err().to_string();
    assert!(error.contains("404"), "{error}");
    server.stop().await;
}

#[test]
fn a_full_table_sheds_the_oldest_waiting_connection_and_never_a_busy_one() {
    let slots = Slots::default();
    let cancel = CancellationToken::new();
    let admitted: Vec<Slot> = (0..MAX_CONNECTIONS)
        .map(|_| slots.admit(&cancel).unwrap())
        .collect();
    let _first_busy = admitted[0].busy();
    let newcomer = slots.admit(&cancel).unwrap();
    assert!(!admitted[0].shed.is_cancelled(), "a busy one is kept");
    assert!(
        admitted[1].shed.is_cancelled(),
        "the oldest waiting one goes"
    );
    assert_eq!(slots.lock().open.len(), MAX_CONNECTIONS);
    let busy: Vec<_> = admitted[2..].iter().map(Slot::busy).collect();
    let _newcomer_busy = newcomer.busy();
    assert!(
        slots.admit(&cancel).is_none(),
        "all busy: the newcomer is refused"
    );
    drop(busy);
}
