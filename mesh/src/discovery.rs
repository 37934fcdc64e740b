//! LAN discovery over DNS-SD/mDNS (mdns-sd): this node registers `_dndm._udp.local.` with its
//! PeerId as the instance name and TXT records `peer`, `name` and `addrs`; it browses the same
//! type and reports the peers it finds with dialable addresses. The record is withdrawn on stop.

use std::net::IpAddr;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use mdns_sd::{ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};

/// The DNS-SD service type of dndm nodes.
pub const SERVICE_TYPE: &str = "_dndm._udp.local.";

/// How long stop waits for the daemon to send the goodbye and end its thread.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Largest TXT value we write (a TXT string holds 255 bytes including `key=`).
const TXT_VALUE_MAX: usize = 240;

/// What browsing reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// A peer and the addresses to dial it on.
    Peer(libp2p::PeerId, Vec<Multiaddr>),
    /// A peer withdrew its record.
    Gone(libp2p::PeerId),
}

/// A running mDNS registration and browser. Dropped without [`Mdns::stop`] (the actor's task
/// dropped by a runtime shutting down), it still tells the daemon thread to end.
pub(crate) struct Mdns {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    registered: Option<String>,
    local: libp2p::PeerId,
    /// [`Mdns::stop`] already shut the daemon down.
    stopped: bool,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns")
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl Mdns {
    /// Starts the daemon and browses for dndm nodes.
    pub(crate) fn start(local: libp2p::PeerId) -> Result<Self, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        let events = daemon.browse(SERVICE_TYPE)?;
        Ok(Self {
            daemon,
            events,
            registered: None,
            local,
            stopped: false,
        })
    }

    /// Registers this node, listening on TCP `port`, with its name and listen addresses in TXT.
    /// Addresses of every interface are filled in by the daemon.
    pub(crate) fn register(
        &mut self,
        name: &str,
        port: u16,
        addrs: &[Multiaddr],
    ) -> Result<(), mdns_sd::Error> {
        let peer = self.local.to_string();
        let mut listed = String::new();
        for addr in addrs {
            let addr = addr.to_string();
            if listed.len() + addr.len() + 1 > TXT_VALUE_MAX {
                break;
            }
            if !listed.is_empty() {
                listed.push(',');
            }
            listed.push_str(&addr);
        }
        let name: String = name.chars().take(TXT_VALUE_MAX / 4).collect();
        let properties = [
            ("peer", peer.as_str()),
            ("name", name.as_str()),
            ("addrs", listed.as_str()),
        ];
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &peer,
            &format!("{peer}.local."),
            "",
            port,
            &properties[..],
        )?
        .enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        if let Some(old) = self.registered.take() {
            let _ = self.daemon.unregister(&old);
        }
        self.daemon.register(info)?;
        self.registered = Some(fullname);
        Ok(())
    }

    /// The next browse result worth acting on; `None` when the daemon stopped.
    pub(crate) async fn next(&self) -> Option<Found> {
        loop {
            let event = self.events.recv_async().await.ok()?;
            let found = match event {
                ServiceEvent::ServiceResolved(service) => peer_of(&service),
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    instance_peer(&fullname).map(Found::Gone)
                }
                _ => None,
            };
            match found {
                Some(Found::Peer(peer, _) | Found::Gone(peer)) if peer == self.local => {}
                Some(found) => return Some(found),
                None => {}
            }
        }
    }

    /// Withdraws the record (a goodbye packet) and stops the daemon thread.
    pub(crate) async fn stop(mut self) {
        if let Some(fullname) = &self.registered
            && let Ok(status) = self.daemon.unregister(fullname)
        {
            let _ = tokio::time::timeout(STOP_WAIT, status.recv_async()).await;
        }
        self.stopped = true;
        if let Ok(status) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(STOP_WAIT, status.recv_async()).await;
        }
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        // The daemon thread holds a sender of its own command queue, so it never sees the
        // queue close: without an exit command it runs for the life of the process. Queuing
        // one does not wait (no goodbye packet here: that needs a wait).
        if !self.stopped {
            let _ = self.daemon.shutdown();
        }
    }
}

/// The PeerId in an instance's full name (`<peer>._dndm._udp.local.`).
fn instance_peer(fullname: &str) -> Option<libp2p::PeerId> {
    fullname
        .strip_suffix(SERVICE_TYPE)?
        .strip_suffix('.')?
        .parse()
        .ok()
}

/// A resolved record as a peer to dial: TCP addresses from the A/AAAA records and SRV port.
fn peer_of(service: &ResolvedService) -> Option<Found> {
    let peer: libp2p::PeerId = service.get_property_val_str("peer")?.parse().ok()?;
    if instance_peer(&service.fullname) != Some(peer) {
        return None;
    }
    let mut addrs: Vec<Multiaddr> = service
        .get_addresses()
        .iter()
        .map(|ip| ip.to_ip_addr())
        // Link-local IPv6 needs a scope a multiaddr cannot carry.
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(|ip| {
            Multiaddr::empty()
                .with(Protocol::from(ip))
                .with(Protocol::Tcp(service.port))
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    (!addrs.is_empty()).then_some(Found::Peer(peer, addrs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn instance_names_carry_the_peer_id() {
        let peer = libp2p::PeerId::random();
        assert_eq!(instance_peer(&format!("{peer}.{SERVICE_TYPE}")), Some(peer));
        assert_eq!(instance_peer("printer._dndm._udp.local."), None);
        assert_eq!(instance_peer(&format!("{peer}._http._tcp.local.")), None);
    }
}
