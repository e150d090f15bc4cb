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
mod payload;

pub use payload::Payload;

/// The error a codec's library reported, kept as the [`CodecError`]'s
/// `source()`: a `serde_json::Error` or a prost `DecodeError` /
/// `EncodeError`, reachable with `downcast_ref`. Boxed so that those
/// crates' versions are not part of this crate's API.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A value could not be encoded or decoded.
///
/// The library's own error is the `source()` (and its text is in this
/// error's, for logs that print only the top error):
///
/// ```
/// # #[cfg(feature = "json")] {
/// use std::error::Error;
/// use uds::codec::{CodecError, Decode, Json};
/// let err = <Json as Decode<u32>>::decode("\"x\"".into()).unwrap_err();
/// assert!(matches!(err, CodecError::Json(_)));
/// assert!(err.source().unwrap().downcast_ref::<serde_json::Error>().is_some());
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// JSON (de)serialization failed; the source is the `serde_json::Error`.
    #[error("JSON: {0}")]
    Json(#[source] Cause),
    /// Protobuf encoding or decoding failed; the source is prost's
    /// `DecodeError` or `EncodeError`.
    #[error("protobuf: {0}")]
    Proto(#[source] Cause),
}

#[cfg(feature = "json")]
impl From<serde_json::Error> for CodecError {
    fn from(e: serde_json::Error) -> Self {
        CodecError::Json(Box::new(e))
    }
}

#[cfg(feature = "proto")]
impl From<prost::DecodeError> for CodecError {
    fn from(e: prost::DecodeError) -> Self {
        CodecError::Proto(Box::new(e))
    }
}

#[cfg(feature = "proto")]
impl From<prost::EncodeError> for CodecError {
    fn from(e: prost::EncodeError) -> Self {
        CodecError::Proto(Box::new(e))
    }
}

/// Encodes values of type `T`.
pub trait Encode<T: ?Sized> {
    /// The encoded bytes of `value`.
    ///
    /// The built-in codecs encode into a buffer reused by the calling thread
    /// (see the module docs), so encoding usually allocates nothing. The
    /// bytes returned share that buffer's current block (at least 64 KiB)
    /// while they live: send them, don't keep them for long.
    ///
    /// # Errors
    ///
    /// The codec's error if `value` cannot be encoded (a `Serialize` impl
    /// that fails, a map with non-string keys in JSON, ...).
    fn encode(value: &T) -> Result<Bytes, CodecError>;

    /// The encoding of `value` as a [`Payload`]: by default
    /// [`encode`](Self::encode)'s bytes in one piece; the protobuf codec
    /// keeps a large `bytes` field held as `Bytes` by reference (no copy).
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    fn encode_payload(value: &T) -> Result<Payload, CodecError> {
        Self::encode(value).map(Payload::from)
    }
}

/// Decodes values of type `T`.
pub trait Decode<T> {
    /// The value encoded in `bytes`.
    ///
    /// # Errors
    ///
    /// The codec's error if `bytes` is not an encoding of a `T`.
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
            serde_json::to_writer(bytes::BufMut::writer(buf), value).map_err(CodecError::from)
        })
    }
}

#[cfg(feature = "json")]
impl<T: serde::de::DeserializeOwned> Decode<T> for Json {
    fn decode(bytes: Bytes) -> Result<T, CodecError> {
        let input: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        Json::decode_exact(input)
    }
}

#[cfg(feature = "json")]
impl Json {
    /// Appends the JSON of `value` to `out` (for callers that keep their
    /// own buffer, as the streams do).
    pub(crate) fn encode_into<T: serde::Serialize + ?Sized>(
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(CodecError::from)
    }

    /// The value whose JSON `bytes` is, with no special case for empty
    /// input (which is an error here, not `null`).
    pub(crate) fn decode_exact<T: serde::de::DeserializeOwned>(
        bytes: &[u8],
    ) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(CodecError::from)
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
        arena::encode(Some(len), |buf| value.encode(buf).map_err(CodecError::from))
    }

    fn encode_payload(value: &T) -> Result<Payload, CodecError> {
        let len = value.encoded_len();
        if len < SEGMENT_MIN {
            return Self::encode(value).map(Payload::from);
        }
        let mut parts = None;
        let tail = arena::encode(None, |buf| {
            let mut seg = crate::sys::segments::SegmentedBuf::new(buf, SEGMENT_MIN);
            value.encode(&mut seg).map_err(CodecError::from)?;
            parts = seg.finish();
            Ok::<(), CodecError>(())
        })?;
        Ok(match parts {
            Some((head, big)) => Payload::pieces(head, big, tail),
            None => Payload::from(tail),
        })
    }
}

/// Protobuf messages at least this long are encoded as a [`Payload`] whose
/// first `bytes` field at least this long stays where it is. The same size
/// as the outbox's threshold for writing a payload by reference: smaller
/// pieces are copied into its write buffer anyway. (At 64 KiB, 10 KiB
/// messages were copied twice more per call than raw calls: the typed
/// service ran at 0.88x the raw RPC at 10 KiB.)
#[cfg(feature = "proto")]
const SEGMENT_MIN: usize = 8 * 1024;

#[cfg(feature = "proto")]
impl<T: prost::Message + Default> Decode<T> for Proto {
    fn decode(bytes: Bytes) -> Result<T, CodecError> {
        T::decode(bytes).map_err(CodecError::from)
    }
}

