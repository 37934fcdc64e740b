//! Handling what the peer sends: hello checks and resume, adverts, ACL, batches, acks.

use super::*;

impl Session {
    pub(super) fn process(&mut self, now: Instant, bytes: &Bytes) -> Result<(), LinkFailure> {
        let open = self.conn.as_ref().is_some_and(|c| c.open);
        let kind = FrameHeader::parse(bytes, &self.config.limits)
            .map_err(|e| LinkFailure::Decode(e.to_string()))?
            .kind();
        // Nothing but the hello is decoded (let alone decompressed) before the hello.
        if !open && kind != FrameKind::Hello {
            return Err(LinkFailure::Protocol("a frame before the hello".into()));
        }
        // Verify a batch's signature before decompressing anything the peer sent.
        if kind == FrameKind::Batch
            && self.signing()
            && let (Some(key), Some(conn)) = (&self.peer_key, &self.conn)
        {
            verify_batch(bytes, &conn.info.session_id, key)
                .map_err(|e| LinkFailure::Signature(e.to_string()))?;
        }
        let frame = self
            .decoder
            .decode(bytes)
            .map_err(|e| LinkFailure::Decode(e.to_string()))?;
        if let Frame::Batch(batch) = &frame {
            self.record(bytes, batch);
        }
        match frame {
            Frame::Hello(hello) if !open => self.on_hello(now, hello),
            Frame::Hello(_) => Err(LinkFailure::Protocol(
                "second hello on one connection".into(),
            )),
            _ if !open => Err(LinkFailure::Protocol("a frame before the hello".into())),
            Frame::Batch(batch) => self.on_batch(batch),
            Frame::Ack(ack) => self.on_ack(now, ack),
            Frame::Advert(advert) => self.on_advert(advert),
            Frame::Ping(ping) => {
                self.queue_frame(&Frame::Pong(Pong { nonce: ping.nonce }), now);
                Ok(())
            }
            Frame::Pong(pong) => {
                if let Some(conn) = self.conn.as_mut()
                    && let Some((nonce, sent)) = conn.ping
                    && nonce == pong.nonce
                {
                    conn.ping = None;
                    self.events
                        .push_back(Event::Rtt(now.saturating_duration_since(sent)));
                }
                Ok(())
            }
            Frame::Close(close) => {
                self.finish_close(true, close);
                Ok(())
            }
        }
    }

