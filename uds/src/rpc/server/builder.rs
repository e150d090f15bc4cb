//! [`ServerBuilder`]: handlers and limits, validated at `build`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Server;
use super::config::Config;
use super::context::Context;
use super::handler::{BidiHandler, ClientStreamHandler, ErasedHandler, FnHandler, StreamHandler};
use super::items::RpcItems;
use super::shared::Shared;
use crate::codec::Payload;
use crate::rpc::error::{BuildError, HandlerError};

/// Registers handlers and sets limits; [`ServerBuilder::build`] makes the
/// [`Server`]. Handlers are fixed once built: nothing can race a
/// registration against dispatch.
///
/// Conventions shared with [`ClientBuilder`](crate::rpc::ClientBuilder): a
/// time limit that may be turned off takes an `Option<Duration>` (`None`:
/// no limit); one that must stay bounded (the write-stall limit, the
/// client's call timeout) takes a `Duration`. Setters only record; every
/// check is made by [`build`](Self::build).
#[must_use = "a builder does nothing until .build()"]
pub struct ServerBuilder {
    pub(super) handlers: HashMap<Box<str>, Arc<dyn ErasedHandler>>,
    pub(super) duplicates: Vec<String>,
    pub(super) config: Config,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("methods", &self.handlers.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Registers a server-streaming handler for `method`: it returns a
    /// stream of encoded items, sent to the client one by one as it grants
    /// credit (a slow client slows the stream; memory stays bounded). A
    /// deadline the client set bounds the whole stream (there is none by
    /// default), capped by [`max_stream_duration`](Self::max_stream_duration);
    /// the client dropping its stream cancels it. See `PROTOCOL.md` §2.6.
    pub fn streaming<F, Fut, S>(mut self, method: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, HandlerError>> + Send + 'static,
        S: futures_core::Stream<Item = Result<Bytes, HandlerError>> + Send + 'static,
    {
        self.insert(method.into(), Arc::new(StreamHandler(handler)));
        self
    }

    /// Registers a client-streaming handler for `method`: it gets the
    /// call's argument and the client's items ([`RpcItems`], which end when
    /// the client has sent its last), and returns one reply. The client may
    /// send only as many items as the server has granted credit for (a
    /// window of [`client_stream_window`](Self::client_stream_window)
    /// items, renewed as the handler takes them), so a slow handler
    /// slows the client and memory stays bounded. A handler may answer
    /// before taking every item: the client's sender then stops. A call has
    /// a deadline only if the client set one, capped by
    /// [`max_stream_duration`](Self::max_stream_duration). See `PROTOCOL.md`
    /// §2.8.
    pub fn client_streaming<F, Fut>(mut self, method: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Context, Bytes, RpcItems) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
    {
        self.insert(method.into(), Arc::new(ClientStreamHandler(handler)));
        self
    }

    /// Registers a bidirectional-streaming handler for `method`: it gets
    /// the client's items as [`client_streaming`](Self::client_streaming)
    /// does and returns a stream of items as [`streaming`](Self::streaming)
    /// does; both directions flow at once, each with its own credit. The
    /// call ends when the handler's stream ends (whether or not the client
    /// has ended its items). See `PROTOCOL.md` §2.8.
    pub fn bidi_streaming<F, Fut, S>(mut self, method: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Context, Bytes, RpcItems) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, HandlerError>> + Send + 'static,
        S: futures_core::Stream<Item = Result<Bytes, HandlerError>> + Send + 'static,
    {
        self.insert(method.into(), Arc::new(BidiHandler(handler)));
        self
    }

    /// Adds a handler, noting a duplicate name for `build` to report.
    fn insert(&mut self, method: String, handler: Arc<dyn ErasedHandler>) {
        if self.handlers.contains_key(method.as_str()) {
            self.duplicates.push(method);
        } else {
            self.handlers.insert(method.into_boxed_str(), handler);
        }
    }

    /// Registers `handler` for `method` (e.g. `"/Calculator/add"`).
    ///
    /// The handler gets the call's [`Context`] and the request bytes and
    /// returns the reply bytes, or a [`HandlerError`] (any `Display` error
    /// converts with `?`). Registering a method twice is reported by
    /// [`build`](Self::build).
    pub fn handler<F, Fut>(mut self, method: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
    {
        self.insert(method.into(), Arc::new(FnHandler::new(handler)));
        self
    }

    /// As [`handler`](Self::handler), for a handler whose reply is a
    /// [`Payload`]: an encoded message whose large `bytes` field is written
    /// to the socket from where it is, without a copy (what
    /// [`Encode::encode_payload`](crate::codec::Encode::encode_payload)
    /// makes of a protobuf message; the typed and generated proto handlers
    /// use it).
    pub fn handler_payload<F, Fut>(mut self, method: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Payload, HandlerError>> + Send + 'static,
    {
        self.insert(method.into(), Arc::new(FnHandler::new(handler)));
        self
    }

    /// Most calls in flight per connection (default
    /// [`DEFAULT_MAX_CALLS_PER_CONNECTION`](crate::rpc::DEFAULT_MAX_CALLS_PER_CONNECTION)). Beyond it requests wait, in a
    /// bounded queue, for a call to finish; see the constant's docs.
    pub fn max_calls_per_connection(mut self, n: usize) -> Self {
        self.config.max_calls_per_conn = n;
        self
    }

    /// Most calls in flight in the server (default [`DEFAULT_MAX_CALLS`](crate::rpc::DEFAULT_MAX_CALLS)).
    pub fn max_calls(mut self, n: usize) -> Self {
        self.config.max_calls = n;
        self
    }

    /// Largest frame accepted or sent (default 16 MiB). A larger request
    /// closes its connection (its length cannot be trusted); a larger reply
    /// is replaced by a server error.
    pub fn max_frame_len(mut self, n: usize) -> Self {
        self.config.max_frame_len = n;
        self
    }

    /// Time a request frame may take to arrive once started (default 10 s).
    pub fn frame_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.frame_timeout = t;
        self
    }

    /// Time a connection with no call in flight may stay silent (default
    /// [`DEFAULT_IDLE_TIMEOUT`](crate::rpc::DEFAULT_IDLE_TIMEOUT)); `None` keeps idle connections forever.
    /// The timer is checked once a period, not reset for every frame, so an
    /// idle connection is closed between once and about twice this after
    /// its last frame or call.
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.idle_timeout = t;
        self
    }

    /// Bytes of replies queued per connection before handlers wait to
    /// reply (default 4 MiB).
    pub fn write_queue(mut self, bytes: usize) -> Self {
        self.config.write_queue = bytes;
        self
    }

    /// How long replies may wait for a client that does not read them
    /// (default [`DEFAULT_WRITE_STALL`](crate::rpc::DEFAULT_WRITE_STALL), 30 s):
    /// then the connection is closed and its calls are cancelled, so a
    /// client that stops reading cannot hold call slots forever.
    pub fn write_stall_timeout(mut self, t: Duration) -> Self {
        self.config.write_stall = t;
        self
    }

    /// Deadline for calls that arrive without one (`exp_unix_nano` 0).
    /// Default: none. It does not bound a deadline the client sent; see
    /// [`max_timeout`](Self::max_timeout) for that.
    pub fn default_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.default_timeout = t;
        self
    }

    /// The server's cap on a unary call's time, counted from when its
    /// request arrived (time waiting for a slot included), whatever deadline
    /// the client sent: an earlier deadline still applies, a later one, a
    /// far-future one or none is cut to this. The handler sees the capped
    /// deadline in [`Context::deadline`]; at it, the handler is dropped and
    /// the client gets a deadline error (code 2). Default
    /// [`DEFAULT_MAX_TIMEOUT`](crate::rpc::DEFAULT_MAX_TIMEOUT) (5 minutes); `None` removes the cap (a peer
    /// can then hold call slots for as long as it likes).
    pub fn max_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.max_timeout = t;
        self
    }

