//! Building what the session sends: hellos, adverts, batches, resends, acks, close.

use super::*;

/// Upper bound of a batch frame's bytes besides payloads and per-message framing: header,
/// sequence range, dictionary id, raw length and signature.
const FRAME_OVERHEAD: usize = 128;

/// Upper bound of one message's framing in a batch (tags, lengths, route id, sequence number
/// and request/response id); a response error's text comes on top and is bounded by
/// `max_text_len`.
pub(super) const MESSAGE_OVERHEAD: usize = 64;

/// A typical message's framing in a batch (an estimate, for sizing writes).
pub(super) const MESSAGE_FRAMING: usize = 8;

/// Most bytes of messages in one resent piece of a kept batch (one message may exceed it).
const RESEND_CHUNK: usize = 16 * 1024;

/// How one batch is compressed.
enum Packing {
    /// Uncompressed.
    Plain,
    /// zstd with this dictionary.
    Dictionary(u32),
    /// The session's [`SessionConfig::compression`].
    AsConfigured,
}

impl Session {
    pub(super) fn hello(&self) -> Hello {
        let key_binding = self
            .conn
            .as_ref()
            .and_then(|c| c.info.binding.as_ref())
            .map(|b| b.local_signature.to_vec())
            .unwrap_or_default();
        let limits = &self.config.limits;
        Hello {
            protocol_version: u32::from(PROTOCOL_VERSION),
            public_key: self.keypair.public().to_bytes().to_vec(),
            key_binding,
            node_name: self.config.node_name.clone(),
            intents: self
                .local
                .intents
                .iter()
                .filter(|(_, ad)| self.may_see(&ad.route))
                .map(|(&id, ad)| intent_decl(id, ad))
                .chain(
                    self.local
                        .services
                        .iter()
                        .filter(|(_, ad)| self.may_call_ours(&ad.route))
                        .map(|(&id, ad)| service_decls(id, ad).0),
                )
                .collect(),
            interests: self
                .local
                .interests
                .iter()
                .filter(|(_, ad)| self.may_feed(&ad.pattern))
                .map(|(&id, ad)| interest_decl(id, ad))
                .chain(
                    self.local
                        .services
                        .iter()
                        .filter(|(_, ad)| self.may_call_ours(&ad.route))
                        .map(|(&id, ad)| service_decls(id, ad).1),
                )
                .collect(),
            capabilities: Capabilities {
                zstd: self.config.compression.is_some(),
                dictionary_ids: self
                    .config
                    .dictionaries
                    .values()
                    .map(Dictionary::id)
                    .collect(),
                max_frame_len: limits.max_frame_len(),
                max_batch_messages: limits.max_batch_messages(),
                max_decompressed_len: limits.max_decompressed_len(),
                signed_batches: self.config.signing == Signing::Batch,
            },
            resume: Some(ResumeState {
                session_epoch: self.epoch,
                last_received_seq: self.expected - 1,
                last_sent_seq: self.next_seq - 1,
                peer_epoch: self.peer_epoch.unwrap_or(0),
                first_unacked_seq: self.unacked.front().map_or(self.next_seq, |s| s.first),
            }),
        }
    }

    pub(super) fn advertise(&mut self, mut advert: Advert, now: Instant) {
        // Our hello goes out as soon as a connection is up; any change after that travels as an
        // advert behind it (without a connection, the next hello carries the full set).
        if self.conn.is_none() {
            return;
        }
        // The peer learns only what its ACL lets it use; withdrawals of what it never saw name
        // ids only, and it ignores them.
        if !self.config.acl.is_allow_all() {
            advert.intents_added.retain(|decl| match &decl.route {
                DeclRoute::Plain(_) if decl.id >= SERVICE_ID_BASE => self
                    .local
                    .services
                    .get(&decl.id)
                    .is_some_and(|ad| self.may_call_ours(&ad.route)),
                DeclRoute::Plain(route) => self.may_see(route),
                DeclRoute::Hashed(_) => false,
            });
            advert.interests_added.retain(|decl| match &decl.pattern {
                DeclPattern::Plain(_) if decl.id >= SERVICE_ID_BASE => self
                    .local
                    .services
                    .get(&decl.id)
                    .is_some_and(|ad| self.may_call_ours(&ad.route)),
                DeclPattern::Plain(pattern) => self.may_feed(pattern),
                DeclPattern::Hashed(_) => false,
            });
            if advert == Advert::default() {
                return;
            }
        }
        self.queue_frame(&Frame::Advert(advert), now);
    }

