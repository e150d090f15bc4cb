//! Support for the code `#[uds::service]` generates: reached as
//! `uds::__private01`, never named by hand. Not a public API: it changes
//! without notice.
//!
//! Versioned as serde's `__private` is: `uds` pins `uds-macros` exactly
//! (`=0.1.0`), and the macro names this module with its version, so a
//! mismatched pair fails to compile at the path rather than misbehave.
//!
//! The helpers here are not bounded by a codec trait: the generated code
//! passes them the functions of [`crate::codec::JsonType`] or
//! [`crate::codec::ProtoType`], named on the user's type, so that a type of
//! the wrong kind is reported once, on that type, with that trait's message.

use std::time::Duration;

pub use bytes::Bytes;

use crate::auth::Policy;
use crate::codec::CodecError;
use crate::log_limit::RateLimited;
use crate::rpc::{Context, HandlerError, RpcError};
use crate::service::{CallError, ServerStream, Streaming};

#[path = "private/streams.rs"]
mod streams;
pub use futures_core::Stream;
pub use streams::{bidi_call, client_stream_call, encode_fallible_stream, fallible, server_items};

/// Encoding a value: the codec trait's `__encode`.
pub type EncodeFn<T> = fn(&T) -> Result<Bytes, CodecError>;
/// Decoding a value: the codec trait's `__decode`.
pub type DecodeFn<T> = fn(Bytes) -> Result<T, CodecError>;

pub use crate::codec::Payload;

/// Encoding a value as a [`Payload`]: the codec trait's `__encode_payload`.
pub type PayloadFn<T> = fn(&T) -> Result<Payload, CodecError>;

/// Bytes as a one-piece [`Payload`] (a function, so that generated code
/// needs no trait in scope).
pub fn one_piece(bytes: Bytes) -> Payload {
    Payload::from(bytes)
}

/// A client argument, encoded in pieces.
pub fn encoded_payload(r: Result<Payload, CodecError>) -> Result<Payload, RpcError> {
    r.map_err(|e| RpcError::Codec {
        message: format!("encoding the request: {e}"),
    })
}

/// A server result, encoded in pieces.
pub fn encoded_result_payload(r: Result<Payload, CodecError>) -> Result<Payload, HandlerError> {
    r.map_err(|e| HandlerError::server(format!("the reply could not be encoded: {e}")))
}

/// A client argument, encoded.
pub fn encoded_arg(r: Result<Bytes, CodecError>) -> Result<Bytes, RpcError> {
    r.map_err(|e| RpcError::Codec {
        message: format!("encoding the request: {e}"),
    })
}

/// Decodes a reply.
pub fn decode_reply<T>(data: Bytes, decode: DecodeFn<T>) -> Result<T, RpcError> {
    decode(data).map_err(|e| RpcError::Codec {
        message: format!("decoding the reply: {e}"),
    })
}

/// Maps the reply of a `Result<T, E>` method.
pub fn app_reply<T, E>(
    reply: Result<Bytes, RpcError>,
    ok: DecodeFn<T>,
    err: DecodeFn<E>,
) -> Result<T, CallError<E>> {
    match reply {
        Ok(data) => decode_reply(data, ok).map_err(CallError::Rpc),
        Err(RpcError::Application { data, .. }) => {
            Err(decode_reply(data, err).map_or_else(CallError::Rpc, CallError::App))
        }
        Err(e) => Err(CallError::Rpc(e)),
    }
}

/// Decodes a server argument (bad data if it does not decode).
pub fn decode_arg<T>(data: Bytes, decode: DecodeFn<T>) -> Result<T, HandlerError> {
    decode(data)
        .map_err(|e| HandlerError::bad_data(format!("the request could not be decoded: {e}")))
}

/// A server result, encoded.
pub fn encoded_result(r: Result<Bytes, CodecError>) -> Result<Bytes, HandlerError> {
    r.map_err(|e| HandlerError::server(format!("the reply could not be encoded: {e}")))
}

/// Turns an application error, encoded, into its reply.
pub fn app_error(r: Result<Bytes, CodecError>) -> HandlerError {
    match r {
        Ok(data) => {
            let text = std::str::from_utf8(&data)
                .map_or_else(|_| "application error".to_owned(), str::to_owned);
            HandlerError::application(data, text)
        }
        Err(err) => HandlerError::server(format!("the error could not be encoded: {err}")),
    }
}

/// Encodes each item of a server stream.
pub fn encode_stream<T: Send + 'static>(
    s: ServerStream<T>,
    encode: EncodeFn<T>,
) -> impl futures_core::Stream<Item = Result<Bytes, HandlerError>> + Send + 'static {
    use futures_util::StreamExt;
    s.map(move |item| encoded_result(encode(&item)))
}

/// Wraps a client stream with its decoder.
pub fn client_stream<T>(s: crate::rpc::RpcStream, decode: DecodeFn<T>) -> Streaming<T> {
    Streaming::new(s, decode)
}

