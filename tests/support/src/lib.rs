//! Fixtures the dndm crates' tests share (not published): test message types with known
//! type names and schemas, and deterministic identities. Each crate's `tests/support` module
//! adds what only its tests need (session shuttles, mesh nodes, child processes).

use std::time::Duration;

use dndm_core::{Fingerprint, Keypair, Message, PeerId};
use dndm_router::{Intent, Interest, RequestError, Router};

/// A reading with a sequence number (`test.Reading`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reading {
    /// The sequence number.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
}

impl prost::Name for Reading {
    const NAME: &'static str = "Reading";
    const PACKAGE: &'static str = "test";
}
impl Message for Reading {}

/// Same type name as [`Reading`] (`test.Reading`), another schema and fingerprint: for the
/// refusal of a link between two schemas of one name.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadingV2 {
    /// A name instead of a sequence number.
    #[prost(string, tag = "1")]
    pub name: String,
}

impl prost::Name for ReadingV2 {
    const NAME: &'static str = "Reading";
    const PACKAGE: &'static str = "test";
}
impl Message for ReadingV2 {
    fn fingerprint() -> Fingerprint {
        Fingerprint::of_schema("test.Reading", b"v2")
    }
}

/// Three versions of one protobuf message, `robot.Imu`: v2 adds `double temperature = 4`, v3
/// retypes field 2 (`float ax` → `string ax`). `built` holds prost-build's output for
/// `proto/v1..v3/imu.proto`; `derived` the same messages written by hand.
pub mod imu {
    /// prost-build output, each version with the one line a user writes.
    pub mod built {
        /// `proto/v1/imu.proto`.
        #[allow(missing_docs, unreachable_pub, clippy::all)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/v1/robot.rs"));
            impl dndm_core::Message for Imu {}
        }
        /// `proto/v2/imu.proto`.
        #[allow(missing_docs, unreachable_pub, clippy::all)]
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/v2/robot.rs"));
            impl dndm_core::Message for Imu {}
        }
        /// `proto/v3/imu.proto`.
        #[allow(missing_docs, unreachable_pub, clippy::all)]
        pub mod v3 {
            include!(concat!(env!("OUT_DIR"), "/v3/robot.rs"));
            impl dndm_core::Message for Imu {}
        }
    }

    /// The same three versions, hand-derived.
    pub mod derived {
        /// Version 1.
        pub mod v1 {
            /// `robot.Imu` v1.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct Imu {
                /// Sequence number.
                #[prost(uint64, tag = "1")]
                pub seq: u64,
                /// Acceleration.
                #[prost(float, tag = "2")]
                pub ax: f32,
                /// Frame name.
                #[prost(string, tag = "3")]
                pub frame: String,
            }
            impl prost::Name for Imu {
                const NAME: &'static str = "Imu";
                const PACKAGE: &'static str = "robot";
            }
            impl dndm_core::Message for Imu {}
        }
        /// Version 2: a field added.
        pub mod v2 {
            /// `robot.Imu` v2.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct Imu {
                /// Sequence number.
                #[prost(uint64, tag = "1")]
                pub seq: u64,
                /// Acceleration.
                #[prost(float, tag = "2")]
                pub ax: f32,
                /// Frame name.
                #[prost(string, tag = "3")]
                pub frame: String,
                /// Added in v2.
                #[prost(double, tag = "4")]
                pub temperature: f64,
            }
            impl prost::Name for Imu {
                const NAME: &'static str = "Imu";
                const PACKAGE: &'static str = "robot";
            }
            impl dndm_core::Message for Imu {}
        }
        /// Version 3: field 2 retyped.
        pub mod v3 {
            /// `robot.Imu` v3.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct Imu {
                /// Sequence number.
                #[prost(uint64, tag = "1")]
                pub seq: u64,
                /// Acceleration, now as text.
                #[prost(string, tag = "2")]
                pub ax: String,
                /// Frame name.
                #[prost(string, tag = "3")]
                pub frame: String,
            }
            impl prost::Name for Imu {
                const NAME: &'static str = "Imu";
                const PACKAGE: &'static str = "robot";
            }
            impl dndm_core::Message for Imu {}
        }
    }
}

/// The deterministic keypair of test peer `seed`.
pub fn keypair(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

/// The PeerId of test peer `seed`.
pub fn peer(seed: u8) -> PeerId {
    keypair(seed).peer_id()
}

/// Sends readings `0..n` on `publisher` and checks that `subscriber` receives exactly them, in
/// order, each within `guard` (a bound on a failure, not a synchronisation device).
///
/// # Panics
/// When a reading is missing, late past `guard`, or out of order.
pub async fn send_and_receive_in_order(
    publisher: &Intent<Reading>,
    subscriber: &mut Interest<Reading>,
    n: u64,
    guard: Duration,
) {
    for seq in 0..n {
        if let Err(e) = publisher.send(Reading { seq }).await {
            panic!("send {seq}: {e}");
        }
    }
    for seq in 0..n {
        match tokio::time::timeout(guard, subscriber.recv()).await {
            Ok(Ok(got)) => assert_eq!(got.seq, seq, "readings arrive in order, once"),
            Ok(Err(e)) => panic!("receive {seq}: {e}"),
            Err(_) => panic!("reading {seq} did not arrive within {guard:?}"),
        }
    }
}

/// Asks the service on `path` (a peer's, reached once its advert arrived), asking again while
/// nobody serves it yet; gives up after `guard`.
///
/// # Panics
/// When no answer came within `guard`.
pub async fn request_once_served<Req: Message + Clone, Resp: Message>(
    router: &Router,
    path: &str,
    request: Req,
    guard: Duration,
) -> Result<Resp, RequestError> {
    let answer = tokio::time::timeout(guard, async {
        loop {
            match router
                .request::<Req, Resp>(path, request.clone(), guard)
                .await
            {
                Err(RequestError::NoListener(_)) => tokio::task::yield_now().await,
                other => return other,
            }
        }
    })
    .await;
    match answer {
        Ok(answer) => answer,
        Err(_) => panic!("nobody served {path} within {guard:?}"),
    }
}
