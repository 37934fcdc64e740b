//! Built-in message types, so tools and scripts can exchange data without a schema of their
//! own: [`Text`] (`dndm.Text`), [`Json`] (`dndm.Json`) and [`Bytes`] (`dndm.Bytes`).
//!
//! They are plain prost messages in the protobuf package `dndm`, equivalent to:
//!
//! ```proto
//! syntax = "proto3";
//! package dndm;
//! message Text  { string text = 1; }
//! message Json  { string json = 1; }  // one JSON value, as text
//! message Bytes { bytes data = 1; }
//! ```
//!
//! The `dndm pub` and `dndm sub` commands use them (`--type text|json|bytes`), so a program
//! that publishes `dndm::builtin::Text` on `chat.room1` is heard by `dndm sub chat.*`.
//!
//! ```
//! use dndm::Message as _;
//! use dndm::builtin::{Json, Text};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! assert_eq!(Text::type_name(), "dndm.Text");
//! assert_eq!(Json::type_name(), "dndm.Json");
//! let router = dndm::Router::builder().build()?;
//! let mut sub = router.subscribe::<Text>("chat.*")?;
//! let publisher = router.publish::<Text>("chat.room1")?;
//! publisher.send(Text::from("hi")).await?;
//! assert_eq!(sub.recv().await?.text, "hi");
//! router.close().await;
//! # Ok(()) }
//! ```

/// A UTF-8 text message: `dndm.Text { string text = 1; }`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Text {
    /// The text.
    #[prost(string, tag = "1")]
    pub text: String,
}

impl prost::Name for Text {
    const NAME: &'static str = "Text";
    const PACKAGE: &'static str = "dndm";
}
impl crate::Message for Text {}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Self { text }
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_owned(),
        }
    }
}

/// One JSON value carried as text: `dndm.Json { string json = 1; }`.
///
/// The type does not check the text; `dndm pub --type json` refuses lines that do not parse.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Json {
    /// The JSON text.
    #[prost(string, tag = "1")]
    pub json: String,
}

impl prost::Name for Json {
    const NAME: &'static str = "Json";
    const PACKAGE: &'static str = "dndm";
}
impl crate::Message for Json {}

impl From<String> for Json {
    fn from(json: String) -> Self {
        Self { json }
    }
}

/// Opaque bytes: `dndm.Bytes { bytes data = 1; }`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Bytes {
    /// The bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

impl prost::Name for Bytes {
    const NAME: &'static str = "Bytes";
    const PACKAGE: &'static str = "dndm";
}
impl crate::Message for Bytes {}

impl From<Vec<u8>> for Bytes {
    fn from(data: Vec<u8>) -> Self {
        Self { data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message as _;
    use prost::Message as _;

    #[test]
    fn names_and_round_trips() {
        assert_eq!(Text::type_name(), "dndm.Text");
        assert_eq!(Json::type_name(), "dndm.Json");
        assert_eq!(Bytes::type_name(), "dndm.Bytes");
        let text = Text::from("héllo");
        assert_eq!(Text::decode(text.encode_to_vec().as_slice()).unwrap(), text);
        let json = Json::from(r#"{"a":1}"#.to_owned());
        assert_eq!(Json::decode(json.encode_to_vec().as_slice()).unwrap(), json);
        let bytes = Bytes::from(vec![0, 255, 10]);
        assert_eq!(
            Bytes::decode(bytes.encode_to_vec().as_slice()).unwrap(),
            bytes
        );
    }

    #[test]
    fn wire_format_matches_the_proto() {
        // Field 1, length-delimited: tag byte 0x0a, then the length.
        assert_eq!(Text::from("hi").encode_to_vec(), b"\x0a\x02hi");
        assert_eq!(Bytes::from(vec![7]).encode_to_vec(), b"\x0a\x01\x07");
    }
}
