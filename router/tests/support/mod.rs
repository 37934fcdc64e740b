//! Message types shared by the router tests.
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

use std::time::Duration;

use dndm_core::Message;
/// Same type name as [`Reading`], another schema.
pub use dndm_test_support::ReadingV2;

/// Guard for waits that must end; never a synchronisation device.
pub const GUARD: Duration = Duration::from_secs(20);

/// A reading with a publisher id and a sequence number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reading {
    #[prost(uint32, tag = "1")]
    pub publisher: u32,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
}

impl prost::Name for Reading {
    const NAME: &'static str = "Reading";
    const PACKAGE: &'static str = "test";
}
impl Message for Reading {}

impl Reading {
    pub fn new(publisher: u32, seq: u64) -> Self {
        Self {
            publisher,
            seq,
            payload: Vec::new(),
        }
    }
}

/// Another type, for "different types on the same path do not link".
#[derive(Clone, PartialEq, prost::Message)]
pub struct Other {
    #[prost(string, tag = "1")]
    pub text: String,
}

impl prost::Name for Other {
    const NAME: &'static str = "Other";
    const PACKAGE: &'static str = "test";
}
impl Message for Other {}

/// Same type name and fingerprint as [`Reading`], another Rust type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadingTwin {
    #[prost(uint32, tag = "1")]
    pub publisher: u32,
}

impl prost::Name for ReadingTwin {
    const NAME: &'static str = "Reading";
    const PACKAGE: &'static str = "test";
}
impl Message for ReadingTwin {}

/// A request and a response for request/response tests.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ask {
    #[prost(int64, tag = "1")]
    pub n: i64,
}

impl prost::Name for Ask {
    const NAME: &'static str = "Ask";
    const PACKAGE: &'static str = "test";
}
impl Message for Ask {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Answer {
    #[prost(int64, tag = "1")]
    pub n: i64,
}

impl prost::Name for Answer {
    const NAME: &'static str = "Answer";
    const PACKAGE: &'static str = "test";
}
impl Message for Answer {}
