//! Raw intents over a remote link: encoded bytes published without their Rust type reach a
//! typed subscriber on the peer, in order; a raw intent never links in its own process.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use dndm_core::{Message, Qos, Route};
use dndm_router::{Overflow, PublishOptions, RawMessage, SubscribeOptions};
use prost::Message as _;
use support::{Reading, linked_pair};

const GUARD: Duration = Duration::from_secs(60);

#[tokio::test]
async fn raw_bytes_reach_a_typed_subscriber_on_a_peer() {
    let (a, b) = linked_pair().await;
    let route: Route = format!("{}@fleet.status", Reading::type_name())
        .parse()
        .unwrap();
    let options = PublishOptions::default().qos(Qos::reliable());
    let raw = a
        .publish_raw(route, Reading::fingerprint(), None, options)
        .unwrap();
    // Not in its own process: there is no type to hand a local subscriber.
    let _local = a.subscribe::<Reading>("fleet.status").unwrap();
    let options = SubscribeOptions::default()
        .capacity(1024)
        .overflow(Overflow::Block);
    let mut remote = b.subscribe_with::<Reading>("fleet.*", options).unwrap();
    raw.wait_for_interest(GUARD).await.unwrap();
    assert_eq!(raw.subscriber_count(), 1, "only the peer's subscriber");
    assert_eq!(raw.fingerprint(), Reading::fingerprint());
    for seq in 0..200 {
        let payload = Bytes::from(Reading { seq }.encode_to_vec());
        raw.send(RawMessage::new(payload)).await.unwrap();
    }
    for want in 0..200 {
        let got = tokio::time::timeout(GUARD, remote.recv()).await.unwrap();
        assert_eq!(got.unwrap().seq, want);
    }
    a.close().await;
    b.close().await;
}
