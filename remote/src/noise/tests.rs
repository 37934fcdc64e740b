//! Unit tests of the parent module.
use super::*;
use proptest::prelude::*;
use std::sync::OnceLock;

fn pair() -> (Channel, Channel) {
    let a = Channel::initiator(&StaticKey::generate().unwrap()).unwrap();
    let b = Channel::responder(&StaticKey::generate().unwrap()).unwrap();
    (a, b)
}

/// Moves everything `from` transmits into `to`, in `chunk`-byte pieces; returns the
/// number of bytes moved.
fn shuttle(from: &mut Channel, to: &mut Channel, chunk: usize) -> usize {
    let mut moved = 0;
    while let Some(bytes) = from.poll_transmit() {
        moved += bytes.len();
        for piece in bytes.chunks(chunk) {
            to.handle_input(piece).unwrap();
        }
    }
    moved
}

fn handshake_in_chunks(chunk: usize) -> (Channel, Channel) {
    let (mut a, mut b) = pair();
    while shuttle(&mut a, &mut b, chunk) + shuttle(&mut b, &mut a, chunk) > 0 {}
    assert!(a.is_established() && b.is_established());
    (a, b)
}

fn established() -> (Channel, Channel) {
    handshake_in_chunks(usize::MAX)
}

fn drain_plaintext(channel: &mut Channel) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(bytes) = channel.poll_plaintext() {
        out.extend_from_slice(&bytes);
    }
    out
}

/// Splits a transmit buffer into its length-prefixed messages (bodies only).
fn messages(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((message, rest)) = split_message(bytes).unwrap() {
        out.push(message.to_vec());
        bytes = rest;
    }
    assert!(bytes.is_empty());
    out
}

#[test]
fn handshake_agrees_on_hash_and_static_keys() {
    let (ka, kb) = (
        StaticKey::generate().unwrap(),
        StaticKey::generate().unwrap(),
    );
    let mut a = Channel::initiator(&ka).unwrap();
    let mut b = Channel::responder(&kb).unwrap();
    assert!(b.poll_transmit().is_none(), "the responder waits");
    assert_eq!(a.handshake_hash(), None);
    assert_eq!(a.remote_static(), None);

    let m1 = a
        .poll_transmit()
        .expect("initiator's first message is ready");
    assert_eq!(messages(&m1).len(), 1);
    b.handle_input(&m1).unwrap();
    assert!(!b.is_established());
    a.handle_input(&b.poll_transmit().unwrap()).unwrap();
    assert!(
        a.is_established(),
        "the initiator finishes on writing message 3"
    );
    b.handle_input(&a.poll_transmit().unwrap()).unwrap();
    assert!(b.is_established());
    assert!(a.poll_transmit().is_none() && b.poll_transmit().is_none());

    assert_eq!(a.handshake_hash(), b.handshake_hash());
    assert!(a.handshake_hash().is_some());
    assert_eq!(a.remote_static(), Some(kb.public()));
    assert_eq!(b.remote_static(), Some(ka.public()));
    assert!(drain_plaintext(&mut a).is_empty() && drain_plaintext(&mut b).is_empty());
}