/// Per-method authorization: the call runs only if every policy allows the
/// caller (the trait's, then the method's). A policy that panics denies.
///
/// # Errors
///
/// [`HandlerError::permission_denied`] when a policy refuses (or panics);
/// logged, rate-limited.
pub fn authorize(ctx: &Context, method: &str, policies: &[Policy]) -> Result<(), HandlerError> {
    static DENIED: RateLimited = RateLimited::new(Duration::from_secs(1));
    for policy in policies {
        let allowed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            policy.check(ctx.peer()).is_ok()
        }));
        let why = match allowed {
            Ok(true) => continue,
            Ok(false) => "not allowed by the method's policy",
            Err(_) => "the method's policy panicked (denied)",
        };
        if let Some(suppressed) = DENIED.allow() {
            let peer = ctx.peer();
            tracing::warn!(
                method = crate::log_limit::truncate(method, crate::log_limit::MAX_LOGGED_TEXT),
                pid = peer.pid,
                uid = peer.uid,
                gid = peer.gid,
                suppressed,
                "call denied: {why}"
            );
        }
        return Err(HandlerError::permission_denied());
    }
    Ok(())
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

    /// Adds an argument, converted to a JSON value (client side).
    ///
    /// # Errors
    ///
    /// [`RpcError::Codec`] if it could not be converted.
    pub fn arg(
        mut self,
        name: &str,
        value: Result<serde_json::Value, CodecError>,
    ) -> Result<Self, RpcError> {
        let value = value.map_err(|e| RpcError::Codec {
            message: format!("encoding argument `{name}`: {e}"),
        })?;
        self.0.insert(name.to_owned(), value);
        Ok(self)
    }

    /// The encoded object (client side).
    ///
    /// # Errors
    ///
    /// [`RpcError::Codec`] if it could not be encoded.
    pub fn finish(self) -> Result<Bytes, RpcError> {
        serde_json::to_vec(&self.0)
            .map(Bytes::from)
            .map_err(|e| RpcError::Codec {
                message: format!("encoding the request: {e}"),
            })
    }

    /// Parses the object (server side).
    ///
    /// # Errors
    ///
    /// Bad data if `data` is not a JSON object.
    pub fn parse(data: &[u8]) -> Result<Self, HandlerError> {
        serde_json::from_slice(data).map(JsonArgs).map_err(|e| {
            HandlerError::bad_data(format!("the request is not an object of arguments: {e}"))
        })
    }

    /// Takes an argument out (server side). A missing key is bad data: a
    /// peer that does not send the argument (an older one, or one that
    /// knows it by another name) must not get a default it did not ask for.
    ///
    /// # Errors
    ///
    /// Bad data, naming the argument, if it is missing or does not decode.
    pub fn take<T>(
        &mut self,
        name: &str,
        from: fn(serde_json::Value) -> Result<T, CodecError>,
    ) -> Result<T, HandlerError> {
        let Some(v) = self.0.remove(name) else {
            return Err(HandlerError::bad_data(format!(
                "argument `{name}` is missing"
            )));
        };
        from(v).map_err(|e| HandlerError::bad_data(format!("argument `{name}`: {e}")))
    }

    /// Takes an argument marked `#[uds(default)]` out (server side): a
    /// missing key decodes as `null` (the parameter is an `Option`: `None`).
    ///
    /// # Errors
    ///
    /// Bad data, naming the argument, if it does not decode.
    pub fn take_or_null<T>(
        &mut self,
        name: &str,
        from: fn(serde_json::Value) -> Result<T, CodecError>,
    ) -> Result<T, HandlerError> {
        let v = self.0.remove(name).unwrap_or(serde_json::Value::Null);
        from(v).map_err(|e| HandlerError::bad_data(format!("argument `{name}`: {e}")))
    }
}

/// The generated code of a JSON service, compiled only with the `json`
/// feature of uds (else one clear error).
#[cfg(feature = "json")]
#[doc(hidden)]
#[macro_export]
macro_rules! __uds_json_service {
    ($($t:tt)*) => { $($t)* };
}

/// The generated code of a JSON service, compiled only with the `json`
/// feature of uds (else one clear error).
#[cfg(not(feature = "json"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __uds_json_service {
    ($($t:tt)*) => {
        ::core::compile_error! {
            "this service uses the JSON codec, but the `json` feature of uds is off: enable it (`uds = { features = [\"json\"] }`) or use `#[uds::service(codec = \"proto\")]`"
        }
    };
}

/// The generated code of a proto service, compiled only with the `proto`
/// feature of uds (else one clear error).
#[cfg(feature = "proto")]
#[doc(hidden)]
#[macro_export]
macro_rules! __uds_proto_service {
    ($($t:tt)*) => { $($t)* };
}

/// The generated code of a proto service, compiled only with the `proto`
/// feature of uds (else one clear error).
#[cfg(not(feature = "proto"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __uds_proto_service {
    ($($t:tt)*) => {
        ::core::compile_error! {
            "this service uses the protobuf codec, but the `proto` feature of uds is off: enable it (`uds = { features = [\"proto\"] }`)"
        }
    };
}

pub use crate::__uds_json_service as json_service;
pub use crate::__uds_proto_service as proto_service;

/// Fails to compile, with the message below, if a method's plain result
/// type is a `Result` alias: its errors would reach the client as a
/// success value.
#[derive(Debug)]
pub struct ResultProbe<T>(core::marker::PhantomData<T>);

impl<T, E> ResultProbe<Result<T, E>> {
    /// Shadows [`NotResult::IS_RESULT`] for `Result` types.
    pub const IS_RESULT: bool = true;
}

/// The fallback of [`ResultProbe`] for every other type.
pub trait NotResult {
    /// Not a `Result`.
    const IS_RESULT: bool = false;
}

impl<T> NotResult for ResultProbe<T> {}
