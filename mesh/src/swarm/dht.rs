//! The actor's Kademlia side: query results, lookups of wanted routes, and providing what
//! this node publishes.

use super::*;

impl Actor {
    pub(super) fn on_kad(&mut self, event: kad::Event) {
        match event {
            // A small mesh is a full mesh: meet every peer we learn of.
            kad::Event::RoutingUpdated {
                peer, addresses, ..
            } if self.dense() && !self.swarm.is_connected(&peer) && peer != self.local => {
                let known = self.known.entry(peer).or_default();
                for addr in addresses.iter() {
                    if !known.addrs.contains(addr) {
                        known.addrs.push(addr.clone());
                    }
                }
                self.dial_peer(peer);
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::Bootstrap(Ok(_)) if step.last && !self.bootstrapped => {
                    self.bootstrapped = true;
                    self.reprovide();
                }
                QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders {
                    providers, ..
                })) => {
                    let mut missing = false;
                    tracing::debug!(?providers, "providers found");
                    let found: Vec<libp2p::PeerId> = providers.iter().copied().collect();
                    for provider in providers {
                        if provider == self.local {
                            continue;
                        }
                        self.known.entry(provider).or_default().wanted = true;
                        self.known_changed = true;
                        if !self.swarm.is_connected(&provider) {
                            missing = true;
                            self.make_room_for_wanted();
                            self.dial_peer(provider);
                        } else {
                            self.open_if_needed(provider);
                        }
                    }
                    if let Some(key) = self.queries.get(&id)
                        && let Some(lookup) = self.lookups.get_mut(key)
                    {
                        lookup.missing |= missing;
                        for provider in &found {
                            lookup.new |= lookup.seen.insert(*provider);
                        }
                    }
                    if step.last {
                        self.lookup_done(id);
                    }
                }
                QueryResult::GetProviders(_) if step.last => self.lookup_done(id),
                _ => {}
            },
            _ => {}
        }
    }

    /// A lookup ended: schedule the next one.
    pub(super) fn lookup_done(&mut self, id: QueryId) {
        let Some(key) = self.queries.remove(&id) else {
            return;
        };
        let ticks = self.ticks;
        if let Some(lookup) = self.lookups.get_mut(&key) {
            lookup.running = None;
            // Records are still spreading while the mesh forms: look again soon while runs find
            // new or unconnected providers, then back off to the settled interval.
            lookup.retry = if lookup.new {
                1
            } else if lookup.missing || !self.bootstrapped {
                (lookup.retry * 2).clamp(1, LOOKUP_RETRY_MAX)
            } else {
                (lookup.retry * 2).clamp(1, LOOKUP_SETTLED_TICKS)
            };
            lookup.due = ticks + lookup.retry;
            lookup.missing = false;
            lookup.new = false;
        }
    }

    pub(super) fn on_found(&mut self, found: Found) {
        match found {
            Found::Peer(peer, addrs) => {
                tracing::debug!(%peer, ?addrs, "found on the LAN");
                for addr in &addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                }
                let known = self.known.entry(peer).or_default();
                known.lan = true;
                self.known_changed = true;
                known.addrs = addrs;
                if !self.swarm.is_connected(&peer) && self.dense() {
                    self.dial_peer(peer);
                }
            }
            Found::Gone(peer) => {
                if let Some(known) = self.known.get_mut(&peer) {
                    known.lan = false;
                    self.known_changed = true;
                }
            }
        }
    }

    pub(super) fn on_tick(&mut self) {
        self.ticks += 1;
        // libp2p-stream drops inbound streams that arrive faster than they are accepted, and a
        // dndm stream can die while its connection lives: check every connected peer.
        let peers: Vec<libp2p::PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            self.open_if_needed(peer);
        }
        if self.ticks >= self.reprovide_at {
            self.reprovide();
        }
        let due: Vec<RecordKey> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.running.is_none() && l.due <= self.ticks)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let id = self.swarm.behaviour_mut().kad.get_providers(key.clone());
            self.queries.insert(id, key.clone());
            if let Some(lookup) = self.lookups.get_mut(&key) {
                lookup.running = Some(id);
            }
        }
    }

    /// Applies local route changes: provider records for intents, lookups for interests.
    pub(super) fn routes_changed(&mut self) {
        let current = self.routes.borrow_and_update().clone();
        for route in self.applied.intents.difference(&current.intents) {
            for key in self.inner.config.route_key.provided(route) {
                if let Some(count) = self.provided.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        self.provided.remove(&key);
                        self.swarm.behaviour_mut().kad.stop_providing(&key);
                    }
                }
            }
        }
        for route in current.intents.difference(&self.applied.intents) {
            for key in self.inner.config.route_key.provided(route) {
                let count = self.provided.entry(key.clone()).or_insert(0);
                *count += 1;
                if *count == 1 {
                    if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                        tracing::warn!(%route, error = %e, "provider record not stored");
                    }
                    self.reprovide_every = REPROVIDE_FIRST_TICKS;
                    self.reprovide_at = self.ticks + REPROVIDE_FIRST_TICKS;
                }
            }
        }
        let wanted: HashSet<RecordKey> = current
            .interests
            .iter()
            .map(|p| self.inner.config.route_key.wanted(p))
            .collect();
        self.lookups.retain(|key, _| wanted.contains(key));
        for key in wanted {
            self.lookups.entry(key).or_insert(Lookup {
                due: self.ticks,
                retry: 1,
                running: None,
                missing: false,
                new: false,
                seen: HashSet::new(),
            });
        }
        self.applied = current;
    }

    /// Publishes every provider record again: soon after a change (2 s, doubling while the
    /// routing table fills) and then every minute (records on other nodes expire).
    pub(super) fn reprovide(&mut self) {
        self.reprovide_every = (self.reprovide_every * 2).min(REPROVIDE_TICKS);
        self.reprovide_at = self.ticks + self.reprovide_every;
        let keys: Vec<RecordKey> = self.provided.keys().cloned().collect();
        for key in keys {
            let _ = self.swarm.behaviour_mut().kad.start_providing(key);
        }
    }
}
