//! The tree protocol on the wire (`/dndm/tree/1.0.0`): each message is a 4-byte big-endian
//! length and a protobuf `WireMessage`. Also the batch signature: what an origin signs and every
//! receiver checks before carrying a batch on.

use bytes::{BufMut as _, Bytes, BytesMut};
use dndm_core::{Fingerprint, Keypair, PeerId, Route};
use libp2p::Multiaddr;
use prost::Message as _;

use super::membership::Offer;
use super::{Batch, Frame, Seq, UNREACHABLE};

/// Largest message accepted (a batch of up to 64 KiB payloads is far below).
pub const MAX_MESSAGE: usize = 16 << 20;
/// Most peers in one exchange, and addresses per peer.
pub const MAX_PEERS: usize = 64;
const MAX_ADDRS: usize = 8;
/// Most payloads in one batch.
pub const MAX_PAYLOADS: usize = 65_536;

const SIGNING_DOMAIN: &str = "dndm/tree/batch/v1";

/// A message between neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A frame of the dissemination machine. An announcement also carries the route's
    /// fingerprint (the type's schema hash), which a subscriber needs to link.
    Frame(Frame<PeerId>, Option<Fingerprint>),
    /// Peers the sender knows, with addresses to dial them on (membership exchange).
    Peers {
        /// The peers.
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
        /// It answers the receiver's exchange (not answered in turn).
        reply: bool,
    },
    /// The first message on a link, from each side: the sender's offer (both sides decide
    /// alike from the two, see `Membership::verdict`) and peers it knows.
    Hello {
        /// What the sender offers.
        offer: Offer,
        /// Peers the sender knows.
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
    },
}