    pub(super) fn on_hello(&mut self, now: Instant, hello: Hello) -> Result<(), LinkFailure> {
        if hello.protocol_version != u32::from(PROTOCOL_VERSION) {
            return Err(LinkFailure::Version(hello.protocol_version));
        }
        let key: [u8; 32] = hello.public_key.as_slice().try_into().map_err(|_| {
            LinkFailure::Protocol(format!("public key of {} bytes", hello.public_key.len()))
        })?;
        let key = PublicKey::from_bytes(&key).map_err(|e| LinkFailure::Protocol(e.to_string()))?;
        let peer = key.peer_id();
        let Some(conn) = self.conn.as_ref() else {
            return Ok(());
        };
        if let Some(expected) = conn.info.expected_peer.or(self.peer)
            && expected != peer
        {
            return Err(LinkFailure::IdentityMismatch {
                expected,
                actual: peer,
            });
        }
        if let Some(allowed) = &self.config.allow_peers
            && !allowed.contains(&peer)
        {
            return Err(LinkFailure::NotAllowed(peer));
        }
        if let Some(binding) = &conn.info.binding {
            noise::verify_binding(&key, &binding.remote_static, &hello.key_binding)
                .map_err(|_| LinkFailure::BadBinding(peer))?;
        }
        if self.config.signing == Signing::Off && hello.capabilities.signed_batches {
            return Err(LinkFailure::Protocol(
                "the peer requires signed batches (its remote.signing is \"batch\") and this \
                 node's remote.signing is \"off\""
                    .into(),
            ));
        }
        self.check_acl(peer, &hello.intents, &hello.interests)?;
        let resume = hello.resume.unwrap_or_default();
        // We resume the peer: it is the incarnation we talked to, so we resend what it has
        // not received. The peer resumes us: it saw our epoch before, so it will resend what we
        // have not received. Usually both or neither; they differ when one side's hello never
        // arrived before a connection broke.
        let resumed = self.peer_epoch == Some(resume.session_epoch);
        let peer_resumes_us = resume.peer_epoch != 0 && resume.peer_epoch == self.epoch;
        // The peer's `last_received_seq` is in our numbering only if it resumes us; our
        // `expected` is in its numbering only if we resume it.
        let in_step = resumed && peer_resumes_us;
        // Sequence numbers stay far below u64::MAX (one per message); a hello claiming
        // otherwise is lying, and would overflow the arithmetic below. Within one pair of
        // incarnations the peer cannot have received more than we sent, and the first message
        // it still holds comes after none it sent.
        if resume.last_sent_seq >= MAX_SEQ
            || (in_step && resume.last_received_seq >= self.next_seq)
            || resume.first_unacked_seq > resume.last_sent_seq + 1
        {
            return Err(LinkFailure::Protocol(format!(
                "resume state out of range: last sent {}, first unacknowledged {}, last \
                 received {} (we sent up to {})",
                resume.last_sent_seq,
                resume.first_unacked_seq,
                resume.last_received_seq,
                self.next_seq - 1
            )));
        }
        // What we sent.
        if in_step {
            // Resend what the peer has not received; forget what it has.
            self.acknowledge(resume.last_received_seq);
            if self.unacked.front().is_some() {
                self.resend_from = Some(resume.last_received_seq + 1);
            }
        } else if resumed {
            // Same peer incarnation, but a session of it that never took our hello: it has
            // delivered nothing of what we still hold, so all of it goes again.
            if let Some(first) = self.unacked.front().map(|s| s.first) {
                self.resend_from = Some(first);
            }
        } else if self.peer_epoch.is_some() {
            self.stats.lost_on_peer_restart += self.unacked_reliable as u64;
            let lost: Vec<u32> = self
                .unacked
                .drain(..)
                .flat_map(|sent| sent.reliable.into_iter().map(|m| m.route_id))
                .collect();
            self.unacked_reliable = 0;
            self.lose(lost, Undelivered::PeerRestarted);
        }
        // What the peer sends.
        if !peer_resumes_us || resume.first_unacked_seq == 0 {
            // The peer dropped (or never had) what it sent to an earlier incarnation of us:
            // continue after its last sequence number.
            self.expected = resume.last_sent_seq + 1;
            self.early.clear();
        } else if !resumed {
            // The peer resends what it holds, in a numbering this session has not followed.
            self.expected = resume.first_unacked_seq;
            self.early.clear();
        } else if resume.first_unacked_seq > self.expected {
            // In step, but the peer no longer holds that far back (best-effort batches it
            // gave up on): resends start at the first it holds.
            let first = resume.first_unacked_seq;
            self.expected = first;
            self.early.retain(|&at, _| at >= first);
        }
        self.peer = Some(peer);
        self.peer_key = Some(key);
        self.peer_caps = Some(hello.capabilities.clone());
        self.peer_epoch = Some(resume.session_epoch);
        if let Some(conn) = self.conn.as_mut() {
            conn.open = true;
            conn.progress_at = now;
        }
        if !resumed {
            // A new incarnation of the peer (or of us): feedback totals and the peer's schemas
            // start afresh.
            self.reset_feedback();
        }
        let mut hello = hello;
        self.intern_schemas(&mut hello.intents, &mut hello.interests)?;
        self.events.push_back(Event::Established {
            peer,
            node_name: hello.node_name,
            resumed,
        });
        // Resync the peer's routes: withdraw what is gone, declare what is new. Lookups by
        // route, so a hello of n routes costs O(n) however it differs from the last one.
        let mut next = PeerRoutes::default();
        let (service_intents, intents): (Vec<_>, Vec<_>) = hello
            .intents
            .into_iter()
            .partition(|d| d.id >= SERVICE_ID_BASE);
        let (service_interests, interests): (Vec<_>, Vec<_>) = hello
            .interests
            .into_iter()
            .partition(|d| d.id >= SERVICE_ID_BASE);
        next.services = pair_services(&service_intents, &service_interests)?;
        let known = hashed::Known::for_decls(&self.local, &intents, &interests);
        for decl in intents {
            let is_hashed = matches!(decl.route, DeclRoute::Hashed(_));
            let Some(ad) = known.intent_ad(&decl) else {
                next.unresolved.intents.insert(decl.id, decl);
                continue;
            };
            if is_hashed && !self.hashed_allowed(Some(&ad.route), None) {
                continue;
            }
            {
                let [replaced, _] = declare(
                    &mut next.intents,
                    &mut next.intent_ids,
                    |ad| &ad.route,
                    decl.id,
                    ad,
                )?;
                if replaced != Change::Nothing {
                    return Err(duplicate_id(decl.id));
                }
            }
        }
        for decl in interests {
            let is_hashed = matches!(decl.pattern, DeclPattern::Hashed(_));
            let Some(ad) = known.interest_ad(&decl) else {
                next.unresolved.interests.insert(decl.id, decl);
                continue;
            };
            if is_hashed && !self.hashed_allowed(None, Some(&ad.pattern)) {
                continue;
            }
            {
                let [replaced, _] = declare(
                    &mut next.interests,
                    &mut next.interest_ids,
                    |ad| &ad.pattern,
                    decl.id,
                    ad,
                )?;
                if replaced != Change::Nothing {
                    return Err(duplicate_id(decl.id));
                }
            }
        }
        self.check_routes(next.len())?;
        let previous = std::mem::take(&mut self.peer_routes);
        for (id, ad) in &previous.services {
            if next.services.get(id) != Some(ad) {
                self.events
                    .push_back(Event::PeerServiceRemoved(ad.route.clone()));
            }
        }
        for (id, ad) in &next.services {
            if previous.services.get(id) != Some(ad) {
                self.events.push_back(Event::PeerServiceAdded(ad.clone()));
            }
        }
        for route in previous.intent_ids.keys() {
            if next.intent(route) != previous.intent(route) {
                self.events
                    .push_back(Event::PeerIntentRemoved(route.clone()));
            }
        }
        for pattern in previous.interest_ids.keys() {
            if next.interest(pattern) != previous.interest(pattern) {
                self.events
                    .push_back(Event::PeerInterestRemoved(pattern.clone()));
            }
        }
        for route in next.intent_ids.keys() {
            if let Some(ad) = next.intent(route)
                && previous.intent(route) != Some(ad)
            {
                self.events.push_back(Event::PeerIntentAdded(ad.clone()));
            }
        }
        for pattern in next.interest_ids.keys() {
            if let Some(ad) = next.interest(pattern)
                && previous.interest(pattern) != Some(ad)
            {
                self.events.push_back(Event::PeerInterestAdded(ad.clone()));
            }
        }
        self.peer_routes = next;
        self.reannounce_pauses(!resumed, now);
        self.announce_after_hello(now);
        self.flush_feedback(now);
        Ok(())
    }

