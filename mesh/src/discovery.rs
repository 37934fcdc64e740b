//! LAN discovery over DNS-SD/mDNS (mdns-sd): this node registers `_dndm._tcp.local.` (its
//! libp2p listener is TCP) with its PeerId as the instance name, the TCP port in SRV, and TXT
//! records `peer`, `name` and `addrs`; it browses the same type and reports the peers it finds
//! with dialable addresses. The record is withdrawn on stop.
//!
//! The record is for other hosts, so it names no address that only means something here: the
//! daemon leaves the loopback interfaces out (its A/AAAA records never carry `127.0.0.1` or
//! `::1`), and TXT `addrs` lists only [`advertisable`] listen addresses (no loopback,
//! unspecified or link-local ones). Peers are dialed on the A/AAAA addresses and SRV port;
//! `addrs` tells a browser (an operator's `avahi-browse`) the full multiaddrs.

use std::net::IpAddr;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};

/// The DNS-SD service type of dndm nodes: dndm over libp2p on TCP (the SRV port is the TCP
/// listen port).
pub const SERVICE_TYPE: &str = "_dndm._tcp.local.";

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
    /// Starts the daemon, off the loopback interfaces, and browses for dndm nodes.
    pub(crate) fn start(local: libp2p::PeerId) -> Result<Self, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        // Queued before the browse and any registration, so the address records it fills in
        // (`enable_addr_auto`) are never loopback ones.
        daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
        let events = daemon.browse(SERVICE_TYPE)?;
        Ok(Self {
            daemon,
            events,
            registered: None,
            local,
            stopped: false,
        })
    }

    /// Registers this node, listening on TCP `port`, with its name and listen addresses in TXT
    /// ([`txt_properties`]). The daemon fills in the A/AAAA records from every interface but
    /// loopback.
    pub(crate) fn register(
        &mut self,
        name: &str,
        port: u16,
        addrs: &[Multiaddr],
    ) -> Result<(), mdns_sd::Error> {
        let peer = self.local.to_string();
        let properties = txt_properties(&peer, name, addrs);
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

/// The TXT properties of this node's record: `peer`, `name` (cut to fit) and `addrs`, the
/// [`advertisable`] addresses of `addrs`, comma-separated, as many as fit in one TXT string.
fn txt_properties(peer: &str, name: &str, addrs: &[Multiaddr]) -> [(&'static str, String); 3] {
    let mut listed = String::new();
    for addr in addrs.iter().filter(|a| advertisable(a)) {
        let addr = addr.to_string();
        if listed.split(',').any(|a| a == addr) {
            continue;
        }
        if listed.len() + addr.len() + 1 > TXT_VALUE_MAX {
            break;
        }
        if !listed.is_empty() {
            listed.push(',');
        }
        listed.push_str(&addr);
    }
    let name: String = name.chars().take(TXT_VALUE_MAX / 4).collect();
    [("peer", peer.to_owned()), ("name", name), ("addrs", listed)]
}

/// Whether a listen address means something to another host on the LAN: it starts with an
/// IP address that is not loopback, unspecified (`0.0.0.0`, `::`) or link-local
/// (`169.254.0.0/16`, `fe80::/10`: valid on one link only, and IPv6 ones need a scope a
/// multiaddr cannot carry). Memory and other non-IP addresses are not.
pub(crate) fn advertisable(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => !(ip.is_loopback() || ip.is_unspecified() || ip.is_link_local()),
        Some(Protocol::Ip6(ip)) => {
            !(ip.is_loopback() || ip.is_unspecified() || ip.is_unicast_link_local())
        }
        _ => false,
    }
}

/// The PeerId in an instance's full name (`<peer>._dndm._tcp.local.`).
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
        assert_eq!(instance_peer("printer._dndm._tcp.local."), None);
        assert_eq!(instance_peer(&format!("{peer}._http._tcp.local.")), None);
        assert_eq!(instance_peer(&format!("{peer}._dndm._udp.local.")), None);
    }

    fn addrs(texts: &[&str]) -> Vec<Multiaddr> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn property<'a>(properties: &'a [(&'static str, String); 3], key: &str) -> &'a str {
        &properties.iter().find(|(k, _)| *k == key).unwrap().1
    }

    #[test]
    fn the_record_advertises_no_loopback_unspecified_or_link_local_address() {
        // What libp2p reports for `/ip4/0.0.0.0/tcp/0` and `/ip6/::/tcp/0` on a host with one
        // LAN interface, plus what a node may be configured or told to listen on.
        let listening = addrs(&[
            "/ip4/127.0.0.1/tcp/7555",
            "/ip4/192.168.1.20/tcp/7555",
            "/ip4/127.0.0.53/tcp/7555",
            "/ip6/::1/tcp/7556",
            "/ip6/fe80::1c2:3ff:fe45:6789/tcp/7556",
            "/ip6/fd00::20/tcp/7556",
            "/ip4/0.0.0.0/tcp/7555",
            "/ip6/::/tcp/7556",
            "/ip4/169.254.10.20/tcp/7555",
            "/memory/1234",
            "/ip4/192.168.1.20/tcp/7555",
        ]);
        let properties = txt_properties("12D3KooWpeer", "robot-1", &listening);
        assert_eq!(property(&properties, "peer"), "12D3KooWpeer");
        assert_eq!(property(&properties, "name"), "robot-1");
        let advertised = property(&properties, "addrs");
        assert_eq!(
            advertised,
            "/ip4/192.168.1.20/tcp/7555,/ip6/fd00::20/tcp/7556"
        );
        for addr in advertised.split(',') {
            let addr: Multiaddr = addr.parse().unwrap();
            let ip = match addr.iter().next() {
                Some(Protocol::Ip4(ip)) => IpAddr::from(ip),
                Some(Protocol::Ip6(ip)) => IpAddr::from(ip),
                other => panic!("{addr}: {other:?}"),
            };
            assert!(!ip.is_loopback(), "{addr} is loopback");
        }
    }

    #[test]
    fn a_loopback_only_node_advertises_no_address() {
        let properties = txt_properties(
            "p",
            "n",
            &addrs(&["/ip4/127.0.0.1/tcp/1", "/ip6/::1/tcp/1", "/memory/7"]),
        );
        assert_eq!(property(&properties, "addrs"), "");
    }

    #[test]
    fn the_record_fits_its_txt_strings() {
        let listening: Vec<Multiaddr> = (0..64)
            .map(|i| {
                format!("/ip6/fd00::{i:x}/tcp/{}", 10_000 + i)
                    .parse()
                    .unwrap()
            })
            .collect();
        let name = "n".repeat(1000);
        let properties = txt_properties("p", &name, &listening);
        let advertised = property(&properties, "addrs");
        assert!(advertised.len() <= TXT_VALUE_MAX, "{}", advertised.len());
        assert!(advertised.starts_with("/ip6/fd00::/tcp/10000,"));
        assert!(
            advertised
                .split(',')
                .all(|a| a.parse::<Multiaddr>().is_ok())
        );
        assert_eq!(property(&properties, "name").len(), TXT_VALUE_MAX / 4);
    }
}
