//! Message types shared by the remote tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use dndm_core::{Fingerprint, Message};

/// A reading with a sequence number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reading {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
}

impl prost::Name for Reading {
    const NAME: &'static str = "Reading";
    const PACKAGE: &'static str = "test";
}
impl Message for Reading {}

/// Same type name as [`Reading`], another schema.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadingV2 {
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