    /// The server's cap on a server stream's time, counted as for
    /// [`max_timeout`](Self::max_timeout), which streams are not subject to
    /// (a stream may rightly outlive any call). Default: none; the client's
    /// deadline and the per-peer quotas still bound streams.
    pub fn max_stream_duration(mut self, t: Option<Duration>) -> Self {
        self.config.max_stream_duration = t;
        self
    }

    /// Items of a client stream the server lets a client send ahead of the
    /// handler, per call (default
    /// [`DEFAULT_CLIENT_STREAM_WINDOW`](crate::rpc::DEFAULT_CLIENT_STREAM_WINDOW),
    /// 16; at most 4096). Larger windows let small items flow faster; what a
    /// call can hold buffered is this many items of up to the frame limit
    /// each. The credit is renewed as the handler takes half of it.
    pub fn client_stream_window(mut self, items: u32) -> Self {
        self.config.client_stream_window = items;
        self
    }

    /// Whether a unary call may run on the spot, in its connection's reader,
    /// rather than in a task of its own (default `true`).
    ///
    /// A call is run there only when it is its connection's only work (no
    /// other call running, no other request already read), and only as
    /// long as its handler finishes in its first poll: one that has to wait
    /// goes on in a task from where it stopped. That saves the task, its
    /// allocation and two hand-overs between tasks per call (a lone call's
    /// round trip, and the allocations of a call, go down). Handlers that
    /// wait, or whose first poll takes more than 200 µs, get a task at once
    /// for their next calls: the 200 µs rule sticks, so a handler that
    /// computes for long without awaiting holds its connection's reading
    /// once at most.
    ///
    /// Turn it off if even that once matters: say, a handler that blocks
    /// for long without awaiting while the same client's other calls must
    /// go on.
    pub fn calls_on_the_spot(mut self, on: bool) -> Self {
        self.config.calls_on_the_spot = on;
        self
    }