    /// Declares our routes in an advert when the ACL restricts what the peer may learn and our
    /// hello went out before we knew who the peer is (it declared nothing then).
    pub(super) fn announce_after_hello(&mut self, now: Instant) {
        let blind = self
            .conn
            .as_ref()
            .is_some_and(|c| c.info.expected_peer.is_none());
        if self.config.acl.is_allow_all() || !blind {
            return;
        }
        let hello = self.hello();
        let advert = Advert {
            intents_added: hello.intents,
            interests_added: hello.interests,
            ..Advert::default()
        };
        if advert != Advert::default() {
            self.queue_frame(&Frame::Advert(advert), now);
        }
    }

    /// Whether batches are signed and verified on this session, both ways: when either side
    /// runs [`Signing::Batch`] (a peer's choice arrives in its hello), unless ours is
    /// [`Signing::Off`].
    pub(super) fn signing(&self) -> bool {
        match self.config.signing {
            Signing::Batch => true,
            Signing::Off => false,
            _ => self.peer_caps.as_ref().is_some_and(|c| c.signed_batches),
        }
    }

    /// The peer of the current connection, as far as known before its hello.
    fn connection_peer(&self) -> Option<PeerId> {
        self.conn
            .as_ref()
            .and_then(|c| c.info.expected_peer)
            .or(self.peer)
    }

    /// Whether the ACL lets the peer learn of our intent on `route` (it may subscribe to it).
    fn may_see(&self, route: &Route) -> bool {
        let acl = &self.config.acl;
        acl.is_allow_all()
            || self
                .connection_peer()
                .is_some_and(|p| acl.may_see(&p, route))
    }

    /// Whether the ACL lets the peer learn of our interest `pattern` (it may publish to it).
    fn may_feed(&self, pattern: &RoutePattern) -> bool {
        let acl = &self.config.acl;
        acl.is_allow_all()
            || self
                .connection_peer()
                .is_some_and(|p| acl.may_feed(&p, pattern))
    }

    /// Whether the ACL lets the peer call our service on `route`.
    pub(super) fn may_call_ours(&self, route: &Route) -> bool {
        let acl = &self.config.acl;
        acl.is_allow_all()
            || self
                .connection_peer()
                .is_some_and(|p| acl.may_call(&p, route))
    }

    /// Tells the peer of withdrawn intents that no queued or unacknowledged message uses.
    pub(super) fn flush_withdrawals(&mut self, now: Instant) {
        if self.local.withdrawing.is_empty() {
            return;
        }
        let busy = |id: u32| {
            self.outgoing.iter().any(|m| m.route_id == id)
                || self.held.get(&id).is_some_and(|h| !h.is_empty())
                || self
                    .unacked
                    .iter()
                    .any(|s| s.reliable.iter().any(|m| m.route_id == id))
        };
        let (busy, done): (Vec<u32>, Vec<u32>) =
            self.local.withdrawing.iter().partition(|&&id| busy(id));
        if done.is_empty() {
            return;
        }
        self.local.withdrawing = busy;
        for id in &done {
            self.local.intents.remove(id);
        }
        self.advertise(
            Advert {
                intents_removed: done,
                ..Advert::default()
            },
            now,
        );
    }

    pub(super) fn queue_frame(&mut self, frame: &Frame, now: Instant) {
        match self.encoder.encode(frame) {
            Ok(bytes) => {
                self.transmit.push_back(bytes);
                if let Some(conn) = self.conn.as_mut() {
                    conn.last_tx = now;
                }
            }
            // Our own frames stay within our limits unless the route set outgrew them.
            Err(e) => self.fail(LinkFailure::Protocol(format!(
                "cannot encode our own frame: {e}"
            ))),
        }
    }

