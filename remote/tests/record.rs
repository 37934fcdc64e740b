//! Recording over a remote link: the recorder's endpoint hands over every signed batch its
//! peers send; written to a recording, each verifies offline against its publisher's key, and
//! the recorded messages come back in order on their routes.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use dndm_codec::record::{FILE_MAGIC, Record, audit, messages};
use dndm_core::{Qos, Signing};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint};
use dndm_router::{Overflow, PublishOptions, Router, SubscribeOptions};
use prost::Message as _;
use support::{Reading, keypair};
use tokio::sync::mpsc;

const GUARD: Duration = Duration::from_secs(60);

/// A publisher router and a recorder router over an in-memory link; the recorder's endpoint
/// records (and so asks its peers to sign).
async fn pair() -> (Router, Router, RemoteEndpoint, mpsc::Receiver<Record>) {
    let (ka, kb) = (keypair(1), keypair(2));
    let (ida, idb) = (ka.peer_id(), kb.peer_id());
    let a = Router::builder().name("publisher").build().unwrap();
    let b = Router::builder().name("recorder").build().unwrap();
    let ea = RemoteEndpoint::new(ka, RemoteConfig::default()).unwrap();
    let mut config = RemoteConfig::default();
    config.session.signing = Signing::Batch;
    config.session.record = true;
    let eb = RemoteEndpoint::new(kb, config).unwrap();
    let recorder = eb.recorder(1024).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    b.attach(Arc::new(eb.clone())).await.unwrap();
    let (one, other) = tokio::io::duplex(64 * 1024);
    ea.adopt_authenticated(idb, Box::new(one), true);
    eb.adopt_authenticated(ida, Box::new(other), false);
    (a, b, eb, recorder)
}

#[tokio::test]
async fn recorded_batches_verify_offline_and_give_back_the_messages_in_order() {
    let (a, b, eb, mut recorder) = pair().await;
    let intent = a
        .publish_with::<Reading>(
            "fleet.status",
            PublishOptions::default().qos(Qos::reliable()),
        )
        .unwrap();
    let options = SubscribeOptions::default()
        .capacity(1024)
        .overflow(Overflow::Block);
    let mut subscriber = b.subscribe_with::<Reading>("fleet.*", options).unwrap();
    intent.wait_for_interest(GUARD).await.unwrap();
    for seq in 0..500 {
        intent.send(Reading { seq }).await.unwrap();
    }
    for want in 0..500 {
        let got = tokio::time::timeout(GUARD, subscriber.recv())
            .await
            .unwrap();
        assert_eq!(got.unwrap().seq, want);
    }
    // Every batch that delivered those messages is with the recorder by now.
    let mut file = FILE_MAGIC.to_vec();
    while let Ok(record) = recorder.try_recv() {
        file.extend(record.encode());
    }
    let report = audit(&file).unwrap();
    assert!(report.all_verified(), "{report:?}");
    let publisher = keypair(1).peer_id();
    assert_eq!(report.signers.len(), 1, "{report:?}");
    assert_eq!(report.signers[&publisher].messages, 500, "{report:?}");
    let recorded = messages(&file).unwrap();
    let seqs: Vec<u64> = recorded
        .iter()
        .map(|m| {
            assert_eq!(m.route.to_string(), "test.Reading@fleet.status");
            assert_eq!(m.signer, publisher);
            Reading::decode(m.payload.clone()).unwrap().seq
        })
        .collect();
    assert_eq!(seqs, (0..500).collect::<Vec<_>>());
    assert!(eb.stats().recorded > 0);
    assert_eq!(eb.stats().record_dropped, 0);

    // A changed byte in a recorded frame: that batch fails, naming its signer.
    let mut changed = file.clone();
    let at = changed.len() - 80;
    changed[at] ^= 0x01;
    let report = audit(&changed).unwrap();
    assert!(!report.all_verified());
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].1, publisher);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_recorder_needs_recording_on_and_signatures() {
    let endpoint = RemoteEndpoint::new(keypair(3), RemoteConfig::default()).unwrap();
    let err = endpoint.recorder(16).unwrap_err();
    assert!(err.to_string().contains("session.record"), "{err}");
    let mut config = RemoteConfig::default();
    config.session.record = true;
    let err = RemoteEndpoint::new(keypair(4), config).unwrap_err();
    assert!(err.to_string().contains("session.record"), "{err}");
}
