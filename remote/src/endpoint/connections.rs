//! Connections: accept loops, dial loops, the Noise handshake and identity preamble, and the
//! hand-off of an identified connection to its peer's link, within the connection budgets.

use super::*;
use crate::noise::stream::HandshakeError as StreamError;

pub(super) enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

pub(super) async fn accept_loop(inner: Arc<Inner>, listener: Listener) {
    let mut pauses = AcceptBackoff::default();
    loop {
        let accepted: std::io::Result<Box<dyn ByteStream>> = tokio::select! {
            biased;
            () = inner.cancel.cancelled() => return,
            accepted = async {
                match &listener {
                    Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                        let _ = s.set_nodelay(true);
                        Box::new(s) as Box<dyn ByteStream>
                    }),
                    #[cfg(unix)]
                    Listener::Unix(l) => l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn ByteStream>),
                }
            } => accepted,
        };
        let error = match accepted {
            Ok(io) => {
                if let Some(errors) = pauses.handle_accept() {
                    tracing::info!(errors, "accepting connections again");
                }
                start_handshake(&inner, io);
                continue;
            }
            Err(error) => error,
        };
        match pauses.handle_error(&error) {
            AcceptAction::Retry => tracing::debug!(%error, "accept failed; one connection lost"),
            AcceptAction::Pause { delay, first } => {
                if first {
                    tracing::warn!(
                        %error,
                        pause = ?delay,
                        "accept failed; pausing the listener until it accepts again \
                         (not logged again until then)"
                    );
                }
                #[allow(clippy::disallowed_methods)]
                // The pause is the point: accepting at once would fail at once.
                let wait = tokio::time::sleep(delay);
                tokio::select! {
                    biased;
                    () = inner.cancel.cancelled() => return,
                    () = wait => {}
                }
            }
        }
    }
}

/// Starts the handshake of an inbound connection on its own task, or closes the connection at
/// once (counted) when `budget.handshakes` handshakes are already in progress.
pub(super) fn start_handshake(inner: &Arc<Inner>, io: Box<dyn ByteStream>) {
    let Ok(permit) = inner.handshakes.clone().try_acquire_owned() else {
        if !inner.handshakes_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit = inner.config.session.budget.handshakes,
                "remote.budget.handshakes reached: closing new connections at once \
                 (not logged again until a handshake can start)"
            );
        }
        // Counted while the connection is still open: whoever sees it close sees the count.
        handshake_failed(inner, Some(BudgetKind::Handshakes));
        drop(io);
        return;
    };
    inner.handshakes_full.store(false, Ordering::Relaxed);
    let inner2 = inner.clone();
    inner.tracker.spawn(async move {
        let result = handshake(&inner2, io, false, None, None).await;
        drop::<OwnedSemaphorePermit>(permit);
        if let Err(e) = result {
            tracing::debug!(error = %e, "inbound handshake failed");
        }
    });
}

/// Shows dial target `index`'s breaker in `RemoteEndpoint::dials`.
fn publish_breaker(inner: &Inner, index: usize, breaker: &CircuitBreaker) {
    if let Some(status) = lock(&inner.dials).get_mut(index) {
        status.breaker = breaker.state();
        status.failures = breaker.failures();
    }
}