    pub(super) fn on_advert(&mut self, advert: Advert) -> Result<(), LinkFailure> {
        // Adverts are processed only after the hello, which set the peer.
        let Some(peer) = self.peer else {
            return Err(LinkFailure::Protocol("an advert before the hello".into()));
        };
        self.check_acl(peer, &advert.intents_added, &advert.interests_added)?;
        let mut advert = advert;
        self.intern_schemas(&mut advert.intents_added, &mut advert.interests_added)?;
        self.on_flow(&advert.paused, &advert.resumed);
        self.on_feedback(&advert.feedback);
        // Service declarations (ids from SERVICE_ID_BASE) come and go in pairs.
        let removed: Vec<u32> = advert
            .intents_removed
            .iter()
            .chain(&advert.interests_removed)
            .copied()
            .filter(|&id| id >= SERVICE_ID_BASE)
            .collect();
        for id in removed {
            if let Some(ad) = self.peer_routes.services.remove(&id) {
                self.events.push_back(Event::PeerServiceRemoved(ad.route));
            }
        }
        advert.intents_removed.retain(|&id| id < SERVICE_ID_BASE);
        advert.interests_removed.retain(|&id| id < SERVICE_ID_BASE);
        let (service_intents, intents_added): (Vec<_>, Vec<_>) =
            std::mem::take(&mut advert.intents_added)
                .into_iter()
                .partition(|d| d.id >= SERVICE_ID_BASE);
        let (service_interests, interests_added): (Vec<_>, Vec<_>) =
            std::mem::take(&mut advert.interests_added)
                .into_iter()
                .partition(|d| d.id >= SERVICE_ID_BASE);
        advert.intents_added = intents_added;
        advert.interests_added = interests_added;
        let routes = &mut self.peer_routes;
        for id in &advert.intents_removed {
            routes.unresolved.intents.remove(id);
        }
        for id in &advert.interests_removed {
            routes.unresolved.interests.remove(id);
        }
        for id in advert.intents_removed {
            let change = withdraw(
                &mut routes.intents,
                &mut routes.intent_ids,
                |ad| &ad.route,
                id,
            );
            self.events.extend(intent_events(change));
        }
        for id in advert.interests_removed {
            let change = withdraw(
                &mut routes.interests,
                &mut routes.interest_ids,
                |ad| &ad.pattern,
                id,
            );
            self.events.extend(interest_events(change));
        }
        // Each declaration is counted before it is applied: the peer's total never exceeds the
        // budget, whatever sequence of adverts it sends.
        for (id, ad) in pair_services(&service_intents, &service_interests)? {
            if let Some(old) = self.peer_routes.services.remove(&id) {
                self.events.push_back(Event::PeerServiceRemoved(old.route));
            }
            self.check_routes(self.peer_routes.len() + 1)?;
            self.peer_routes.services.insert(id, ad.clone());
            self.events.push_back(Event::PeerServiceAdded(ad));
        }
        let known =
            hashed::Known::for_decls(&self.local, &advert.intents_added, &advert.interests_added);
        for decl in advert.intents_added {
            // An id declared again replaces what it named, resolved or not.
            self.peer_routes.unresolved.intents.remove(&decl.id);
            let is_hashed = matches!(decl.route, DeclRoute::Hashed(_));
            let Some(ad) = known.intent_ad(&decl) else {
                let routes = &mut self.peer_routes;
                let change = withdraw(
                    &mut routes.intents,
                    &mut routes.intent_ids,
                    |ad| &ad.route,
                    decl.id,
                );
                self.events.extend(intent_events(change));
                self.check_routes(self.peer_routes.len() + 1)?;
                self.peer_routes.unresolved.intents.insert(decl.id, decl);
                continue;
            };
            if is_hashed && !self.hashed_allowed(Some(&ad.route), None) {
                continue;
            }
            let grows = !self.peer_routes.intents.contains_key(&decl.id);
            self.check_routes(self.peer_routes.len() + usize::from(grows))?;
            let routes = &mut self.peer_routes;
            let changes = declare(
                &mut routes.intents,
                &mut routes.intent_ids,
                |ad| &ad.route,
                decl.id,
                ad,
            )?;
            self.events
                .extend(changes.into_iter().flat_map(intent_events));
        }
        for decl in advert.interests_added {
            self.peer_routes.unresolved.interests.remove(&decl.id);
            let is_hashed = matches!(decl.pattern, DeclPattern::Hashed(_));
            let Some(ad) = known.interest_ad(&decl) else {
                let routes = &mut self.peer_routes;
                let change = withdraw(
                    &mut routes.interests,
                    &mut routes.interest_ids,
                    |ad| &ad.pattern,
                    decl.id,
                );
                self.events.extend(interest_events(change));
                self.check_routes(self.peer_routes.len() + 1)?;
                self.peer_routes.unresolved.interests.insert(decl.id, decl);
                continue;
            };
            if is_hashed && !self.hashed_allowed(None, Some(&ad.pattern)) {
                continue;
            }
            let grows = !self.peer_routes.interests.contains_key(&decl.id);
            self.check_routes(self.peer_routes.len() + usize::from(grows))?;
            let routes = &mut self.peer_routes;
            let changes = declare(
                &mut routes.interests,
                &mut routes.interest_ids,
                |ad| &ad.pattern,
                decl.id,
                ad,
            )?;
            self.events
                .extend(changes.into_iter().flat_map(interest_events));
        }
        Ok(())
    }