    pub(super) fn fail(&mut self, failure: LinkFailure) {
        tracing::debug!(peer = ?self.peer, %failure, "connection failed");
        self.handle_disconnect(failure);
    }

    pub(super) fn finish_close(&mut self, by_peer: bool, close: Close) {
        self.closed = true;
        self.closing = None;
        self.conn = None;
        // Neither sent nor acknowledged: the peer may or may not have what was in flight, so
        // it counts as undelivered (never as delivered without an acknowledgement).
        let queued = self.take_queued();
        self.stats.unsent_on_close += queued.len() as u64;
        let unacked: Vec<u32> = self
            .unacked
            .drain(..)
            .flat_map(|sent| sent.reliable.into_iter().map(|m| m.route_id))
            .collect();
        self.unacked_reliable = 0;
        self.lose(unacked.into_iter().chain(queued), Undelivered::Closed);
        self.events.push_back(Event::Closed {
            by_peer,
            code: close.code,
            reason: close.reason,
        });
    }

    /// Builds batches (resends first), an ack if due, and the close frame when closing.
    pub(super) fn fill_transmit(&mut self, now: Instant) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        if !conn.open {
            return;
        }
        if self.ack_due {
            self.ack_due = false;
            let ack = Ack {
                cumulative_seq: self.expected - 1,
            };
            self.queue_frame(&Frame::Ack(ack), now);
        }
        if let Some(from) = self.resend_from.take() {
            self.resending = Some(from);
            if let Some(conn) = self.conn.as_mut() {
                conn.progress_at = now;
            }
        }
        // Resends first, then new batches (sequence order), each paced: at most two frames
        // wait for the driver, so a resume never re-encodes the whole buffer at once.
        while self.transmit.len() < 2 && (self.resend_next(now) || self.batch_new(now)) {}
        self.flush_withdrawals(now);
        // Closing: once everything the retransmit buffer admits is batched, the close goes
        // out. Messages still queued then (the buffer is full: the peer is slow to
        // acknowledge) are not waited for, so a close never hangs on the peer; they are
        // counted, not silently lost.
        if self.transmit.is_empty()
            && let Some(close) = self.closing.take()
        {
            self.queue_frame(&Frame::Close(close.clone()), now);
            self.finish_close(false, close);
        }
    }

    /// Resends the next kept batch that ends at or after the resend position; false when
    /// no resend is under way (or it just finished).
    pub(super) fn resend_next(&mut self, now: Instant) -> bool {
        let Some(from) = self.resending else {
            return false;
        };
        // Kept batches are in sequence order.
        let at = self.unacked.partition_point(|s| s.last < from);
        let Some(sent) = self.unacked.get(at) else {
            self.resending = None;
            return false;
        };
        // A kept batch goes again in pieces of at most RESEND_CHUNK bytes, from where the peer
        // is (possibly inside it): on a path that breaks every few tens of kilobytes, each
        // connection still completes a piece, and the next resumes after it.
        let first = from.max(sent.first);
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        let mut last = sent.last;
        for message in sent.reliable.iter().filter(|m| m.seq >= Some(first)) {
            let size = message_len(&message.payload, &message.correlation) + MESSAGE_OVERHEAD;
            if !messages.is_empty() && bytes + size > RESEND_CHUNK {
                // Ends just before this message: the next piece starts at it.
                last = message.seq.map_or(sent.last, |seq| seq - 1);
                break;
            }
            bytes += size;
            messages.push(message.clone());
        }
        let batch = Batch {
            first_seq: first,
            last_seq: last,
            messages,
        };
        self.resending = Some(last + 1);
        self.stats.retransmitted += batch.messages.len() as u64;
        self.queue_batch(&batch, now);
        true
    }

    /// Takes messages from the send queue into one batch; false when nothing was taken.
    pub(super) fn batch_new(&mut self, now: Instant) -> bool {
        if self.resending.is_some() || self.unacked.len() >= self.config.retransmit_capacity {
            return false;
        }
        let mut messages = Vec::new();
        let mut reliable = 0usize;
        let mut best_effort = Vec::new();
        let mut best_effort_seqs = Vec::new();
        let mut bytes = 0usize;
        let first = self.next_seq;
        let (max_messages, max_bytes) = self.batch_bounds();
        let room = self.frame_room();
        // What the batch's messages take in the frame, framing included.
        let mut framed = 0usize;
        while let Some(next) = self.outgoing.front() {
            let size = message_len(&next.payload, &next.correlation) + MESSAGE_OVERHEAD;
            if messages.is_empty() && size > room {
                // Queued before the peer's limits were known, and no frame it accepts can
                // carry it: counted, never sent (it would fail the link on every resend).
                if let Some(dropped) = self.outgoing.pop_front() {
                    self.outgoing_bytes -= dropped.payload.len();
                    self.stats.oversized += 1;
                    self.lose([dropped.route_id], Undelivered::TooLarge);
                }
                continue;
            }
            if messages.len() >= max_messages
                || (!messages.is_empty()
                    && (bytes + next.payload.len() > max_bytes || framed + size > room))
                || (next.reliable
                    && self.unacked_reliable + reliable >= self.config.retransmit_capacity)
            {
                break;
            }
            let Some(next) = self.outgoing.pop_front() else {
                break;
            };
            self.outgoing_bytes -= next.payload.len();
            bytes += next.payload.len();
            framed += size;
            let message = BatchMessage {
                route_id: next.route_id,
                seq: Some(self.next_seq),
                correlation: next.correlation,
                payload: next.payload,
            };
            self.next_seq += 1;
            if next.reliable {
                reliable += 1;
            } else {
                best_effort.push(message.route_id);
                best_effort_seqs.push(self.next_seq - 1);
            }
            messages.push(message);
        }
        if messages.is_empty() {
            return false;
        }
        let last = self.next_seq - 1;
        self.stats.messages_sent += messages.len() as u64;

        // Best-effort messages are done with once they go out; reliable ones at their ack.
        if !best_effort.is_empty() {
            self.settle(best_effort);
        }
        // Every batch is kept until acknowledged, even with no reliable message: a resent empty
        // range tells the receiver the best-effort messages in it are gone.
        if self.unacked.is_empty()
            && let Some(conn) = self.conn.as_mut()
        {
            conn.progress_at = now;
        }
        self.unacked_reliable += reliable;
        let batch = Batch {
            first_seq: first,
            last_seq: last,
            messages,
        };
        self.queue_batch(&batch, now);
        // Kept for resending: the batch's own messages move in (no copy); best-effort ones,
        // done with once sent, leave.
        let mut kept = batch.messages;
        if !best_effort_seqs.is_empty() {
            // Both ascending: one pass.
            let mut skip = best_effort_seqs.iter().peekable();
            kept.retain(|m| {
                let unreliable = skip.peek().is_some_and(|&&seq| m.seq == Some(seq));
                if unreliable {
                    skip.next();
                }
                !unreliable
            });
        }
        self.unacked.push_back(Sent {
            first,
            last,
            reliable: kept,
        });
        if self.send_refused && self.outgoing.len() < self.config.send_queue {
            self.send_refused = false;
            self.events.push_back(Event::SendReady);
        }
        true
    }

    /// Most messages and payload bytes per batch: ours, narrowed by our codec limits and by
    /// what the peer announced.
    fn batch_bounds(&self) -> (usize, usize) {
        let mut messages = self
            .config
            .max_batch_messages
            .min(self.config.limits.max_batch_messages() as usize);
        if let Some(caps) = &self.peer_caps
            && caps.max_batch_messages > 0
        {
            messages = messages.min(caps.max_batch_messages as usize);
        }
        (messages.max(1), self.config.max_batch_bytes)
    }

    /// Bytes one frame has for messages (payloads, error texts and their framing): the
    /// smallest frame and decompressed size of ours and the peer's, less the frame's own
    /// overhead.
    pub(super) fn frame_room(&self) -> usize {
        let limits = &self.config.limits;
        let mut room = limits.max_frame_len().min(limits.max_decompressed_len());
        if let Some(caps) = &self.peer_caps {
            for limit in [caps.max_frame_len, caps.max_decompressed_len] {
                if limit > 0 {
                    room = room.min(limit);
                }
            }
        }
        (room as usize).saturating_sub(FRAME_OVERHEAD)
    }

    /// How a batch is compressed for this peer: not at all if it did not announce zstd or if
    /// compression does not pay in time on this link ([`trial`](super::trial)); with the
    /// dictionary of the batch's one message type when both sides hold it; else as configured.
    fn batch_packing(&self, batch: &Batch) -> Packing {
        let Some(caps) = self.peer_caps.as_ref() else {
            return Packing::AsConfigured;
        };
        if !caps.zstd || !self.trial.compress() {
            return Packing::Plain;
        }
        match self.batch_dictionary(batch) {
            Some(id) if self.config.compression.is_some() && caps.dictionary_ids.contains(&id) => {
                Packing::Dictionary(id)
            }
            _ => Packing::AsConfigured,
        }
    }

    /// The dictionary id for `batch` if all its messages share one message type that has a
    /// dictionary.
    fn batch_dictionary(&self, batch: &Batch) -> Option<u32> {
        if self.config.dictionaries.is_empty() {
            return None;
        }
        let mut type_name = None;
        for message in &batch.messages {
            let route = match self.local.intents.get(&message.route_id) {
                Some(ad) => &ad.route,
                None => &self.local.services.get(&message.route_id)?.response_route,
            };
            match type_name {
                None => type_name = Some(route.type_name()),
                Some(name) if name == route.type_name() => {}
                Some(_) => return None,
            }
        }
        self.config.dictionaries.get(type_name?).map(Dictionary::id)
    }

    pub(super) fn queue_batch(&mut self, batch: &Batch, now: Instant) {
        let session_id = self.conn.as_ref().map(|c| c.info.session_id);
        let mut options = match self.batch_packing(batch) {
            Packing::Plain => BatchOptions::new().uncompressed(),
            Packing::Dictionary(id) => BatchOptions::new().dictionary(id),
            Packing::AsConfigured => BatchOptions::new(),
        };
        if self.signing()
            && let Some(id) = &session_id
        {
            options = options.sign(&self.keypair, id);
        }
        let encoded = self.encoder.encode_batch(batch, &options);
        match encoded {
            Ok(frame) => {
                self.stats.batches_sent += 1;
                self.transmit.push_back(frame);
                if let Some(conn) = self.conn.as_mut() {
                    conn.last_tx = now;
                }
            }
            Err(e) => self.fail(LinkFailure::Protocol(format!(
                "cannot encode our own batch: {e}"
            ))),
        }
    }
}

