//! Types used by `#[uds::service]` traits and the code it generates,
//! re-exported at the crate root ([`crate::CallError`],
//! [`crate::ServerStream`], [`crate::Streaming`]): the module itself is
//! private, so that `uds::service` names only the attribute.
//!
//! See [`macro@crate::service`] for the attribute itself.

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_core::Stream;

use crate::codec::CodecError;
use crate::rpc::{RpcError, RpcItems, RpcStream};

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

/// A stream of items coming to you: the items of a server stream on the
/// client (what a `-> ServerStream<T>` method's client gets), and the items
/// of a client stream on the server (what a handler taking a
/// `Streaming<T>` argument gets). A [`Stream`] of `Result<T, E>`, ending
/// with `None`, or with an error as its last item.
///
/// `E` is [`RpcError`] unless the server's items are fallible: for
/// `-> ServerStream<Result<T, AppError>>` the client gets
/// `Streaming<T, CallError<AppError>>`, whose last item is
/// `Err(CallError::App(e))` when the handler's stream yields `Err(e)`.
///
/// On the client, dropping it cancels the call on the server. On the
/// server, an item that does not decode is an `Err` item
/// ([`RpcError::Codec`]); the call goes on, and the handler decides.
///
/// | kind | trait method | the handler | the client |
/// |---|---|---|---|
/// | unary | `async fn f(&self, a: A) -> R` | returns `R` | `client.f(a).await` → `R` |
/// | server streaming | `async fn f(&self, a: A) -> ServerStream<T>` | returns a [`ServerStream<T>`] | gets a `Streaming<T>` |
/// | client streaming | `async fn f(&self, a: A, s: Streaming<T>) -> R` | reads the `Streaming<T>` | passes any `Stream<Item = T>`, gets `R` |
/// | bidirectional | `async fn f(&self, a: A, s: Streaming<T>) -> ServerStream<U>` | both | passes a `Stream<Item = T> + Send + 'static`, gets a `Streaming<U>` |
#[must_use = "items arrive only when the stream is polled; on the client, dropping it cancels the call"]
pub struct Streaming<T, E = RpcError> {
    source: Source,
    decode: fn(Bytes) -> Result<T, CodecError>,
    map_err: Box<dyn Fn(RpcError) -> E + Send + Sync>,
    /// On a bidirectional call's client: the task sending the caller's
    /// items, stopped with the stream.
    pump: Option<AbortOnDrop>,
}

/// The client's stream of a server stream, under its former name.
#[deprecated(
    since = "0.1.0",
    note = "renamed `Streaming<T>`: one name for every stream coming to you"
)]
pub type ClientStream<T> = Streaming<T>;

enum Source {
    /// A server's items, on the client.
    Reply(RpcStream),
    /// A client's items, on the server.
    Items(RpcItems),
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T, E> fmt::Debug for Streaming<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match &self.source {
            Source::Reply(_) => "server's items",
            Source::Items(_) => "client's items",
        };
        f.debug_struct("Streaming")
            .field("of", &side)
            .finish_non_exhaustive()
    }
}

impl<T> Streaming<T> {
    /// A stream of a server's items (`inner`) decoded by `decode`.
    pub(crate) fn new(inner: RpcStream, decode: fn(Bytes) -> Result<T, CodecError>) -> Self {
        Streaming {
            source: Source::Reply(inner),
            decode,
            map_err: Box::new(std::convert::identity),
            pump: None,
        }
    }

    /// A stream of a client's items, on the server.
    pub(crate) fn from_items(items: RpcItems, decode: fn(Bytes) -> Result<T, CodecError>) -> Self {
        Streaming {
            source: Source::Items(items),
            decode,
            map_err: Box::new(std::convert::identity),
            pump: None,
        }
    }
}

impl<T, E> Streaming<T, E> {
    /// The same stream with its errors mapped by `map_err`.
    pub(crate) fn map_errors<E2>(
        self,
        map_err: impl Fn(RpcError) -> E2 + Send + Sync + 'static,
    ) -> Streaming<T, E2> {
        Streaming {
            source: self.source,
            decode: self.decode,
            map_err: Box::new(map_err),
            pump: self.pump,
        }
    }

    /// The same stream, stopping `pump` when dropped.
    pub(crate) fn with_pump(mut self, pump: AbortOnDrop) -> Self {
        self.pump = Some(pump);
        self
    }

    /// The next item; `None` at the end.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item that arrives after the future is dropped is
    /// returned by the next call.
    pub async fn next_item(&mut self) -> Option<Result<T, E>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<T, E>>> {
        let raw = match &mut self.source {
            Source::Reply(s) => std::task::ready!(Pin::new(s).poll_next(cx)),
            Source::Items(s) => std::task::ready!(Pin::new(s).poll_next(cx)).map(Ok),
        };
        let decode = self.decode;
        Poll::Ready(raw.map(|r| {
            r.and_then(|bytes| {
                decode(bytes).map_err(|e| RpcError::Codec {
                    message: format!("decoding a stream item: {e}"),
                })
            })
            .map_err(&self.map_err)
        }))
    }
}

impl<T, E> Unpin for Streaming<T, E> {}

impl<T, E> Stream for Streaming<T, E> {
    type Item = Result<T, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}