    /// Most calls running at once for one peer process, over all its
    /// connections (default [`DEFAULT_MAX_CALLS_PER_PROCESS`](crate::rpc::DEFAULT_MAX_CALLS_PER_PROCESS)). Processes
    /// are told apart by the pid the kernel reported at connect. Beyond it,
    /// requests wait in their connection's queue.
    pub fn max_calls_per_process(mut self, n: usize) -> Self {
        self.config.max_calls_per_process = n;
        self
    }

    /// Most calls running at once for one user (uid), over all its
    /// processes (default [`DEFAULT_MAX_CALLS_PER_USER`](crate::rpc::DEFAULT_MAX_CALLS_PER_USER)). Beyond it,
    /// requests wait in their connection's queue.
    pub fn max_calls_per_user(mut self, n: usize) -> Self {
        self.config.max_calls_per_user = n;
        self
    }

    /// Most requests of one peer process waiting for a call slot, over all
    /// its connections (default [`DEFAULT_MAX_QUEUED_PER_PROCESS`](crate::rpc::DEFAULT_MAX_QUEUED_PER_PROCESS)). A
    /// request beyond it is answered at once with a server error (code 4)
    /// reading [`TOO_MANY_CALLS`](crate::rpc::TOO_MANY_CALLS); the connection goes on.
    pub fn max_queued_per_process(mut self, n: usize) -> Self {
        self.config.max_queued_per_process = n;
        self
    }

    /// Most requests of one user waiting for a call slot (default
    /// [`DEFAULT_MAX_QUEUED_PER_USER`](crate::rpc::DEFAULT_MAX_QUEUED_PER_USER)); beyond it, as for a process.
    pub fn max_queued_per_user(mut self, n: usize) -> Self {
        self.config.max_queued_per_user = n;
        self
    }

    /// Most connections open at once from one user (default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_USER`](crate::rpc::DEFAULT_MAX_CONNECTIONS_PER_USER)). A connection beyond it is
    /// closed before a frame is read, with a warning logged at most once a
    /// second.
    pub fn max_connections_per_user(mut self, n: usize) -> Self {
        self.config.max_connections_per_user = n;
        self
    }

    /// Builds the server. Every setting is checked here, and only here.
    ///
    /// # Errors
    ///
    /// [`BuildError::DuplicateMethods`] if a method was registered twice;
    /// [`BuildError::OutOfRange`] if a call limit is 0 or above
    /// [`Semaphore::MAX_PERMITS`](tokio::sync::Semaphore::MAX_PERMITS), or `max_connections_per_user` is 0.
    pub fn build(mut self) -> Result<Server, BuildError> {
        if !self.duplicates.is_empty() {
            return Err(BuildError::DuplicateMethods {
                methods: self.duplicates,
            });
        }
        self.config.validate()?;
        let shared = Arc::new(Shared::new(self.handlers, self.config));
        Ok(Server::from_shared(shared))
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::Semaphore;

    use super::*;

    #[test]
    fn every_limit_is_checked_at_build_by_name() {
        let err = Server::builder().max_calls_per_user(0).build().unwrap_err();
        assert_eq!(
            err,
            BuildError::OutOfRange {
                setting: "max_calls_per_user",
                value: 0,
                min: 1,
                max: Semaphore::MAX_PERMITS,
            }
        );
        let err = Server::builder()
            .max_calls(Semaphore::MAX_PERMITS + 1)
            .build()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("max_calls must be between 1 and"),
            "{err}"
        );
        for bad in [0, 4097] {
            let err = Server::builder()
                .client_stream_window(bad)
                .build()
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    BuildError::OutOfRange {
                        setting: "client_stream_window",
                        max: 4096,
                        ..
                    }
                ),
                "{err}"
            );
        }
        let err = Server::builder()
            .max_connections_per_user(0)
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            BuildError::OutOfRange {
                setting: "max_connections_per_user",
                ..
            }
        ));
        assert!(
            Server::builder().write_queue(0).build().is_ok(),
            "0 means 1 byte"
        );
    }

    #[test]
    fn duplicates_are_named() {
        let echo = |_: Context, r: Bytes| async move { Ok(r) };
        let err = Server::builder()
            .handler("/a", echo)
            .handler("/b", echo)
            .handler("/a", echo)
            .build()
            .unwrap_err();
        assert_eq!(err.to_string(), "methods registered more than once: /a");
    }
}