/// Why a message from a neighbour was refused; the link to it is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not a protobuf `WireMessage`.
    #[error("undecodable tree message: {0}")]
    Decode(String),
    /// A field is missing or out of range.
    #[error("bad tree message: {field} {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Longer than [`MAX_MESSAGE`].
    #[error("tree message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLong(usize),
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireMessage {
    #[prost(oneof = "Body", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    body: Option<Body>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Body {
    #[prost(message, tag = "1")]
    Announce(WireAnnounce),
    #[prost(message, tag = "2")]
    Join(WireJoin),
    #[prost(message, tag = "3")]
    Joined(WireJoin),
    #[prost(message, tag = "4")]
    Leave(WireStream),
    #[prost(message, tag = "5")]
    Data(WireData),
    #[prost(message, tag = "6")]
    Gap(WireGap),
    #[prost(message, tag = "7")]
    Refresh(WireAnnounce),
    #[prost(message, tag = "8")]
    Peers(WirePeers),
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireStream {
    #[prost(bytes = "vec", tag = "1")]
    origin: Vec<u8>,
    #[prost(string, tag = "2")]
    route: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireAnnounce {
    #[prost(message, optional, tag = "1")]
    stream: Option<WireStream>,
    #[prost(uint64, tag = "2")]
    epoch: u64,
    #[prost(uint32, tag = "3")]
    hops: u32,
    #[prost(bool, tag = "4")]
    alive: bool,
    #[prost(bytes = "vec", tag = "5")]
    fingerprint: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireJoin {
    #[prost(message, optional, tag = "1")]
    stream: Option<WireStream>,
    #[prost(uint64, optional, tag = "2")]
    from: Option<u64>,
    #[prost(uint64, tag = "3")]
    next: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireData {
    #[prost(message, optional, tag = "1")]
    stream: Option<WireStream>,
    #[prost(uint64, tag = "2")]
    first: u64,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    payloads: Vec<Bytes>,
    #[prost(bytes = "bytes", tag = "4")]
    auth: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireGap {
    #[prost(message, optional, tag = "1")]
    stream: Option<WireStream>,
    #[prost(uint64, tag = "2")]
    first: u64,
    #[prost(uint64, tag = "3")]
    end: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WirePeers {
    #[prost(message, repeated, tag = "1")]
    peers: Vec<WirePeer>,
    /// A link's first message.
    #[prost(bool, tag = "2")]
    hello: bool,
    #[prost(bool, tag = "3")]
    room: bool,
    #[prost(bool, tag = "4")]
    needy: bool,
    #[prost(bool, tag = "5")]
    swap: bool,
    /// An exchange that answers one (not answered in turn).
    #[prost(bool, tag = "6")]
    reply: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WirePeer {
    #[prost(bytes = "vec", tag = "1")]
    peer: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    addrs: Vec<Vec<u8>>,
}

fn stream(origin: &PeerId, route: &Route) -> Option<WireStream> {
    Some(WireStream {
        origin: origin.to_bytes(),
        route: route.as_str().to_owned(),
    })
}

/// Encodes a message with its length prefix.
pub fn encode(message: &Message) -> Bytes {
    let body = match message {
        Message::Frame(frame, fingerprint) => match frame {
            Frame::Announce {
                origin,
                route,
                epoch,
                hops,
                alive,
            } => Body::Announce(WireAnnounce {
                stream: stream(origin, route),
                epoch: *epoch,
                hops: u32::from(*hops),
                alive: *alive,
                fingerprint: fingerprint
                    .map(|f| f.to_bytes().to_vec())
                    .unwrap_or_default(),
            }),
            Frame::Join {
                origin,
                route,
                from,
            } => Body::Join(WireJoin {
                stream: stream(origin, route),
                from: *from,
                next: 0,
            }),
            Frame::Joined {
                origin,
                route,
                from,
                next,
            } => Body::Joined(WireJoin {
                stream: stream(origin, route),
                from: *from,
                next: *next,
            }),
            Frame::Leave { origin, route } => Body::Leave(WireStream {
                origin: origin.to_bytes(),
                route: route.as_str().to_owned(),
            }),
            Frame::Data(batch) => Body::Data(WireData {
                stream: stream(&batch.origin, &batch.route),
                first: batch.first,
                payloads: batch.payloads.clone(),
                auth: batch.auth.clone(),
            }),
            Frame::Gap {
                origin,
                route,
                first,
                end,
            } => Body::Gap(WireGap {
                stream: stream(origin, route),
                first: *first,
                end: *end,
            }),
            Frame::Refresh {
                origin,
                route,
                epoch,
            } => Body::Refresh(WireAnnounce {
                stream: stream(origin, route),
                epoch: *epoch,
                hops: 0,
                alive: true,
                fingerprint: Vec::new(),
            }),
        },
        Message::Peers { peers, reply } => Body::Peers(WirePeers {
            peers: wire_peers(peers),
            hello: false,
            room: false,
            needy: false,
            swap: false,
            reply: *reply,
        }),
        Message::Hello { offer, peers } => Body::Peers(WirePeers {
            peers: wire_peers(peers),
            hello: true,
            room: offer.room,
            needy: offer.needy,
            swap: offer.swap,
            reply: false,
        }),
    };
    let message = WireMessage { body: Some(body) };
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(4 + len);
    out.put_u32(len as u32);
    // Encoding into a buffer sized by `encoded_len` cannot run out of room.
    let _ = message.encode(&mut out);
    out.freeze()
}

fn wire_peers(peers: &[(PeerId, Vec<Multiaddr>)]) -> Vec<WirePeer> {
    peers
        .iter()
        .map(|(peer, addrs)| WirePeer {
            peer: peer.to_bytes(),
            addrs: addrs.iter().map(|a| a.to_vec()).collect(),
        })
        .collect()
}

fn field(field: &'static str, reason: impl Into<String>) -> WireError {
    WireError::Field {
        field,
        reason: reason.into(),
    }
}

fn parse_stream(stream: Option<WireStream>) -> Result<(PeerId, Route), WireError> {
    let stream = stream.ok_or_else(|| field("stream", "missing"))?;
    let origin = PeerId::from_bytes(&stream.origin).map_err(|e| field("origin", e.to_string()))?;
    let route = stream
        .route
        .parse()
        .map_err(|e: dndm_core::RouteParseError| field("route", e.to_string()))?;
    Ok((origin, route))
}

/// Decodes a message body (without its length prefix), checking every field.
///
/// # Errors
/// [`WireError`] naming the bad field.
pub fn decode(body: Bytes) -> Result<Message, WireError> {
    if body.len() > MAX_MESSAGE {
        return Err(WireError::TooLong(body.len()));
    }
    let message = WireMessage::decode(body).map_err(|e| WireError::Decode(e.to_string()))?;
    let frame = match message.body.ok_or_else(|| field("body", "missing"))? {
        Body::Announce(a) => {
            let (origin, route) = parse_stream(a.stream)?;
            let hops = u8::try_from(a.hops).unwrap_or(UNREACHABLE);
            let fingerprint = match a.fingerprint.len() {
                0 => None,
                8 => {
                    let mut raw = [0; 8];
                    raw.copy_from_slice(&a.fingerprint);
                    Some(Fingerprint::from_bytes(raw))
                }
                n => return Err(field("fingerprint", format!("is {n} bytes, not 8"))),
            };
            let frame = Frame::Announce {
                origin,
                route,
                epoch: a.epoch,
                hops,
                alive: a.alive,
            };
            return Ok(Message::Frame(frame, fingerprint));
        }
        Body::Join(j) => {
            let (origin, route) = parse_stream(j.stream)?;
            Frame::Join {
                origin,
                route,
                from: j.from,
            }
        }
        Body::Joined(j) => {
            let (origin, route) = parse_stream(j.stream)?;
            Frame::Joined {
                origin,
                route,
                from: j.from,
                next: j.next,
            }
        }
        Body::Leave(s) => {
            let (origin, route) = parse_stream(Some(s))?;
            Frame::Leave { origin, route }
        }
        Body::Data(d) => {
            let (origin, route) = parse_stream(d.stream)?;
            if d.payloads.is_empty() || d.payloads.len() > MAX_PAYLOADS {
                return Err(field(
                    "payloads",
                    format!("{} payloads (1..={MAX_PAYLOADS})", d.payloads.len()),
                ));
            }
            if d.first == 0 || d.first.checked_add(d.payloads.len() as Seq).is_none() {
                return Err(field(
                    "first",
                    format!("{} is not a sequence number", d.first),
                ));
            }
            Frame::Data(std::sync::Arc::new(Batch {
                origin,
                route,
                first: d.first,
                payloads: d.payloads,
                auth: d.auth,
            }))
        }
        Body::Gap(g) => {
            let (origin, route) = parse_stream(g.stream)?;
            if g.first >= g.end {
                return Err(field("gap", format!("{}..{} is empty", g.first, g.end)));
            }
            Frame::Gap {
                origin,
                route,
                first: g.first,
                end: g.end,
            }
        }
        Body::Refresh(r) => {
            let (origin, route) = parse_stream(r.stream)?;
            Frame::Refresh {
                origin,
                route,
                epoch: r.epoch,
            }
        }
        Body::Peers(p) => {
            if p.peers.len() > MAX_PEERS {
                return Err(field(
                    "peers",
                    format!("{} peers (at most {MAX_PEERS})", p.peers.len()),
                ));
            }
            let mut peers = Vec::with_capacity(p.peers.len());
            for peer in p.peers {
                let id = PeerId::from_bytes(&peer.peer)
                    .map_err(|e| field("peers.peer", e.to_string()))?;
                let addrs = peer
                    .addrs
                    .into_iter()
                    .take(MAX_ADDRS)
                    .filter_map(|a| Multiaddr::try_from(a).ok())
                    .collect();
                peers.push((id, addrs));
            }
            if p.hello {
                let offer = Offer {
                    room: p.room,
                    needy: p.needy,
                    swap: p.swap,
                };
                return Ok(Message::Hello { offer, peers });
            }
            let reply = p.reply;
            return Ok(Message::Peers { peers, reply });
        }
    };
    Ok(Message::Frame(frame, None))
}

/// What an origin signs for a batch: a BLAKE3 digest of the origin, route, first sequence
/// number and payloads.
fn digest(origin: &PeerId, route: &Route, first: Seq, payloads: &[Bytes]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(SIGNING_DOMAIN);
    let origin = origin.to_bytes();
    hasher.update(&(origin.len() as u64).to_le_bytes());
    hasher.update(&origin);
    hasher.update(&(route.as_str().len() as u64).to_le_bytes());
    hasher.update(route.as_str().as_bytes());
    hasher.update(&first.to_le_bytes());
    hasher.update(&(payloads.len() as u64).to_le_bytes());
    for payload in payloads {
        hasher.update(&(payload.len() as u64).to_le_bytes());
        hasher.update(payload);
    }
    *hasher.finalize().as_bytes()
}

/// The origin's signature of a batch.
pub fn sign(keypair: &Keypair, route: &Route, first: Seq, payloads: &[Bytes]) -> Bytes {
    let digest = digest(&keypair.peer_id(), route, first, payloads);
    Bytes::copy_from_slice(&keypair.sign(&digest))
}

/// Whether a batch carries its origin's valid signature.
pub fn verify(batch: &Batch<PeerId>) -> bool {
    let Ok(signature) = <[u8; 64]>::try_from(batch.auth.as_ref()) else {
        return false;
    };
    let Ok(key) = batch.origin.public_key() else {
        return false;
    };
    key.verify(
        &digest(&batch.origin, &batch.route, batch.first, &batch.payloads),
        &signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route::new("robot.Pose", "fleet.1").expect("a valid route")
    }

    fn roundtrip(message: Message) -> Message {
        let bytes = encode(&message);
        let len = u32::from_be_bytes(bytes[..4].try_into().expect("a prefix")) as usize;
        assert_eq!(len, bytes.len() - 4);
        decode(bytes.slice(4..)).expect("decodes")
    }

    #[test]
    fn every_frame_survives_the_wire() {
        let keypair = Keypair::from_seed([7; 32]);
        let origin = keypair.peer_id();
        let payloads = vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")];
        let auth = sign(&keypair, &route(), 5, &payloads);
        let batch = Batch {
            origin,
            route: route(),
            first: 5,
            payloads,
            auth,
        };
        assert!(verify(&batch));
        let fingerprint = Some(Fingerprint::of_name("robot.Pose"));
        let frames = [
            (
                Frame::Announce {
                    origin,
                    route: route(),
                    epoch: 3,
                    hops: 2,
                    alive: true,
                },
                fingerprint,
            ),
            (
                Frame::Join {
                    origin,
                    route: route(),
                    from: Some(4),
                },
                None,
            ),
            (
                Frame::Join {
                    origin,
                    route: route(),
                    from: None,
                },
                None,
            ),
            (
                Frame::Joined {
                    origin,
                    route: route(),
                    from: None,
                    next: 9,
                },
                None,
            ),
            (
                Frame::Leave {
                    origin,
                    route: route(),
                },
                None,
            ),
            (Frame::Data(std::sync::Arc::new(batch)), None),
            (
                Frame::Gap {
                    origin,
                    route: route(),
                    first: 1,
                    end: 3,
                },
                None,
            ),
            (
                Frame::Refresh {
                    origin,
                    route: route(),
                    epoch: 2,
                },
                None,
            ),
        ];
        for (frame, fingerprint) in frames {
            let message = Message::Frame(frame, fingerprint);
            assert_eq!(roundtrip(message.clone()), message);
        }
        let addr: Multiaddr = "/memory/7".parse().expect("an address");
        for reply in [false, true] {
            let peers = Message::Peers {
                peers: vec![(origin, vec![addr.clone()])],
                reply,
            };
            assert_eq!(roundtrip(peers.clone()), peers);
        }
        for (room, needy, swap) in [
            (true, false, false),
            (false, true, false),
            (false, false, true),
        ] {
            let hello = Message::Hello {
                offer: Offer { room, needy, swap },
                peers: vec![(origin, vec![addr.clone()])],
            };
            assert_eq!(roundtrip(hello.clone()), hello);
        }
    }

    #[test]
    fn a_changed_payload_or_another_origin_fails_the_signature() {
        let keypair = Keypair::from_seed([7; 32]);
        let payloads = vec![Bytes::from_static(b"a")];
        let auth = sign(&keypair, &route(), 1, &payloads);
        let mut batch = Batch {
            origin: keypair.peer_id(),
            route: route(),
            first: 1,
            payloads,
            auth,
        };
        assert!(verify(&batch));
        batch.payloads[0] = Bytes::from_static(b"b");
        assert!(!verify(&batch));
        batch.payloads[0] = Bytes::from_static(b"a");
        batch.first = 2;
        assert!(!verify(&batch), "a replay under another sequence number");
        batch.first = 1;
        batch.origin = Keypair::from_seed([8; 32]).peer_id();
        assert!(!verify(&batch));
    }

    #[test]
    fn bad_fields_are_named() {
        let good = encode(&Message::Frame(
            Frame::Gap {
                origin: Keypair::from_seed([1; 32]).peer_id(),
                route: route(),
                first: 3,
                end: 3,
            },
            None,
        ));
        let error = decode(good.slice(4..)).expect_err("an empty gap");
        assert!(error.to_string().contains("gap"), "{error}");
        assert!(matches!(
            decode(Bytes::from_static(&[0xff, 0xff])),
            Err(WireError::Decode(_))
        ));
        let empty = WireMessage { body: None }.encode_to_vec();
        let error = decode(Bytes::from(empty)).expect_err("no body");
        assert!(error.to_string().contains("body"), "{error}");
    }
}