#[cfg(feature = "proto")]
impl Proto {
    /// Appends the encoding of `msg` to `out` (for callers that keep their
    /// own buffer, as the streams do).
    pub(crate) fn encode_into<T: prost::Message>(
        msg: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        msg.encode(out).map_err(CodecError::from)
    }
}

/// A type that travels as JSON: every `serde::Serialize +
/// serde::de::DeserializeOwned` type, and only those (a blanket impl; it
/// cannot be implemented by hand).
///
/// `#[uds::service]` bounds each argument, result, error and stream item of
/// a JSON service with it, so that a type that is not one is reported on
/// the type, in the trait, with what to do.
#[cfg(feature = "json")]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel as JSON: it does not implement `serde::Serialize` and `serde::Deserialize`",
    label = "not a JSON type",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it, or use a serde type (`String`, `Vec<T>`, `Option<T>`, ...)"
)]
pub trait JsonType: Sized {
    #[doc(hidden)]
    fn __encode(&self) -> Result<Bytes, CodecError>;
    #[doc(hidden)]
    fn __encode_payload(&self) -> Result<Payload, CodecError> {
        self.__encode().map(Payload::from)
    }
    #[doc(hidden)]
    fn __decode(bytes: Bytes) -> Result<Self, CodecError>;
    #[doc(hidden)]
    fn __to_value(&self) -> Result<serde_json::Value, CodecError>;
    #[doc(hidden)]
    fn __from_value(value: serde_json::Value) -> Result<Self, CodecError>;
}

#[cfg(feature = "json")]
#[diagnostic::do_not_recommend]
impl<T: serde::Serialize + serde::de::DeserializeOwned> JsonType for T {
    fn __encode(&self) -> Result<Bytes, CodecError> {
        <Json as Encode<Self>>::encode(self)
    }

    fn __decode(bytes: Bytes) -> Result<Self, CodecError> {
        <Json as Decode<Self>>::decode(bytes)
    }

    fn __to_value(&self) -> Result<serde_json::Value, CodecError> {
        serde_json::to_value(self).map_err(CodecError::from)
    }

    fn __from_value(value: serde_json::Value) -> Result<Self, CodecError> {
        serde_json::from_value(value).map_err(CodecError::from)
    }
}

/// A type that travels as protobuf: every `prost::Message + Default` type
/// (a blanket impl; it cannot be implemented by hand).
///
/// `#[uds::service(codec = "proto")]` bounds each argument, result, error
/// and stream item with it, so that a type that is not one is reported on
/// the type, in the trait, with what to do.
#[cfg(feature = "proto")]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel as protobuf: it is not a `prost::Message` with `Default`",
    label = "not a protobuf message",
    note = "derive `prost::Message` for it (and `Default`, which the derive provides), or use a prost-generated type"
)]
pub trait ProtoType: Sized {
    #[doc(hidden)]
    fn __encode(&self) -> Result<Bytes, CodecError>;
    #[doc(hidden)]
    fn __encode_payload(&self) -> Result<Payload, CodecError>;
    #[doc(hidden)]
    fn __decode(bytes: Bytes) -> Result<Self, CodecError>;
}

#[cfg(feature = "proto")]
#[diagnostic::do_not_recommend]
impl<T: prost::Message + Default> ProtoType for T {
    fn __encode(&self) -> Result<Bytes, CodecError> {
        <Proto as Encode<Self>>::encode(self)
    }

    fn __encode_payload(&self) -> Result<Payload, CodecError> {
        <Proto as Encode<Self>>::encode_payload(self)
    }

    fn __decode(bytes: Bytes) -> Result<Self, CodecError> {
        <Proto as Decode<Self>>::decode(bytes)
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

    #[cfg(feature = "proto")]
    #[derive(Clone, PartialEq, prost::Message)]
    struct Blob {
        #[prost(uint32, tag = "1")]
        id: u32,
        #[prost(bytes = "bytes", tag = "2")]
        data: bytes::Bytes,
        #[prost(string, tag = "3")]
        name: String,
    }

    #[cfg(feature = "proto")]
    #[test]
    fn a_large_bytes_field_is_kept_by_reference_and_the_bytes_are_the_same() {
        use super::{Decode, Encode, Proto};
        let data = bytes::Bytes::from(vec![7u8; 200 * 1024]);
        let msg = Blob {
            id: 9,
            data: data.clone(),
            name: "n".into(),
        };
        let payload = <Proto as Encode<Blob>>::encode_payload(&msg).unwrap();
        assert_eq!(payload.rest().len(), 2, "in pieces");
        assert_eq!(payload.rest()[0].as_ptr(), data.as_ptr(), "not copied");
        let whole = <Proto as Encode<Blob>>::encode(&msg).unwrap();
        assert_eq!(payload.len(), whole.len());
        assert_eq!(payload.clone().into_bytes(), whole);
        let back: Blob = <Proto as Decode<Blob>>::decode(payload.into_bytes()).unwrap();
        assert_eq!(back, msg);
        // Small messages stay in one piece.
        let small = Blob {
            id: 1,
            data: bytes::Bytes::from_static(b"x"),
            name: String::new(),
        };
        assert!(
            <Proto as Encode<Blob>>::encode_payload(&small)
                .unwrap()
                .rest()
                .is_empty()
        );
    }
}
