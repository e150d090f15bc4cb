//! Encoding of arguments and results: JSON (`serde_json`, feature `json`) and
//! protobuf (prost, feature `proto`), both on by default.
//!
//! A codec is a marker type implementing [`Encode`] and [`Decode`] for the
//! types it supports. The typed RPC calls ([`Client::call_json`],
//! [`Client::call_proto`]) and handlers ([`ServerBuilder::json`],
//! [`ServerBuilder::proto`]) are built on them, as is the code that
//! `#[uds::service]` generates.
//!
//! JSON: `data` is the JSON of the value; empty `data` decodes as JSON
//! `null` (so `()` and `Option` accept a call with no argument, as the Go
//! package sends it). Protobuf: `data` is the message's encoding; empty data
//! is the default message.
//!
//! Both encode into a per-thread buffer that is reused once the bytes
//! encoded earlier are gone (in the RPC layer: as soon as they are written),
//! so steady-state encoding does not allocate. Messages over 1 MiB get a
//! buffer of their own.
//!
//! [`Client::call_json`]: crate::rpc::Client::call_json
//! [`Client::call_proto`]: crate::rpc::Client::call_proto
//! [`ServerBuilder::json`]: crate::rpc::ServerBuilder::json
//! [`ServerBuilder::proto`]: crate::rpc::ServerBuilder::proto

use bytes::Bytes;

// Only the codecs encode through it.
#[cfg(any(feature = "json", feature = "proto"))]
mod arena;

/// A value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// JSON (de)serialization failed.
    #[error("JSON: {0}")]
    Json(String),
    /// Protobuf decoding failed.
    #[error("protobuf: {0}")]
    Proto(String),
}

/// Encodes values of type `T`.
pub trait Encode<T: ?Sized> {
    /// The encoded bytes of `value`.
    ///
    /// The built-in codecs encode into a buffer reused by the calling thread
    /// (see the module docs), so encoding usually allocates nothing. The
    /// bytes returned share that buffer's current block (at least 64 KiB)
    /// while they live: send them, don't keep them for long.
    fn encode(value: &T) -> Result<Bytes, CodecError>;
}

/// Decodes values of type `T`.
pub trait Decode<T> {
    /// The value encoded in `bytes`.
    fn decode(bytes: Bytes) -> Result<T, CodecError>;
}

/// The JSON codec (`serde_json`).
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl<T: serde::Serialize + ?Sized> Encode<T> for Json {
    fn encode(value: &T) -> Result<Bytes, CodecError> {
        arena::encode(None, |buf| {
            serde_json::to_writer(bytes::BufMut::writer(buf), value)
                .map_err(|e| CodecError::Json(e.to_string()))
        })
    }
}

#[cfg(feature = "json")]
impl<T: serde::de::DeserializeOwned> Decode<T> for Json {
    fn decode(bytes: Bytes) -> Result<T, CodecError> {
        let input: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(input).map_err(|e| CodecError::Json(e.to_string()))
    }
}

/// The protobuf codec (prost).
#[cfg(feature = "proto")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Proto;

#[cfg(feature = "proto")]
impl<T: prost::Message> Encode<T> for Proto {
    fn encode(value: &T) -> Result<Bytes, CodecError> {
        let len = value.encoded_len();
        arena::encode(Some(len), |buf| {
            value
                .encode(buf)
                .map_err(|e| CodecError::Proto(e.to_string()))
        })
    }
}

#[cfg(feature = "proto")]
impl<T: prost::Message + Default> Decode<T> for Proto {
    fn decode(bytes: Bytes) -> Result<T, CodecError> {
        T::decode(bytes).map_err(|e| CodecError::Proto(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "json")]
    #[test]
    fn json_empty_data_is_null() {
        use super::{Decode, Json};
        let unit: () = <Json as Decode<()>>::decode(bytes::Bytes::new()).unwrap();
        assert_eq!(unit, ());
        let none: Option<i32> = <Json as Decode<Option<i32>>>::decode(bytes::Bytes::new()).unwrap();
        assert_eq!(none, None);
        assert!(<Json as Decode<i32>>::decode(bytes::Bytes::new()).is_err());
    }
}