    /// Answers a request the ACL does not allow with an error, and counts it.
    fn refuse_call(&mut self, route_id: u32, id: u64) {
        self.stats.acl_denials += 1;
        let error = ResponseError {
            code: ResponseError::DENIED,
            message: "this peer may not call the service".into(),
        };
        let answer = Correlation::Response {
            to: id,
            error: Some(error),
        };
        // A full queue drops the refusal: the caller's own timeout answers it.
        let _ = self.enqueue(route_id, true, answer, Bytes::new());
    }

    /// Fails the connection when the peer would have more than `budget.routes` declared.
    fn check_routes(&self, count: usize) -> Result<(), LinkFailure> {
        let limit = self.config.budget.routes;
        if count > limit {
            return Err(LinkFailure::OverBudget {
                budget: BudgetKind::Routes,
                limit,
                what: format!("declared {count} routes"),
            });
        }
        Ok(())
    }

    /// Checks the peer's declarations against the ACL before any is applied; the first denied
    /// one is counted and fails the connection. Hashed declarations are checked once resolved
    /// (`hashed.rs`): a denied one is counted and ignored.
    pub(super) fn check_acl(
        &mut self,
        peer: PeerId,
        intents: &[IntentDecl],
        interests: &[InterestDecl],
    ) -> Result<(), LinkFailure> {
        let acl = &self.config.acl;
        if acl.is_allow_all() {
            return Ok(());
        }
        let denied = intents
            .iter()
            .find_map(|decl| match &decl.route {
                DeclRoute::Plain(route) if !acl.may_publish(&peer, route) => {
                    Some(format!("publish on {route}"))
                }
                _ => None,
            })
            .or_else(|| {
                interests.iter().find_map(|decl| match &decl.pattern {
                    DeclPattern::Plain(pattern) if !acl.may_subscribe(&peer, pattern) => {
                        Some(format!("subscribe to {pattern}"))
                    }
                    _ => None,
                })
            });
        match denied {
            Some(what) => {
                self.stats.acl_denials += 1;
                Err(LinkFailure::Denied { peer, what })
            }
            None => Ok(()),
        }
    }

