//! Types used by `#[uds::service]` traits and the code it generates.
//!
//! See [`macro@crate::service`] for the attribute itself.

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_core::Stream;

use crate::codec::CodecError;
use crate::rpc::{RpcError, RpcStream};

/// The error of a generated client method whose trait method returns
/// `Result<T, E>`: the server's application error `E`, or a transport error.
///
/// Its `Display` is the inner error's; so is its `source()` for
/// [`CallError::Rpc`] (transparent). An `App(E)` has no source: `E` is the
/// method's own error value, which need not be an `Error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The method ran and returned `Err(E)`.
    #[error("{0}")]
    App(E),
    /// The call itself failed (connection, deadline, decoding, ...).
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

impl<E> CallError<E> {
    /// The application error, if that is what this is.
    pub fn app(self) -> Option<E> {
        match self {
            CallError::App(e) => Some(e),
            CallError::Rpc(_) => None,
        }
    }
}

/// What a server-streaming method of a service trait returns: a stream of
/// items sent to the client as it asks for them.
///
/// Build one from any `Stream` ([`ServerStream::new`]), from an iterator
/// ([`ServerStream::iter`]), or as a bounded channel whose sender you feed
/// from a task ([`ServerStream::channel`]): a slow client then makes
/// `send` wait, so memory stays bounded.
#[must_use = "a ServerStream sends nothing unless the method returns it"]
pub struct ServerStream<T> {
    inner: Pin<Box<dyn Stream<Item = T> + Send>>,
}

impl<T> fmt::Debug for ServerStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStream").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> ServerStream<T> {
    /// A stream of the items of `stream`.
    pub fn new(stream: impl Stream<Item = T> + Send + 'static) -> Self {
        ServerStream {
            inner: Box::pin(stream),
        }
    }

    /// A stream of the items of `iter`.
    pub fn iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        ServerStream::new(futures_util::stream::iter(iter))
    }

    /// A bounded channel: items sent on the sender are streamed; the stream
    /// ends when the sender is dropped. `send` waits while `capacity` items
    /// are queued, and fails once the client has gone.
    #[must_use = "the stream ends at once if the sender is dropped, and sends nothing if the stream is"]
    pub fn channel(capacity: usize) -> (tokio::sync::mpsc::Sender<T>, Self) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, ServerStream::new(stream))
    }
}

impl<T> Stream for ServerStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The client's side of a server-streaming method: a `Stream` of decoded
/// items, ending with `None`, or with an error as its last item. Dropping it
/// cancels the stream on the server.
#[must_use = "dropping a ClientStream cancels the stream on the server"]
pub struct ClientStream<T> {
    inner: RpcStream,
    decode: fn(Bytes) -> Result<T, CodecError>,
}

impl<T> fmt::Debug for ClientStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<T> ClientStream<T> {
    #[doc(hidden)]
    pub fn __new(inner: RpcStream, decode: fn(Bytes) -> Result<T, CodecError>) -> Self {
        ClientStream { inner, decode }
    }

    /// The next item; `None` at the end.
    pub async fn next_item(&mut self) -> Option<Result<T, RpcError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<T> Stream for ClientStream<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let decode = self.decode;
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|r| {
                r.and_then(|bytes| {
                    decode(bytes).map_err(|e| RpcError::Codec {
                        message: format!("decoding a stream item: {e}"),
                    })
                })
            })
        })
    }
}

/// Support for generated code. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use bytes::Bytes;
    #[cfg(feature = "proto")]
    pub use prost;

    use super::{CallError, ClientStream, ServerStream};
    use crate::codec::{Decode, Encode};
    use crate::rpc::{HandlerError, RpcError};

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
        C::encode(v)
            .map_err(|e| HandlerError::server(format!("the reply could not be encoded: {e}")))
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
    pub fn client_stream<C: Decode<T>, T>(s: crate::rpc::RpcStream) -> ClientStream<T> {
        ClientStream::__new(s, C::decode)
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
        pub fn take<T: serde::de::DeserializeOwned>(
            &mut self,
            name: &str,
        ) -> Result<T, HandlerError> {
            let v = self.0.remove(name).unwrap_or(serde_json::Value::Null);
            serde_json::from_value(v)
                .map_err(|e| HandlerError::bad_data(format!("argument `{name}`: {e}")))
        }
    }

    /// Fails to compile, on the offending type, unless it is a protobuf
    /// message.
    #[cfg(feature = "proto")]
    pub const fn assert_proto_message<T: prost::Message + Default>() {}
}