/// Dials `target` (entry `index` of the dial list) until the endpoint closes: after each
/// failure or lost link, waits out the backoff (jittered with `jitter`) unless the circuit
/// breaker is open.
pub(super) async fn dial_loop(
    inner: Arc<Inner>,
    target: Target,
    index: usize,
    mut jitter: fastrand::Rng,
) {
    let mut backoff = Backoff::new(inner.config.backoff_initial, inner.config.backoff_max);
    let mut breaker = CircuitBreaker::new(
        inner.config.breaker_threshold,
        inner.config.breaker_cool_down,
    );
    let origin = tokio::time::Instant::now();
    loop {
        if inner.cancel.is_cancelled() {
            return;
        }
        let now = origin.elapsed();
        let allowed = breaker.allow(now);
        publish_breaker(&inner, index, &breaker);
        let failure = if allowed {
            match dial(&target).await {
                Ok(io) => {
                    let (done_tx, done_rx) = oneshot::channel();
                    let expected = target.expected_peer();
                    match handshake(&inner, io, true, Some(done_tx), expected).await {
                        Ok(()) => {
                            // Wait for the link to end (or the endpoint to close). The dial
                            // worked only if the session opened and did not end in a refusal.
                            let ended = tokio::select! {
                                biased;
                                () = inner.cancel.cancelled() => return,
                                ended = done_rx => ended,
                            };
                            match ended {
                                Ok(ended) if ended.is_success() => {
                                    breaker.on_success();
                                    backoff.reset();
                                    false
                                }
                                Ok(ended) => {
                                    tracing::debug!(%target, ?ended, "link failed before it worked");
                                    true
                                }
                                // Dropped unrun (the link ended first).
                                Err(_) => true,
                            }
                        }
                        Err(e) => {
                            tracing::debug!(%target, error = %e, "outbound handshake failed");
                            true
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%target, error = %e, "dial failed");
                    lock(&inner.stats).dial_failures += 1;
                    true
                }
            }
        } else {
            false
        };
        if failure {
            breaker.on_failure(origin.elapsed());
        }
        publish_breaker(&inner, index, &breaker);
        let delay = backoff.next_delay(jitter.u64(..));
        #[allow(clippy::disallowed_methods)]
        // Backoff between dials: the one place a timer is the point.
        let wait = tokio::time::sleep(delay);
        tokio::select! {
            biased;
            () = inner.cancel.cancelled() => return,
            () = wait => {}
        }
    }
}

async fn dial(mut target: &Target) -> std::io::Result<Box<dyn ByteStream>> {
    while let Target::Peer { target: inner, .. } = target {
        target = inner;
    }
    match target {
        Target::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
        #[cfg(unix)]
        Target::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        Target::Custom(connector) => connector.connect().await,
        Target::Peer { .. } => Err(std::io::Error::other("unwrapped above")),
    }
}

/// Counts a connection that failed its handshake or was refused at hand-off (and the budget
/// that refused it, if one did), and tells [`RemoteEndpoint::link_changes`] listeners.
fn handshake_failed(inner: &Inner, budget: Option<BudgetKind>) {
    {
        let mut stats = lock(&inner.stats);
        stats.handshake_failures += 1;
        if let Some(kind) = budget {
            stats.over_budget.add(kind);
        }
    }
    inner.link_state.send_modify(|v| *v += 1);
}

/// Runs the Noise handshake and the identity preamble, then hands the connection to the peer's
/// link task (creating it on first contact). With `expected`, any other identity is refused.
async fn handshake(
    inner: &Arc<Inner>,
    mut io: Box<dyn ByteStream>,
    initiator: bool,
    done: Option<oneshot::Sender<Ended>>,
    expected: Option<PeerId>,
) -> Result<(), HandshakeError> {
    match secure(inner, &mut io, initiator).await {
        Ok((channel, rest, peer)) => {
            if let Some(expected) = expected.filter(|expected| *expected != peer) {
                handshake_failed(inner, None);
                return Err(HandshakeError::UnexpectedPeer {
                    expected,
                    actual: peer,
                });
            }
            let preferred = initiator == (inner.keypair.peer_id() < peer);
            let handoff = Handoff {
                io,
                channel: Secure::Noise(channel),
                rest,
                done,
                preferred,
            };
            hand_off(inner, peer, handoff)
        }
        Err(e) => {
            // Counted while the connection is still open: whoever sees it close sees the count.
            handshake_failed(inner, None);
            Err(e)
        }
    }
}

/// The Noise handshake and the identity preamble; returns the channel, the plaintext read past
/// the preamble, and the peer.
async fn secure(
    inner: &Arc<Inner>,
    io: &mut Box<dyn ByteStream>,
    initiator: bool,
) -> Result<(Channel, BytesMut, PeerId), HandshakeError> {
    // After the Noise handshake each side sends its identity preamble before any frame: its
    // 32-byte ed25519 public key and that key's signature over its Noise static key. Both learn
    // and verify the peer without waiting for each other, so a connection reaches the peer's
    // link only once it proved that identity; the session then checks the hello against it.
    let channel = if initiator {
        Channel::initiator(&inner.static_key)?
    } else {
        Channel::responder(&inner.static_key)?
    };
    let preamble = noise::encode_preamble(&inner.keypair.public(), &inner.binding);
    let work = noise::stream::handshake(io, channel, &preamble);
    tokio::select! {
        biased;
        () = inner.cancel.cancelled() => Err(HandshakeError::Closing),
        result = tokio::time::timeout(inner.config.handshake_timeout, work) => {
            result.map_err(|_| HandshakeError::Timeout)?.map_err(|e| match e {
                StreamError::Noise(e) | StreamError::Preamble(PreambleError::Binding(e)) => {
                    HandshakeError::Noise(e)
                }
                StreamError::Io(e) => HandshakeError::Io(e),
                StreamError::Eof => HandshakeError::Eof,
                e => HandshakeError::Frame(e.to_string()),
            })
        }
    }
}

/// Gives a secured connection to the peer's link task, starting one on first contact. Never
/// waits: a peer not on the allow-list, a new peer when `budget.links` peers already have a
/// link, or a connection of a peer whose link already has `budget.connections_per_peer`
/// connections waiting, is refused and counted as a handshake failure (and over budget).
pub(super) fn hand_off(
    inner: &Arc<Inner>,
    peer: PeerId,
    handoff: Handoff,
) -> Result<(), HandshakeError> {
    let budget = &inner.config.session.budget;
    let refused = |e: HandshakeError, kind: Option<BudgetKind>| {
        // Counted while the connection is still open: whoever sees it close sees the count.
        handshake_failed(inner, kind);
        Err(e)
    };
    if let Some(allowed) = &inner.config.session.allow_peers
        && !allowed.contains(&peer)
    {
        return refused(HandshakeError::NotAllowed(peer), None);
    }
    // Sent under the lock: a link task retires (leaves `links` and closes its queue) under it
    // too, so a connection never lands in a queue nobody reads.
    let mut links = lock(&inner.links);
    let running = links.get(&peer).filter(|tx| !tx.is_closed()).cloned();
    let sender = match running {
        Some(tx) => tx,
        None => {
            // A closed queue of this peer still in the map is about to be replaced.
            let others = links.len() - usize::from(links.contains_key(&peer));
            if others >= budget.links {
                drop(links);
                if !inner.links_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %peer,
                        limit = budget.links,
                        "remote.budget.links reached: refusing new peers \
                         (not logged again until a new link starts)"
                    );
                }
                return refused(
                    HandshakeError::TooManyLinks {
                        peer,
                        links: others,
                    },
                    Some(BudgetKind::Links),
                );
            }
            inner.links_full.store(false, Ordering::Relaxed);
            // `max(1)`: a budget built in code unvalidated must not panic the channel.
            let (tx, rx) = mpsc::channel(budget.connections_per_peer.max(1));
            links.insert(peer, tx.clone());
            // Every log line of the link carries its peer.
            let span = tracing::info_span!("link", %peer);
            inner
                .tracker
                .spawn(link_task(inner.clone(), peer, rx).instrument(span));
            tx
        }
    };
    match sender.try_send(handoff) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_handoff)) => {
            drop(links);
            refused(
                HandshakeError::Busy {
                    peer,
                    waiting: budget.connections_per_peer,
                },
                Some(BudgetKind::ConnectionsPerPeer),
            )
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(HandshakeError::Closing),
    }
}
