//! [`RawMessage`]: an encoded message of any type, for intents made with
//! [`Router::publish_raw`](crate::Router::publish_raw) (a replay moves recorded messages
//! without knowing their types).

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType, skip_field};

/// An encoded message, sent to peers exactly as it is.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct RawMessage {
    /// The message's protobuf encoding.
    pub payload: Bytes,
}

impl RawMessage {
    /// Wraps an encoded message.
    pub fn new(payload: Bytes) -> Self {
        Self { payload }
    }
}

impl prost::Message for RawMessage {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.payload);
    }

    // Raw intents never link in process, so nothing decodes into one: fields are skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.payload.len()
    }

    fn clear(&mut self) {
        self.payload = Bytes::new();
    }
}

impl prost::Name for RawMessage {
    const NAME: &'static str = "Raw";
    const PACKAGE: &'static str = "dndm";
}

impl dndm_core::Message for RawMessage {}