    pub(super) fn on_batch(&mut self, batch: Batch) -> Result<(), LinkFailure> {
        let (first, last) = (batch.first_seq, batch.last_seq);
        if last >= MAX_SEQ {
            return Err(LinkFailure::Protocol(format!(
                "batch sequence {last} out of range"
            )));
        }
        if last < self.expected {
            self.stats.duplicates += 1;
            self.ack_due = true;
            if self.config.ordered_transport {
                return Err(LinkFailure::Protocol(format!(
                    "replayed batch {first}..={last}; expected sequence {}",
                    self.expected
                )));
            }
            return Ok(());
        }
        if first > self.expected {
            self.stats.gaps += 1;
            self.ack_due = true;
            if self.config.ordered_transport {
                return Err(LinkFailure::Protocol(format!(
                    "sequence gap: batch starts at {first}, expected {}",
                    self.expected
                )));
            }
            // Lossy transport: keep a bounded number of early batches, bounded in bytes by the
            // decoded budget, until the gap fills.
            let held: usize = self.early.values().map(batch_bytes).sum();
            if self.early.len() < MAX_EARLY_BATCHES
                && held + batch_bytes(&batch) <= self.config.budget.decoded_bytes
            {
                self.early.insert(first, batch);
            }
            return Ok(());
        }
        self.deliver(batch)?;
        // Batches that arrived early may continue where this one ended.
        while let Some(entry) = self.early.first_entry() {
            if entry.get().last_seq < self.expected {
                entry.remove();
            } else if *entry.key() <= self.expected {
                let next = entry.remove();
                self.deliver(next)?;
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Delivers a batch that starts at or before the expected sequence and ends at or after it.
    pub(super) fn deliver(&mut self, batch: Batch) -> Result<(), LinkFailure> {
        let last = batch.last_seq;
        // Check every sequence number before delivering any message: a batch that breaks the
        // order delivers nothing (its earlier messages would otherwise reach the application
        // uncounted, with `expected` left behind them, and come again after the reconnect).
        let mut previous = self.expected - 1;
        for message in &batch.messages {
            let Some(seq) = message.seq else {
                return Err(LinkFailure::Protocol(
                    "message without a sequence number".into(),
                ));
            };
            if seq <= previous {
                if seq < self.expected {
                    continue; // Already delivered in an earlier batch.
                }
                return Err(LinkFailure::Protocol(format!(
                    "sequence {seq} out of order in batch"
                )));
            }
            previous = seq;
        }
        let mut delivered = 0u64;
        let mut previous = self.expected - 1;
        for message in batch.messages {
            // Checked above: every message has a sequence number, in order.
            let seq = message.seq.unwrap_or_default();
            if seq <= previous {
                continue; // Already delivered in an earlier batch.
            }
            previous = seq;
            delivered += 1;
            match message.correlation {
                // A request names one of our services; a response, the service it answers.
                Correlation::Request { id } => match self.local.services.get(&message.route_id) {
                    Some(ad) if self.may_call_ours(&ad.route) => {
                        self.events.push_back(Event::Request {
                            route: ad.route.clone(),
                            id,
                            payload: message.payload,
                        })
                    }
                    Some(_) => self.refuse_call(message.route_id, id),
                    None => self.stats.unknown_routes += 1,
                },
                // Only the answer to a service we could have called: no other route id carries
                // a response.
                Correlation::Response { to, error }
                    if self.peer_routes.services.contains_key(&message.route_id) =>
                {
                    self.events.push_back(Event::Response {
                        id: to,
                        result: match error {
                            None => Ok(message.payload),
                            Some(error) => Err(error),
                        },
                    });
                }
                Correlation::Response { .. } => self.stats.unknown_routes += 1,
                correlation => match self.peer_routes.intents.get(&message.route_id) {
                    Some(ad) => self.events.push_back(Event::Message {
                        route: ad.route.clone(),
                        payload: message.payload,
                        correlation,
                    }),
                    None => self.stats.unknown_routes += 1,
                },
            }
        }
        self.stats.messages_received += delivered;
        self.stats.best_effort_lost += (last + 1 - self.expected) - delivered;
        self.expected = last + 1;
        self.ack_due = true;
        Ok(())
    }

    pub(super) fn on_ack(&mut self, now: Instant, ack: Ack) -> Result<(), LinkFailure> {
        if ack.cumulative_seq >= self.next_seq {
            return Err(LinkFailure::Protocol(format!(
                "ack of sequence {} never sent (last sent {})",
                ack.cumulative_seq,
                self.next_seq - 1
            )));
        }
        if self.config.compression.is_some() {
            // Goodput with and without compression: payload bytes the peer took, while more
            // wait behind them.
            let (taken, count) = self
                .unacked
                .iter()
                .take_while(|s| s.last <= ack.cumulative_seq)
                .flat_map(|s| &s.reliable)
                .fold((0, 0), |(bytes, n), m| (bytes + m.payload.len(), n + 1));
            // Saturated: messages wait to be sent, or many batches are in flight (a transport
            // with deep buffers, such as a Yamux stream, drains the queue into them).
            // Or a write is still under way as the ack arrives: we produce as fast as the
            // connection takes bytes.
            let saturated = !self.outgoing.is_empty()
                || self.unacked.len() >= trial::IN_FLIGHT_BATCHES
                || self.trial.busy();
            let spent = self.encoder.take_compress_time();
            self.trial.record(now, taken, count, saturated, spent);
        }
        if self.acknowledge(ack.cumulative_seq) {
            if let Some(conn) = self.conn.as_mut() {
                conn.progress_at = now;
            }
            self.flush_withdrawals(now);
        }
        Ok(())
    }

    /// Drops kept batches up to `seq`; true if anything was dropped.
    pub(super) fn acknowledge(&mut self, seq: u64) -> bool {
        self.acked = self.acked.max(seq);
        let mut acked = Vec::new();
        let mut progressed = false;
        while self.unacked.front().is_some_and(|s| s.last <= seq) {
            if let Some(sent) = self.unacked.pop_front() {
                self.unacked_reliable -= sent.reliable.len();
                acked.extend(sent.reliable.iter().map(|m| m.route_id));
                progressed = true;
            }
        }
        self.stats.acked += acked.len() as u64;
        self.settle(acked);
        progressed
    }
}

/// Payload bytes of a batch.
fn batch_bytes(batch: &Batch) -> usize {
    batch.messages.iter().map(|m| m.payload.len()).sum()
}

/// The events of a change to the peer's intents.
pub(super) fn intent_events(change: Change<IntentAd>) -> Vec<Event> {
    match change {
        Change::Nothing => vec![],
        Change::Added(ad) => vec![Event::PeerIntentAdded(ad)],
        Change::Removed(ad) => vec![Event::PeerIntentRemoved(ad.route)],
        Change::Replaced(old, new) => vec![
            Event::PeerIntentRemoved(old.route),
            Event::PeerIntentAdded(new),
        ],
    }
}

/// The events of a change to the peer's interests.
pub(super) fn interest_events(change: Change<InterestAd>) -> Vec<Event> {
    match change {
        Change::Nothing => vec![],
        Change::Added(ad) => vec![Event::PeerInterestAdded(ad)],
        Change::Removed(ad) => vec![Event::PeerInterestRemoved(ad.pattern)],
        Change::Replaced(old, new) => vec![
            Event::PeerInterestRemoved(old.pattern),
            Event::PeerInterestAdded(new),
        ],
    }
}

/// A hello that declares one id twice.
fn duplicate_id(id: u32) -> LinkFailure {
    LinkFailure::Protocol(format!("id {id} declared twice in one hello"))
}

/// Pairs service declarations by id into services; an unpaired half is a protocol violation.
pub(super) fn pair_services(
    intents: &[IntentDecl],
    interests: &[InterestDecl],
) -> Result<crate::FastMap<u32, ServiceAd>, LinkFailure> {
    let halves: HashMap<u32, &IntentDecl> = intents.iter().map(|i| (i.id, i)).collect();
    let mut services = crate::FastMap::default();
    let mut paired = 0;
    for interest in interests {
        let intent = halves.get(&interest.id).ok_or_else(|| {
            LinkFailure::Protocol(format!(
                "service {} declared without its response route",
                interest.id
            ))
        })?;
        paired += 1;
        let (DeclPattern::Plain(pattern), DeclRoute::Plain(response_route)) =
            (&interest.pattern, &intent.route)
        else {
            continue; // Hashed services are not supported; ignored like hashed routes.
        };
        let Some(route) = pattern.as_route() else {
            return Err(LinkFailure::Protocol(format!(
                "service {} has a wildcard request route",
                interest.id
            )));
        };
        services.insert(
            interest.id,
            ServiceAd {
                route,
                request_fingerprint: interest.fingerprint,
                response_route: response_route.clone(),
                response_fingerprint: intent.fingerprint,
            },
        );
    }
    if paired != halves.len() || halves.len() != intents.len() {
        let ids: HashSet<u32> = interests.iter().map(|i| i.id).collect();
        let id = intents
            .iter()
            .find(|i| !ids.contains(&i.id))
            .map_or(0, |i| i.id);
        return Err(LinkFailure::Protocol(format!(
            "service {id} declared without its request route (or twice)"
        )));
    }
    Ok(services)
}