/// Our transport (ring, in place) against snow's own `TransportState`, both ways and for each
/// role: the wire is plain Noise, so peers built on snow's transport interoperate.
#[test]
fn transport_messages_interoperate_with_snows_transport_state() {
    for we_initiate in [true, false] {
        let (ours_key, theirs_key) = (
            StaticKey::generate().unwrap(),
            StaticKey::generate().unwrap(),
        );
        let mut ours = if we_initiate {
            Channel::initiator(&ours_key).unwrap()
        } else {
            Channel::responder(&ours_key).unwrap()
        };
        let builder = builder(&theirs_key).unwrap();
        let mut theirs = if we_initiate {
            builder.build_responder().unwrap()
        } else {
            builder.build_initiator().unwrap()
        };
        let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
        while !(ours.is_established() && theirs.is_handshake_finished()) {
            if theirs.is_my_turn() && !theirs.is_handshake_finished() {
                let n = theirs.write_message(&[], &mut buf).unwrap();
                let mut framed = (n as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&buf[..n]);
                ours.handle_input(&framed).unwrap();
            }
            while let Some(bytes) = ours.poll_transmit() {
                for message in messages(&bytes) {
                    theirs.read_message(&message, &mut buf).unwrap();
                }
            }
        }
        let mut theirs = theirs.into_transport_mode().unwrap();
        for round in 0..3u8 {
            // Ours to theirs: several messages, one over the 65,519-byte plaintext limit.
            let big = vec![round; MAX_PLAINTEXT_PER_MESSAGE + 100];
            ours.write(b"hello").unwrap();
            ours.write(&big).unwrap();
            let mut got = Vec::new();
            while let Some(bytes) = ours.poll_transmit() {
                for message in messages(&bytes) {
                    let n = theirs.read_message(&message, &mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
            }
            assert_eq!(got.len(), 5 + big.len());
            assert_eq!(&got[..5], b"hello");
            // Theirs to ours.
            let n = theirs.write_message(&[round; 1000], &mut buf).unwrap();
            let mut framed = (n as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&buf[..n]);
            ours.handle_input(&framed).unwrap();
            assert_eq!(drain_plaintext(&mut ours), vec![round; 1000]);
        }
    }
}

/// Completes a handshake between an initiator preferring `a` and a responder preferring `b`;
/// returns the cipher each agreed on, after checking that data flows both ways.
fn agreed(a: Cipher, b: Cipher) -> (Cipher, Cipher) {
    let mut a = Channel::initiator_preferring(&StaticKey::generate().unwrap(), a).unwrap();
    let mut b = Channel::responder_preferring(&StaticKey::generate().unwrap(), b).unwrap();
    while shuttle(&mut a, &mut b, usize::MAX) + shuttle(&mut b, &mut a, usize::MAX) > 0 {}
    a.write(b"ping").unwrap();
    shuttle(&mut a, &mut b, 7);
    assert_eq!(drain_plaintext(&mut b), b"ping");
    b.write(&[9; 70_000]).unwrap();
    shuttle(&mut b, &mut a, 1000);
    assert_eq!(drain_plaintext(&mut a), vec![9; 70_000]);
    (a.cipher().unwrap(), b.cipher().unwrap())
}

#[test]
fn aes_gcm_is_agreed_only_when_both_sides_prefer_it() {
    use Cipher::{AesGcm, ChaChaPoly};
    assert_eq!(agreed(AesGcm, AesGcm), (AesGcm, AesGcm));
    assert_eq!(agreed(AesGcm, ChaChaPoly), (ChaChaPoly, ChaChaPoly));
    assert_eq!(agreed(ChaChaPoly, AesGcm), (ChaChaPoly, ChaChaPoly));
    assert_eq!(agreed(ChaChaPoly, ChaChaPoly), (ChaChaPoly, ChaChaPoly));
}

/// Runs a plain snow peer that writes `payloads` (one per message of its turn) against
/// `ours`; returns the first error `ours` reports.
fn against_snow(mut ours: Channel, initiator: bool, payloads: &[&[u8]]) -> Result<(), NoiseError> {
    let key = StaticKey::generate().unwrap();
    let builder = builder(&key).unwrap();
    let mut theirs = if initiator {
        builder.build_initiator().unwrap()
    } else {
        builder.build_responder().unwrap()
    };
    let mut payloads = payloads.iter();
    let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
    while !theirs.is_handshake_finished() {
        if theirs.is_my_turn() {
            let payload = payloads.next().copied().unwrap_or_default();
            let n = theirs.write_message(payload, &mut buf).unwrap();
            let mut framed = (n as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&buf[..n]);
            ours.handle_input(&framed)?;
        }
        while let Some(bytes) = ours.poll_transmit() {
            for message in messages(&bytes) {
                theirs.read_message(&message, &mut buf).unwrap();
            }
        }
    }
    Ok(())
}

#[test]
fn a_cipher_choice_outside_the_offer_fails_the_handshake() {
    let key = StaticKey::generate().unwrap();
    // We offered ChaCha20-Poly1305 only; the responder answers AES-256-GCM.
    let ours = Channel::initiator_preferring(&key, Cipher::ChaChaPoly).unwrap();
    let err = against_snow(ours, false, &[&[1]]).unwrap_err();
    assert!(err.to_string().contains("did not offer"), "{err}");
    // An unknown cipher offered or chosen.
    let ours = Channel::responder_preferring(&key, Cipher::AesGcm).unwrap();
    let err = against_snow(ours, true, &[&[7]]).unwrap_err();
    assert!(
        err.to_string().contains("unknown transport cipher 7"),
        "{err}"
    );
    let ours = Channel::initiator_preferring(&key, Cipher::AesGcm).unwrap();
    let err = against_snow(ours, false, &[&[7]]).unwrap_err();
    assert!(
        err.to_string().contains("unknown transport cipher 7"),
        "{err}"
    );
    // A third message with a payload.
    let ours = Channel::responder_preferring(&key, Cipher::AesGcm).unwrap();
    let err = against_snow(ours, true, &[&[1], &[1]]).unwrap_err();
    assert_eq!(err, NoiseError::HandshakePayload { len: 1 });
}

#[test]
fn handshake_byte_by_byte() {
    let (a, b) = handshake_in_chunks(1);
    assert_eq!(a.handshake_hash(), b.handshake_hash());
}

#[test]
fn handshake_and_data_concatenated_in_one_call() {
    let (mut a, mut b) = pair();
    b.handle_input(&a.poll_transmit().unwrap()).unwrap();
    a.handle_input(&b.poll_transmit().unwrap()).unwrap();
    // Message 3 and two transport messages reach the responder in one read.
    a.write(b"hello ").unwrap();
    a.write(b"world").unwrap();
    let all = a.poll_transmit().unwrap();
    assert_eq!(messages(&all).len(), 3);
    b.handle_input(&all).unwrap();
    assert!(b.is_established());
    assert_eq!(drain_plaintext(&mut b), b"hello world");
    assert_eq!(a.handshake_hash(), b.handshake_hash());
}

#[test]
fn large_write_spans_several_messages() {
    let (mut a, mut b) = established();
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    a.write(&data).unwrap();
    let wire = a.poll_transmit().unwrap();
    let sizes: Vec<usize> = messages(&wire).iter().map(Vec::len).collect();
    assert_eq!(sizes.len(), data.len().div_ceil(MAX_PLAINTEXT_PER_MESSAGE));
    assert!(sizes.iter().all(|&n| n <= MAX_NOISE_MESSAGE));
    assert_eq!(sizes[0], MAX_NOISE_MESSAGE);
    b.handle_input(&wire).unwrap();
    assert_eq!(drain_plaintext(&mut b), data);

    // The other direction, read in odd-sized pieces.
    b.write(&data).unwrap();
    let wire = b.poll_transmit().unwrap();
    let mut got = Vec::new();
    for piece in wire.chunks(7919) {
        a.handle_input(piece).unwrap();
        got.extend(drain_plaintext(&mut a));
    }
    assert_eq!(got, data);
}

#[test]
fn many_small_writes_arrive_in_order() {
    let (mut a, mut b) = established();
    let mut expected = Vec::new();
    for i in 0..1000u32 {
        let chunk = i.to_be_bytes().repeat((i % 5) as usize);
        expected.extend_from_slice(&chunk);
        a.write(&chunk).unwrap();
        if i % 7 == 0 {
            shuttle(&mut a, &mut b, 13);
        }
    }
    shuttle(&mut a, &mut b, 13);
    assert_eq!(drain_plaintext(&mut b), expected);
    a.write(&[]).unwrap();
    assert!(a.poll_transmit().is_none(), "an empty write sends nothing");
}

#[test]
fn flipped_byte_is_a_decrypt_error() {
    let (mut a, mut b) = established();
    a.write(b"first").unwrap();
    a.write(b"second").unwrap();
    let mut wire = a.poll_transmit().unwrap().to_vec();
    let first_len = HEADER_LEN + 5 + NOISE_TAG_LEN;
    wire[first_len + HEADER_LEN + 2] ^= 0x40;
    let err = b.handle_input(&wire).unwrap_err();
    assert_eq!(
        err,
        NoiseError::Decrypt {
            len: 6 + NOISE_TAG_LEN
        }
    );
    assert!(!err.is_transient());
    assert_eq!(
        drain_plaintext(&mut b),
        b"first",
        "data before the bad message is kept"
    );
    assert_eq!(b.handle_input(b"more").unwrap_err(), NoiseError::Failed);
    assert_eq!(b.write(b"x").unwrap_err(), NoiseError::Failed);
}

#[test]
fn short_transport_message_is_a_decrypt_error() {
    let (_, mut b) = established();
    assert_eq!(
        b.handle_input(&[0, 3, 1, 2, 3]).unwrap_err(),
        NoiseError::Decrypt { len: 3 }
    );
}

#[test]
fn garbage_before_handshake_is_typed() {
    // Too short for an ephemeral key.
    let mut b = Channel::responder(&StaticKey::generate().unwrap()).unwrap();
    let err = b.handle_input(&[0, 4, 1, 2, 3, 4]).unwrap_err();
    assert!(matches!(err, NoiseError::Handshake(_)), "{err}");
    // Long enough: the tail would be a (plaintext) payload, which dndm forbids.
    let mut b = Channel::responder(&StaticKey::generate().unwrap()).unwrap();
    let mut msg = vec![0, 40];
    msg.extend([9; 40]);
    assert_eq!(
        b.handle_input(&msg).unwrap_err(),
        NoiseError::HandshakePayload { len: 8 }
    );
    // The initiator expects message 2, encrypted: garbage fails authentication.
    let mut a = Channel::initiator(&StaticKey::generate().unwrap()).unwrap();
    let mut msg = vec![0, 96];
    msg.extend([7; 96]);
    assert!(matches!(
        a.handle_input(&msg).unwrap_err(),
        NoiseError::Handshake(_)
    ));
    // An HTTP request is a length prefix of 0x4745 and then not enough data: buffered.
    let mut b = Channel::responder(&StaticKey::generate().unwrap()).unwrap();
    b.handle_input(b"GET / HTTP/1.1\r\n").unwrap();
    assert!(!b.is_established());
}

#[test]
fn replayed_handshake_message_is_rejected() {
    let (mut a, mut b) = pair();
    let m1 = a.poll_transmit().unwrap();
    b.handle_input(&m1).unwrap();
    // The responder now expects message 3; a replayed message 1 does not authenticate.
    let err = b.handle_input(&m1).unwrap_err();
    assert!(matches!(err, NoiseError::Handshake(_)), "{err}");
}

#[test]
fn handshake_message_out_of_turn_is_rejected() {
    // The public constructors always send as soon as it is their turn; an initiator that
    // has not sent message 1 yet shows the defensive check.
    let key = StaticKey::generate().unwrap();
    let mut a = Channel::new(
        builder(&key).unwrap().build_initiator().unwrap(),
        Cipher::ChaChaPoly,
    );
    let err = a.handle_input(&[0, 1, 0]).unwrap_err();
    assert_eq!(err, NoiseError::UnexpectedHandshakeMessage { len: 1 });
}

#[test]
fn zero_length_prefix_is_rejected() {
    let mut b = Channel::responder(&StaticKey::generate().unwrap()).unwrap();
    assert_eq!(b.handle_input(&[0, 0]).unwrap_err(), NoiseError::ZeroLength);
    let (_, mut b) = established();
    b.handle_input(&[0]).unwrap();
    assert_eq!(b.handle_input(&[0, 5]).unwrap_err(), NoiseError::ZeroLength);
}

#[test]
fn write_before_handshake_is_not_established() {
    let (mut a, mut b) = pair();
    assert_eq!(a.write(b"x").unwrap_err(), NoiseError::NotEstablished);
    assert_eq!(b.write(b"x").unwrap_err(), NoiseError::NotEstablished);
    // Not a failure: the handshake still completes.
    while shuttle(&mut a, &mut b, 64) + shuttle(&mut b, &mut a, 64) > 0 {}
    assert!(a.is_established() && b.is_established());
}

#[test]
fn undrained_plaintext_is_refused_without_consuming_input() {
    let (mut a, mut b) = established();
    let data = vec![1u8; MAX_PLAINTEXT_BACKLOG + 1];
    a.write(&data).unwrap();
    b.handle_input(&a.poll_transmit().unwrap()).unwrap();
    a.write(b"tail").unwrap();
    let tail = a.poll_transmit().unwrap();
    let err = b.handle_input(&tail).unwrap_err();
    assert!(matches!(err, NoiseError::Backlog { .. }), "{err}");
    assert_eq!(drain_plaintext(&mut b).len(), data.len());
    b.handle_input(&tail).unwrap();
    assert_eq!(drain_plaintext(&mut b), b"tail");
}

#[test]
fn input_buffer_holds_at_most_one_message() {
    let (mut a, mut b) = established();
    a.write(&vec![5u8; 3 * MAX_PLAINTEXT_PER_MESSAGE]).unwrap();
    let wire = a.poll_transmit().unwrap();
    for piece in wire.chunks(50_000) {
        b.handle_input(piece).unwrap();
        assert!(b.input.len() < HEADER_LEN + MAX_NOISE_MESSAGE);
        assert!(b.input.capacity() <= HEADER_LEN + MAX_NOISE_MESSAGE);
        drain_plaintext(&mut b);
    }
    assert!(b.input.is_empty());
}

#[test]
fn binding_sign_and_verify() {
    let identity = Keypair::from_seed([1; 32]);
    let other = Keypair::from_seed([2; 32]);
    let key = StaticKey::generate().unwrap().public();
    let other_key = StaticKey::generate().unwrap().public();
    let message = binding_message(&key);
    assert!(message.starts_with(b"dndm-noise-binding-v1\0"));
    assert_eq!(message.len(), BINDING_DOMAIN.len() + 32);

    let signature = sign_binding(&identity, &key);
    verify_binding(&identity.public(), &key, &signature).unwrap();
    for err in [
        verify_binding(&other.public(), &key, &signature),
        verify_binding(&identity.public(), &other_key, &signature),
        verify_binding(&identity.public(), &key, &signature[..63]),
        verify_binding(&identity.public(), &key, &[]),
    ] {
        let err = err.unwrap_err();
        assert!(matches!(err, NoiseError::Binding(_)), "{err}");
        assert!(!err.is_transient());
    }
}

#[test]
fn debug_does_not_leak_the_private_key() {
    let key = StaticKey::generate().unwrap();
    let text = format!("{key:?}");
    assert!(text.contains(&Hex(&key.public).to_string()));
    assert!(!text.contains(&Hex(&key.private).to_string()));
    let (a, _) = established();
    assert!(format!("{a:?}").contains("transport"));
}

proptest! {
    // Each case runs a handshake (X25519 is slow in debug builds): fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_input_to_a_fresh_responder_never_panics(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8)
    ) {
        static KEY: OnceLock<StaticKey> = OnceLock::new();
        let key = KEY.get_or_init(|| StaticKey::generate().unwrap());
        let mut b = Channel::responder(key).unwrap();
        for chunk in &chunks {
            if b.handle_input(chunk).is_err() {
                break;
            }
            let _ = (b.poll_plaintext(), b.poll_transmit());
        }
    }

    #[test]
    fn arbitrary_input_to_an_established_channel_never_panics(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        valid_first in any::<bool>(),
    ) {
        let (mut a, mut b) = established();
        if valid_first {
            a.write(b"valid").unwrap();
            b.handle_input(&a.poll_transmit().unwrap()).unwrap();
        }
        for chunk in &chunks {
            if b.handle_input(chunk).is_err() {
                prop_assert_eq!(b.handle_input(&[1]), Err(NoiseError::Failed));
                break;
            }
            let _ = (b.poll_plaintext(), b.poll_transmit());
        }
    }
}

proptest! {
    // Each case runs a handshake and encrypts up to 200 kB: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn stream_survives_any_split(
        data in prop::collection::vec(any::<u8>(), 0..200_000),
        cuts in prop::collection::vec(1usize..70_000, 1..20),
    ) {
        let (mut a, mut b) = established();
        a.write(&data).unwrap();
        let wire = a.poll_transmit().unwrap_or_default();
        let mut rest = &wire[..];
        let mut got = Vec::new();
        for &cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(cut.min(rest.len()));
            b.handle_input(head).unwrap();
            got.extend(drain_plaintext(&mut b));
            rest = tail;
        }
        prop_assert_eq!(got, data);
    }
}
