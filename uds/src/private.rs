//! Support for the code `#[uds::service]` generates: reached as
//! `uds::__private01`, never named by hand. Not a public API: it changes
//! without notice.
//!
//! Versioned as serde's `__private` is: `uds` pins `uds-macros` exactly
//! (`=0.1.0`), and the macro names this module with its version, so a
//! mismatched pair fails to compile at the path rather than misbehave.

pub use bytes::Bytes;
#[cfg(feature = "proto")]
pub use prost;

use crate::codec::{Decode, Encode};
use crate::rpc::{HandlerError, RpcError};
use crate::service::{CallError, ServerStream, Streaming};

#[path = "private/streams.rs"]
mod streams;
pub use streams::{
    bidi_call, client_fallible_stream, client_stream_call, encode_fallible_stream, server_items,
};

/// Encodes a client argument.
pub fn encode_arg<C: Encode<T>, T: ?Sized>(v: &T) -> Result<Bytes, RpcError> {
    C::encode(v).map_err(|e| RpcError::Codec {
        message: format!("encoding the request: {e}"),
    })
}

/// Decodes a reply.
pub fn decode_reply<C: Decode<T>, T>(data: Bytes) -> Result<T, RpcError> {
    C::decode(data).map_err(|e| RpcError::Codec {
        message: format!("decoding the reply: {e}"),
    })
}

/// Maps the reply of a `Result<T, E>` method.
pub fn app_reply<C: Decode<T> + Decode<E>, T, E>(
    reply: Result<Bytes, RpcError>,
) -> Result<T, CallError<E>> {
    match reply {
        Ok(data) => decode_reply::<C, T>(data).map_err(CallError::Rpc),
        Err(RpcError::Application { data, .. }) => {
            Err(decode_reply::<C, E>(data).map_or_else(CallError::Rpc, CallError::App))
        }
        Err(e) => Err(CallError::Rpc(e)),
    }
}

/// Decodes a server argument (bad data if it does not decode).
pub fn decode_arg<C: Decode<T>, T>(data: Bytes) -> Result<T, HandlerError> {
    C::decode(data)
        .map_err(|e| HandlerError::bad_data(format!("the request could not be decoded: {e}")))
}

/// Encodes a server result.
pub fn encode_result<C: Encode<T>, T: ?Sized>(v: &T) -> Result<Bytes, HandlerError> {
    C::encode(v).map_err(|e| HandlerError::server(format!("the reply could not be encoded: {e}")))
}

/// Turns an application error into its reply.
pub fn app_error<C: Encode<E>, E>(e: &E) -> HandlerError {
    match C::encode(e) {
        Ok(data) => {
            let text = std::str::from_utf8(&data)
                .map_or_else(|_| "application error".to_owned(), str::to_owned);
            HandlerError::application(data, text)
        }
        Err(err) => HandlerError::server(format!("the error could not be encoded: {err}")),
    }
}

/// Encodes each item of a server stream.
pub fn encode_stream<C: Encode<T> + 'static, T: Send + 'static>(
    s: ServerStream<T>,
) -> impl futures_core::Stream<Item = Result<Bytes, HandlerError>> + Send + 'static {
    use futures_util::StreamExt;
    s.map(|item| encode_result::<C, T>(&item))
}

/// Wraps a client stream with its decoder.
pub fn client_stream<C: Decode<T>, T>(s: crate::rpc::RpcStream) -> Streaming<T> {
    Streaming::new(s, C::decode)
}

/// Several JSON arguments travel as one object keyed by parameter name.
#[cfg(feature = "json")]
#[derive(Debug, Default)]
pub struct JsonArgs(serde_json::Map<String, serde_json::Value>);

#[cfg(feature = "json")]
impl JsonArgs {
    /// An empty argument object (client side).
    pub fn new() -> Self {
        JsonArgs(serde_json::Map::new())
    }

    /// Adds an argument (client side).
    pub fn arg<T: serde::Serialize + ?Sized>(
        mut self,
        name: &str,
        v: &T,
    ) -> Result<Self, RpcError> {
        let value = serde_json::to_value(v).map_err(|e| RpcError::Codec {
            message: format!("encoding argument `{name}`: {e}"),
        })?;
        self.0.insert(name.to_owned(), value);
        Ok(self)
    }

    /// The encoded object (client side).
    pub fn finish(self) -> Result<Bytes, RpcError> {
        serde_json::to_vec(&self.0)
            .map(Bytes::from)
            .map_err(|e| RpcError::Codec {
                message: format!("encoding the request: {e}"),
            })
    }

    /// Parses the object (server side).
    pub fn parse(data: &[u8]) -> Result<Self, HandlerError> {
        serde_json::from_slice(data).map(JsonArgs).map_err(|e| {
            HandlerError::bad_data(format!("the request is not an object of arguments: {e}"))
        })
    }

    /// Takes an argument out (server side); a missing one is `null`.
    pub fn take<T: serde::de::DeserializeOwned>(&mut self, name: &str) -> Result<T, HandlerError> {
        let v = self.0.remove(name).unwrap_or(serde_json::Value::Null);
        serde_json::from_value(v)
            .map_err(|e| HandlerError::bad_data(format!("argument `{name}`: {e}")))
    }
}

/// Fails to compile, on the offending type, unless it is a protobuf
/// message.
#[cfg(feature = "proto")]
pub const fn assert_proto_message<T: prost::Message + Default>() {}