pub(super) fn intent_decl(id: u32, ad: &IntentAd) -> IntentDecl {
    IntentDecl {
        id,
        route: match ad.hashed {
            Some(readable) => DeclRoute::Hashed(ad.route.hashed(readable)),
            None => DeclRoute::Plain(ad.route.clone()),
        },
        fingerprint: ad.fingerprint,
        schema: ad.schema.clone(),
        qos: ad.qos,
    }
}

pub(super) fn interest_decl(id: u32, ad: &InterestAd) -> InterestDecl {
    InterestDecl {
        id,
        // Only an exact pattern can be hashed (the router refuses others).
        pattern: match (ad.hashed, ad.pattern.as_route()) {
            (Some(readable), Some(route)) => DeclPattern::Hashed(route.hashed(readable)),
            _ => DeclPattern::Plain(ad.pattern.clone()),
        },
        fingerprint: ad.fingerprint,
        schema: ad.schema.clone(),
        history: u32::try_from(ad.history).unwrap_or(u32::MAX),
    }
}

/// A service as its two declarations (see [`SERVICE_ID_BASE`]): an intent on the response
/// route and an interest in the request route, under one id.
pub(super) fn service_decls(id: u32, ad: &ServiceAd) -> (IntentDecl, InterestDecl) {
    let intent = IntentDecl {
        id,
        route: DeclRoute::Plain(ad.response_route.clone()),
        fingerprint: ad.response_fingerprint,
        schema: None,
        qos: Qos::reliable(),
    };
    let interest = InterestDecl {
        id,
        pattern: DeclPattern::Plain(RoutePattern::from(ad.route.clone())),
        fingerprint: ad.request_fingerprint,
        schema: None,
        history: 0,
    };
    (intent, interest)
}
