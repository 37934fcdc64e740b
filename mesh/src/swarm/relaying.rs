//! The actor's part in NAT traversal (see `crate::nat` for the protocols): reservations on the
//! configured relays, the relay server's external addresses, which connections are relayed,
//! hole punching outcomes and AutoNAT's verdict.
//!
//! [`Actor::on_nat_event`] sees every swarm event before the actor's own handling and only keeps
//! books, except in two places: after a hole punch succeeded it closes the peer's relayed
//! connections (the dndm stream is then opened again on the direct one, and the session
//! resumes), and a relayed dial replaced that way is not redialed while the direct connection
//! lives.

use libp2p::swarm::SwarmEvent;
use libp2p::{autonat, dcutr, relay};

use super::{Actor, BehaviourEvent, Command};
use crate::nat::{self, Reachability, RelayReservation};

impl Actor {
    /// Reserves a slot on every configured relay (listening on `<relay>/p2p-circuit`).
    pub(super) fn start_relays(&mut self) {
        let relays = self.inner.config.relays.clone();
        self.inner.state().reservations = relays
            .iter()
            .map(|relay| RelayReservation {
                relay: relay.clone(),
                reserved: false,
                error: None,
            })
            .collect();
        for relay in relays {
            self.reserve(relay);
        }
    }

    /// Listens on `<relay>/p2p-circuit` (which dials the relay and asks for a reservation).
    pub(super) fn reserve(&mut self, relay: libp2p::Multiaddr) {
        if !self.relaying_available() {
            return;
        }
        match self.swarm.listen_on(nat::circuit_listen_addr(&relay)) {
            Ok(id) => {
                self.relay_listeners.insert(id, relay);
            }
            Err(e) => {
                let error = format!("reservation not requested: {}", nat::error_chain(&e));
                tracing::warn!(%relay, %error, "relay");
                self.reservation_update(&relay, false, Some(error));
                self.retry_reservation(relay);
            }
        }
    }

    /// Bookkeeping for NAT traversal; runs before the actor's own handling of `event`.
    pub(super) fn on_nat_event(&mut self, event: &SwarmEvent<super::BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some(relay) = self.relay_listeners.get(listener_id).cloned() {
                    tracing::info!(%relay, %address, "reserved a slot on the relay");
                    self.reservation_backoff.remove(&relay);
                    self.reservation_update(&relay, true, None);
                } else if self.inner.config.relay_server
                    && self.inner.config.external.is_empty()
                    && !nat::is_relayed(address)
                    && super::tcp_port(address).is_some()
                {
                    // A relay names its own addresses in every reservation it grants.
                    self.swarm.add_external_address(address.clone());
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(relay) = self.relay_listeners.remove(listener_id) {
                    let error = match reason {
                        Ok(()) => "reservation ended (relay connection closed)".to_owned(),
                        Err(e) => nat::error_chain(e),
                    };
                    tracing::warn!(%relay, %error, "relay reservation lost");
                    self.reservation_update(&relay, false, Some(error));
                    self.retry_reservation(relay);
                }
            }
            SwarmEvent::ConnectionEstablished {
                connection_id,
                endpoint,
                ..
            } if endpoint.is_relayed() => {
                self.inner.state().relayed.insert(*connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                // A relayed dial replaced by a direct connection is redialed only once the
                // direct one goes too (`Actor::on_dial_closed`).
                self.inner.state().relayed.remove(connection_id);
                if *num_established == 0 {
                    self.inner.state().hole_punch_failures.remove(peer_id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => self.on_hole_punch(*remote_peer_id, result),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged {
                old,
                new,
            })) => {
                tracing::info!(?old, ?new, "reachability changed");
                self.inner.state().reachability = match new {
                    autonat::NatStatus::Public(addr) => Reachability::Public(addr.clone()),
                    autonat::NatStatus::Private => Reachability::Private,
                    autonat::NatStatus::Unknown => Reachability::Unknown,
                };
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(event)) => {
                if let relay::Event::ReservationReqDenied {
                    src_peer_id,
                    status,
                } = event
                {
                    tracing::info!(peer = %src_peer_id, ?status, "relay reservation denied");
                } else {
                    tracing::debug!(?event, "relay server");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => {
                tracing::debug!(?event, "relay client");
            }
            _ => {}
        }
    }

    /// A hole punch ended: on success the relayed connections to the peer close (the dndm
    /// stream moves to the direct one); on failure the reason is kept for `mesh_peers`.
    fn on_hole_punch(
        &mut self,
        peer: libp2p::PeerId,
        result: &Result<libp2p::swarm::ConnectionId, dcutr::Error>,
    ) {
        match result {
            Ok(direct) => {
                tracing::info!(%peer, connection = %direct, "hole punched: direct connection");
                let relayed: Vec<libp2p::swarm::ConnectionId> = {
                    let mut state = self.inner.state();
                    state.hole_punch_failures.remove(&peer);
                    let relayed = state.relayed.clone();
                    state
                        .connections
                        .get(&peer)
                        .map(|conns| {
                            conns
                                .keys()
                                .filter(|id| relayed.contains(id))
                                .copied()
                                .collect()
                        })
                        .unwrap_or_default()
                };
                for id in relayed {
                    self.swarm.close_connection(id);
                }
            }
            Err(e) => {
                let reason = nat::error_chain(e);
                tracing::info!(%peer, %reason, "hole punching failed; staying relayed");
                self.inner.state().hole_punch_failures.insert(peer, reason);
            }
        }
    }

    /// Whether this swarm can use relays (TCP transport: the relay client is in the stack).
    fn relaying_available(&self) -> bool {
        self.inner.config.transport == crate::Transport::Tcp
    }

    fn reservation_update(&self, relay: &libp2p::Multiaddr, reserved: bool, error: Option<String>) {
        let mut state = self.inner.state();
        if let Some(entry) = state.reservations.iter_mut().find(|r| &r.relay == relay) {
            entry.reserved = reserved;
            if error.is_some() || reserved {
                entry.error = error;
            }
        }
    }

    /// Asks for the reservation again after a backoff (a refusal may clear as slots free up).
    fn retry_reservation(&mut self, relay: libp2p::Multiaddr) {
        if self.inner.cancel.is_cancelled() {
            return;
        }
        let random = self.jitter.u64(..);
        let config = &self.inner.config.remote;
        let delay = self
            .reservation_backoff
            .entry(relay.clone())
            .or_insert_with(|| {
                dndm_remote::backoff::Backoff::new(config.backoff_initial, config.backoff_max)
            })
            .next_delay(random);
        self.later(delay, Command::Reserve(relay));
    }
}
