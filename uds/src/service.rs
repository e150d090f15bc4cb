//! Types used by `#[uds::service]` traits and the code it generates,
//! re-exported at the crate root ([`crate::CallError`],
//! [`crate::ServerStream`], [`crate::ClientStream`]): the module itself is
//! private, so that `uds::service` names only the attribute.
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
    /// A stream of `inner`'s items decoded by `decode`.
    pub(crate) fn new(inner: RpcStream, decode: fn(Bytes) -> Result<T, CodecError>) -> Self {
        ClientStream { inner, decode }
    }

    /// The next item; `None` at the end.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item that arrives after the future is dropped is
    /// returned by the next call.
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
