//! The multiplexed RPC client.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::defaults::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_STREAM_IDLE_TIMEOUT, DEFAULT_STREAM_WINDOW, DEFAULT_WRITE_QUEUE,
    DEFAULT_WRITE_STALL, MAX_STREAM_CREDIT, MIN_STREAM_IDLE_TIMEOUT,
};
use super::envelope::{Envelope, EnvelopeRef};
use super::error::RpcError;
use super::outbox::Outbox;
use crate::codec::Payload;
use crate::cred::Cred;
use crate::frame::{DEFAULT_IDLE_RELEASE, DEFAULT_MAX_FRAME_LEN, FrameConfig, FrameReader};
use crate::log_limit::{MAX_LOGGED_TEXT, RateLimited, truncate};
use crate::net::{Conn, NetError, ReadHalf};

/// Longest timeout honoured; longer ones (e.g. `Duration::MAX` for "no
/// timeout") are cut to this, about 95 years.
const MAX_TIMEOUT: Duration = Duration::from_secs(3_000_000_000);

mod lanes;
mod upload;

use lanes::Lanes;
use upload::SendCredit;
pub use upload::{RpcReply, RpcSender};

type Reply = Result<Bytes, RpcError>;

/// Configures a [`Client`].
///
/// Time limits follow the convention of
/// [`ServerBuilder`](super::ServerBuilder): `Option<Duration>` for a limit
/// that may be off, `Duration` for one that must stay bounded.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .build()"]
pub struct ClientBuilder {
    timeout: Duration,
    max_frame_len: usize,
    frame_timeout: Option<Duration>,
    write_queue: usize,
    write_stall: Duration,
    go_compatible: bool,
    close_cause: Option<CloseCause>,
    /// `None`: one per runtime worker, at most [`lanes::MAX_DEFAULT_LANES`].
    max_connections: Option<usize>,
}

/// How long a client whose connection ended waits for its [`CloseCause`]
/// before failing its calls with the plain "connection closed".
/// An end of stream from a watched peer (a plugin) means its exit is being
/// read: half a second covers a loaded machine; the usual wait is a few ms.
const CLOSE_CAUSE_WAIT: Duration = Duration::from_millis(500);

/// Tells why a client's connection ended, for a connection whose peer a
/// higher layer watches (the plugin layer knows its child's exit status).
/// Asked once, when the connection ends; given [`CLOSE_CAUSE_WAIT`] to
/// answer.
#[derive(Clone)]
pub(crate) struct CloseCause(Arc<dyn Fn() -> CauseFuture + Send + Sync>);

/// What a [`CloseCause`] returns.
type CauseFuture = std::pin::Pin<Box<dyn Future<Output = Option<RpcError>> + Send>>;

impl CloseCause {
    pub(crate) fn new<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<RpcError>> + Send + 'static,
    {
        CloseCause(Arc::new(move || Box::pin(f())))
    }
}

impl std::fmt::Debug for CloseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CloseCause")
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            timeout: DEFAULT_CALL_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            frame_timeout: FrameConfig::default().frame_timeout,
            write_queue: DEFAULT_WRITE_QUEUE,
            write_stall: DEFAULT_WRITE_STALL,
            go_compatible: false,
            close_cause: None,
            max_connections: None,
        }
    }
}

impl ClientBuilder {
    /// Default timeout of each call (default [`DEFAULT_CALL_TIMEOUT`]); sent
    /// to the server as the call's absolute deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Largest frame sent or accepted (default 16 MiB).
    pub fn max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Time a reply frame may take to arrive once started (default 10 s).
    pub fn frame_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// Bytes of outgoing frames queued before callers wait (default
    /// [`DEFAULT_WRITE_QUEUE`], 4 MiB; 0 means 1 byte).
    pub fn write_queue(mut self, bytes: usize) -> Self {
        self.write_queue = bytes;
        self
    }

    /// How long requests may wait for a server that does not read them
    /// (default [`DEFAULT_WRITE_STALL`], 30 s): then the connection is
    /// broken and every call on it fails with
    /// [`RpcError::ConnectionClosed`]. The same setting as
    /// [`ServerBuilder::write_stall_timeout`](super::ServerBuilder::write_stall_timeout).
    pub fn write_stall_timeout(mut self, t: Duration) -> Self {
        self.write_stall = t;
        self
    }

    /// Asks `cause`, when the connection ends, for a better error than
    /// "connection closed" (the plugin layer's "the process exited").
    pub(crate) fn close_cause(mut self, cause: CloseCause) -> Self {
        self.close_cause = Some(cause);
        self
    }

    /// Sends only what a Go `uds` server understands: no cancellation frames
    /// when a call is dropped or times out.
    pub fn go_compatible(mut self, yes: bool) -> Self {
        self.go_compatible = yes;
        self
    }

    /// Most connections a client made by [`connect`](Self::connect) opens
    /// to its server (default: one per worker of the tokio runtime it is
    /// made in, at most 4; 1 keeps every call on one connection). Clients
    /// started on a connection ([`build`](Self::build)) have that one only.
    ///
    /// One connection is read and written by one task on each side, so it
    /// keeps about one core busy at most; under load (4 calls in flight on
    /// the first connection), the client opens more, one at a time, and
    /// spreads new calls over them. Each is made to the same path with the
    /// same checks, used only once it has answered and only if the first
    /// connection's server process (pid and uid) serves it, and closed
    /// after a second with no new call. Only unary calls go on extra
    /// connections, and only while the first has calls in flight: streams,
    /// and calls made while it has none, stay on the first, so that it is
    /// never left idle for the server to close (its end ends the client). Each extra connection counts toward the
    /// server's per-user connection limit
    /// ([`max_connections_per_user`](super::ServerBuilder::max_connections_per_user)):
    /// with many client processes of one user, set this to 1. No extra
    /// connection is opened to a server whose pid the kernel does not
    /// report (one in another pid namespace). If an extra connection fails (refused,
    /// another server, no answer to its probe), the client tries again
    /// after 10 s, then twice as long after each further failure, up to
    /// 10 minutes.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n.max(1));
        self
    }

    /// Starts the client on a connected socket. Must be called inside a tokio
    /// runtime; spawns one reader and one writer task, both stopped when the
    /// last clone of the client is dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does). Every rpc entry
    /// point that spawns tasks documents this panic; none returns it as an
    /// error.
    pub fn build(self, conn: Conn) -> Client {
        self.build_with(conn, None)
    }

    fn build_with(self, conn: Conn, lanes: Option<Arc<Lanes>>) -> Client {
        let peer = conn.peer_cred().clone();
        let (rd, wr) = conn.into_split();
        let outbox = Arc::new(Outbox::new(wr, self.write_queue.max(1), self.write_stall));
        let calls = Arc::new(CallTable::default());
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.run_writer().await }
        });
        let mut reader = FrameReader::with_config(
            rd,
            FrameConfig {
                max_frame_len: self.max_frame_len,
                frame_timeout: self.frame_timeout,
            },
        );
        // An idle connection keeps no large buffers (SECURITY.md).
        reader.set_idle_release(Some(DEFAULT_IDLE_RELEASE));
        let reader = tokio::spawn(read_replies(
            reader,
            calls.clone(),
            outbox.clone(),
            !self.go_compatible,
            self.close_cause.clone(),
        ));
        Client {
            inner: Arc::new(Inner {
                outbox,
                calls,
                next_id: AtomicU32::new(1),
                config: self,
                peer,
                tasks: [reader, writer],
                lanes,
            }),
        }
    }

    /// Connects to `path` with the default checks of
    /// [`Connector`](crate::net::Connector) and starts the client, which
    /// may open more connections under load (see
    /// [`max_connections`](Self::max_connections)).
    ///
    /// # Errors
    ///
    /// The [`NetError`] of [`connect`](crate::net::connect): no socket, a
    /// refused connection, or a server that fails the client's checks.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`build`](Self::build).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it returns, no client is started.
    pub async fn connect(self, path: impl AsRef<Path>) -> Result<Client, NetError> {
        let path = path.as_ref();
        let conn = crate::net::connect(path).await?;
        let lanes = Lanes::new(path.to_path_buf(), &self, conn.peer_cred().clone());
        Ok(self.build_with(conn, lanes))
    }
}

/// Per-call options.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// Overrides the client's default timeout. For a streaming call (any of
    /// the three kinds) this is a deadline for the whole call, and there is
    /// none unless it is set: a stream may live for hours, bounded by
    /// [`idle_timeout`](Self::idle_timeout) instead.
    pub timeout: Option<Duration>,
    /// For a streaming call: the longest the server may stay silent — no
    /// item, no end, no keep-alive — before the call fails with
    /// [`RpcError::StreamIdle`] (default
    /// [`DEFAULT_STREAM_IDLE_TIMEOUT`](super::DEFAULT_STREAM_IDLE_TIMEOUT),
    /// at least [`MIN_STREAM_IDLE_TIMEOUT`](super::MIN_STREAM_IDLE_TIMEOUT);
    /// `Duration::MAX` turns the check off). The client asks the server for
    /// a keep-alive every third of it, so a live server that has nothing to
    /// send never trips it, and a hung or vanished one is noticed.
    pub idle_timeout: Option<Duration>,
    /// For a [server-streaming](Client::call_stream) or
    /// [bidirectional](Client::call_bidi) call: the items the client lets
    /// the server send ahead of the consumer (default
    /// [`DEFAULT_STREAM_WINDOW`](super::DEFAULT_STREAM_WINDOW); at least 1,
    /// at most 4096, the most credit a uds server lets a client hold). What
    /// a stream can hold buffered is this many items of up to the frame
    /// limit each.
    pub stream_window: Option<u32>,
}

/// Largest stream window a client asks for (a uds server caps a client's
/// outstanding credit at this).
const MAX_STREAM_WINDOW: u32 = MAX_STREAM_CREDIT;

impl CallOptions {
    /// Options with this timeout.
    pub fn timeout(timeout: Duration) -> Self {
        CallOptions {
            timeout: Some(timeout),
            ..CallOptions::default()
        }
    }

    /// These options with a stream window of `items` (see
    /// [`CallOptions::stream_window`]).
    #[must_use]
    pub fn with_stream_window(mut self, items: u32) -> Self {
        self.stream_window = Some(items);
        self
    }

    /// These options with this timeout (see [`CallOptions::timeout`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// These options with this idle timeout for a stream (see
    /// [`CallOptions::idle_timeout`]).
    #[must_use]
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// The idle bound of a streaming call, if any, and the keep-alive
    /// interval to ask the server for.
    fn idle(&self) -> Option<(Duration, u32)> {
        let idle = self.idle_timeout.unwrap_or(DEFAULT_STREAM_IDLE_TIMEOUT);
        if idle >= MAX_TIMEOUT {
            return None;
        }
        let idle = idle.max(MIN_STREAM_IDLE_TIMEOUT);
        let keepalive = u32::try_from((idle / 3).as_millis()).unwrap_or(u32::MAX);
        Some((idle, keepalive))
    }

    /// The deadline of a streaming call: only one the caller set.
    fn stream_timeout(&self) -> Option<Duration> {
        self.timeout.map(|t| t.min(MAX_TIMEOUT))
    }
}

/// A multiplexed RPC client over one connection. Cheap to clone; every clone
/// shares the connection, and any number of calls may be in flight at once.
/// A client made by [`connect`](Self::connect) may open more connections to
/// the same server while many calls are in flight, and spread its tasks'
/// calls over them (see [`ClientBuilder::max_connections`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use uds::rpc::{Client, Server};
/// let server = Server::builder()
///     .handler("/echo", |_ctx, req| async move { Ok(req) })
///     .build()?;
/// let (a, b) = uds::net::pair()?;
/// server.serve_connection(b);
/// let client = Client::new(a);
/// let reply = client.call("/echo", "hello").await?;
/// assert_eq!(reply, "hello");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    outbox: Arc<Outbox>,
    calls: Arc<CallTable>,
    next_id: AtomicU32,
    config: ClientBuilder,
    peer: Cred,
    tasks: [JoinHandle<()>; 2],
    /// More connections to the same server, for a client that connected
    /// to a path.
    lanes: Option<Arc<Lanes>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No call can be in flight: each borrows a Client. Let the writer
        // flush (cancellations) and close; stop reading at once.
        self.outbox.finish();
        self.tasks[0].abort();
    }
}

#[derive(Debug, Default)]
struct CallTable {
    state: Mutex<CallState>,
}

#[derive(Debug, Default)]
struct CallState {
    pending: HashMap<u32, Waiter>,
    closed: Option<RpcError>,
}

/// Who waits for a call's replies.
#[derive(Debug)]
enum Waiter {
    Unary(oneshot::Sender<Reply>),
    Stream(StreamWaiter),
    /// A client stream answered by one reply.
    Upload(UploadWaiter),
}

/// A client-streaming call's reply end in the call table.
#[derive(Debug)]
struct UploadWaiter {
    tx: oneshot::Sender<Reply>,
    /// The credit the server granted for the client's items; closed when
    /// the call ends, which stops the sender.
    sending: Arc<SendCredit>,
    /// When the server last sent anything for the call.
    heard: Instant,
}

/// A server stream's receiving end in the call table.
#[derive(Debug)]
struct StreamWaiter {
    /// Items and then the end. Room for the whole window plus the end, so
    /// that the end (an error above all) always fits: items beyond the
    /// window are refused before they reach it.
    tx: mpsc::Sender<StreamEvent>,
    /// Items the server may still send: the credit granted (the request's
    /// window, then each grant, added before the grant is sent) less the
    /// items received.
    credit: u32,
    /// For a bidirectional call: the credit for the client's items (as
    /// [`UploadWaiter::sending`]).
    sending: Option<Arc<SendCredit>>,
    /// When the server last sent anything for the call.
    heard: Instant,
}

impl Waiter {
    fn fail(self, err: RpcError) {
        self.close_sending();
        match self {
            Waiter::Unary(tx) => {
                let _ = tx.send(Err(err));
            }
            Waiter::Upload(w) => {
                let _ = w.tx.send(Err(err));
            }
            Waiter::Stream(w) => {
                // Cannot be full: the channel has room for the end beyond
                // every item the credit allows.
                let _ = w.tx.try_send(StreamEvent::End(Err(err)));
            }
        }
    }

    /// The credit for the client's items, for a call that streams them.
    fn sending(&self) -> Option<&Arc<SendCredit>> {
        match self {
            Waiter::Unary(_) => None,
            Waiter::Upload(w) => Some(&w.sending),
            Waiter::Stream(w) => w.sending.as_ref(),
        }
    }

    /// The call is over: its sender, if any, stops.
    fn close_sending(&self) {
        if let Some(s) = self.sending() {
            s.end();
        }
    }

    /// Notes that the server said something about the call (for the idle
    /// check of streaming calls).
    fn heard(&mut self, now: Instant) {
        match self {
            Waiter::Unary(_) => {}
            Waiter::Upload(w) => w.heard = now,
            Waiter::Stream(w) => w.heard = now,
        }
    }

    fn last_heard(&self) -> Option<Instant> {
        match self {
            Waiter::Unary(_) => None,
            Waiter::Upload(w) => Some(w.heard),
            Waiter::Stream(w) => Some(w.heard),
        }
    }
}

/// What the reader hands a stream.
#[derive(Debug)]
enum StreamEvent {
    Item(Bytes),
    End(Result<(), RpcError>),
}

impl CallTable {
    fn lock(&self) -> MutexGuard<'_, CallState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails every pending call with `err` and refuses new ones.
    fn close(&self, err: &RpcError) {
        let pending = {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some(err.clone());
            }
            std::mem::take(&mut st.pending)
        };
        for (_, waiter) in pending {
            waiter.fail(err.clone());
        }
    }
}

impl Client {
    /// Fails every call in flight, and every later one, with `err`, and
    /// stops writing: for a higher layer that learns the peer is gone before
    /// the connection says so (the plugin layer, when its child exits while
    /// a descendant still holds the socket open).
    pub(crate) fn fail_with(&self, err: &RpcError) {
        self.inner.outbox.break_with(&err.to_string());
        self.inner.calls.close(err);
        if let Some(lanes) = &self.inner.lanes {
            lanes.fail_all(err);
        }
    }

    /// The connection a new call goes on: `None` for this client's own
    /// (first) connection, else one of its [lanes](lanes).
    fn lane(&self) -> Option<Client> {
        let lanes = self.inner.lanes.as_ref()?;
        if self.reader_ended() {
            return None; // closed: calls fail at once, as the docs say
        }
        lanes.pick(|| self.in_flight() == 0)
    }

    /// Whether this connection's reading has ended (it is closed).
    fn reader_ended(&self) -> bool {
        self.inner.tasks[0].is_finished()
    }

    /// A count that grows with every call registered on this connection.
    fn calls_started(&self) -> u32 {
        self.inner.next_id.load(Ordering::Relaxed)
    }

    /// Calls and streams in flight on this connection.
    fn in_flight(&self) -> usize {
        self.inner.calls.lock().pending.len()
    }

    /// Whether both are handles on the same connection.
    fn same_connection(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A client with the default settings on a connected socket.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`ClientBuilder::build`].
    pub fn new(conn: Conn) -> Self {
        ClientBuilder::default().build(conn)
    }

    /// A builder for a client with other settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects to the server at `path` (with the default client checks) and
    /// starts a client with the default settings.
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`ClientBuilder::build`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it returns, no client is started.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, NetError> {
        ClientBuilder::default().connect(path).await
    }

    /// The server's kernel credentials.
    pub fn peer_cred(&self) -> &Cred {
        &self.inner.peer
    }

    /// Whether the connection has closed; every later call fails at once.
    pub fn is_closed(&self) -> bool {
        self.inner.calls.lock().closed.is_some()
    }

    /// Calls `method` with `data` and the default timeout.
    ///
    /// # Errors
    ///
    /// As [`call_with`](Self::call_with).
    ///
    /// # Cancel safety
    ///
    /// As [`call_with`](Self::call_with): dropping the future cancels the
    /// call.
    pub async fn call(&self, method: &str, data: impl Into<Bytes>) -> Result<Bytes, RpcError> {
        self.call_with(method, data.into(), CallOptions::default())
            .await
    }

    /// Calls `method` with `data` and per-call options.
    ///
    /// Dropping the returned future cancels the call: the server is told (a
    /// cancellation frame, unless the client is
    /// [Go-compatible](ClientBuilder::go_compatible)) and stops the handler.
    ///
    /// # Errors
    ///
    /// [`RpcError::FrameTooLarge`] before anything is sent if the request
    /// exceeds the frame limit; [`RpcError::DeadlineExceeded`] if no reply
    /// comes within the timeout; [`RpcError::ConnectionClosed`] (or
    /// [`RpcError::PeerExited`]) if the connection ends first; the server's
    /// error (`MethodNotFound`, `BadData`, `Server`, `Application`,
    /// `Unknown`) as it replied; [`RpcError::Protocol`] if the server broke
    /// the protocol.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the call: it is forgotten and, unless
    /// the client is [Go-compatible](ClientBuilder::go_compatible), the
    /// server is sent a cancellation. A request is never left half written.
    pub async fn call_with(
        &self,
        method: &str,
        data: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, RpcError> {
        self.call_payload(method, Payload::from(data), opts).await
    }

    /// As [`call_with`](Self::call_with), with the request as a [`Payload`]:
    /// an encoded message whose large `bytes` field is written to the
    /// socket from where it is, without a copy (what
    /// [`Encode::encode_payload`](crate::codec::Encode::encode_payload)
    /// makes of a protobuf message; the typed and generated clients use it).
    ///
    /// # Errors
    ///
    /// As [`call_with`](Self::call_with).
    ///
    /// # Cancel safety
    ///
    /// As [`call_with`](Self::call_with).
    pub async fn call_payload(
        &self,
        method: &str,
        data: Payload,
        opts: CallOptions,
    ) -> Result<Bytes, RpcError> {
        match self.lane() {
            Some(lane) => lane.call_payload_here(method, data, opts).await,
            None => self.call_payload_here(method, data, opts).await,
        }
    }

    /// [`call_payload`](Self::call_payload) on this connection.
    async fn call_payload_here(
        &self,
        method: &str,
        data: Payload,
        opts: CallOptions,
    ) -> Result<Bytes, RpcError> {
        let inner = &*self.inner;
        let timeout = opts
            .timeout
            .unwrap_or(inner.config.timeout)
            .min(MAX_TIMEOUT);
        let local_deadline = Instant::now() + timeout;
        let exp_unix_nano = unix_nanos_after(timeout);
        let env = EnvelopeRef {
            exp_unix_nano,
            method: method.as_bytes(),
            data: data.head(),
            more: data.rest(),
            ..EnvelopeRef::default()
        };
        // The id is not chosen yet: count its field at its largest.
        inner.check_size(env.encoded_len() + 6)?;
        let (tx, rx) = oneshot::channel();
        let (id, busy) = self.register_counting(Waiter::Unary(tx))?;
        let mut guard = PendingGuard {
            inner,
            id,
            armed: true,
        };
        let env = EnvelopeRef { id, ..env };
        // Alone, the request is written at once (least latency); with other
        // calls in flight it is left to the writer task, which batches it
        // with theirs into one `writev`.
        let push = if busy {
            futures_util::future::Either::Left(inner.outbox.push_batched(&env, Some(data.head())))
        } else {
            futures_util::future::Either::Right(inner.outbox.push(&env, Some(data.head())))
        };
        let sent = tokio::time::timeout_at(local_deadline, push);
        match sent.await {
            Ok(Ok(())) => {}
            Ok(Err(closed)) => {
                guard.armed = false;
                inner.calls.lock().pending.remove(&id);
                return Err(closed.into_rpc_error());
            }
            Err(_) => return Err(deadline_error(timeout)),
        }
        // Written (or queued with its own reference): free the request now,
        // not at the reply, so an encoding buffer it shares can be reused.
        drop(data);
        match tokio::time::timeout_at(local_deadline, rx).await {
            Ok(Ok(reply)) => {
                guard.armed = false; // the reader already removed the entry
                reply
            }
            Ok(Err(_)) => {
                guard.armed = false;
                Err(RpcError::closed("client shut down"))
            }
            Err(_) => Err(deadline_error(timeout)), // guard cancels
        }
    }

    /// Calls a server-streaming method: the reply is a [`RpcStream`] of
    /// items. There is no deadline unless [`CallOptions::timeout`] sets one
    /// (it then bounds the whole stream); a server silent for longer than
    /// [`CallOptions::idle_timeout`] ends it with [`RpcError::StreamIdle`].
    /// The client grants the server credit for a window of items (default
    /// [`DEFAULT_STREAM_WINDOW`](super::DEFAULT_STREAM_WINDOW), see
    /// [`CallOptions::stream_window`]) and more as the stream is consumed,
    /// so a slow consumer slows the producer; an item beyond the credit
    /// granted ends the stream with [`RpcError::Protocol`]. Dropping the
    /// stream cancels the call on the server.
    ///
    /// # Errors
    ///
    /// [`RpcError::FrameTooLarge`] before the call is registered or
    /// anything is sent, if the request exceeds the frame limit;
    /// [`RpcError::ConnectionClosed`] (or the error the connection ended
    /// with) if the request cannot be sent. Errors after that (the
    /// server's, the deadline, the connection) end the stream as its last
    /// item.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it returns, the call is cancelled as if its stream
    /// had been dropped; the request is never left half written.
    pub async fn call_stream(
        &self,
        method: &str,
        data: Bytes,
        opts: CallOptions,
    ) -> Result<RpcStream, RpcError> {
        // Streams stay on the first connection (see `lanes`).
        let (opened, stream) = self.open(method, &data, opts, Kind::ServerStream).await?;
        debug_assert!(opened.sending.is_none());
        stream.ok_or_else(|| RpcError::closed("no stream"))
    }

    /// Calls a client-streaming method: `data` is the call's argument (the
    /// method's ordinary parameters), the [`RpcSender`] sends the items,
    /// and the [`RpcReply`] resolves to the one reply. Items flow as the
    /// server grants credit (its window, then more as its handler consumes
    /// them), so a slow handler slows [`RpcSender::send`] without holding
    /// up other calls on the connection. [`RpcSender::finish`] (or dropping
    /// the sender) tells the server there are no more items. Deadlines and
    /// idle timeouts are as for [`call_stream`](Self::call_stream).
    ///
    /// Dropping the reply cancels the call on the server (and stops the
    /// sender); a server that answers before taking every item stops the
    /// sender too ([`RpcError::StreamClosed`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use uds::rpc::{CallOptions, Client, Server};
    /// let server = Server::builder()
    ///     .client_streaming("/sum", |_ctx, _args, mut items| async move {
    ///         let mut total = 0usize;
    ///         while let Some(item) = items.next_item().await {
    ///             total += item.len();
    ///         }
    ///         Ok(total.to_string().into())
    ///     })
    ///     .build()?;
    /// let (a, b) = uds::net::pair()?;
    /// server.serve_connection(b);
    /// let client = Client::new(a);
    /// let (mut tx, reply) = client
    ///     .call_client_stream("/sum", "".into(), CallOptions::default())
    ///     .await?;
    /// for chunk in ["ab", "cde", "f"] {
    ///     tx.send(chunk.into()).await?;
    /// }
    /// tx.finish().await?;
    /// assert_eq!(reply.await?, "6");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`call_stream`](Self::call_stream) for the request; the reply
    /// carries the call's outcome.
    ///
    /// # Cancel safety
    ///
    /// As [`call_stream`](Self::call_stream).
    pub async fn call_client_stream(
        &self,
        method: &str,
        data: Bytes,
        opts: CallOptions,
    ) -> Result<(RpcSender, RpcReply), RpcError> {
        let (opened, _) = self.open(method, &data, opts, Kind::ClientStream).await?;
        let sender = opened.sender(self)?;
        let reply = opened.reply.ok_or_else(|| RpcError::closed("no reply"))?;
        Ok((sender, reply))
    }

    /// Calls a bidirectional-streaming method: the [`RpcSender`] sends items
    /// to the server while the [`RpcStream`] receives the server's, both at
    /// once and each with its own credit. Ending, deadlines, idle timeouts
    /// and cancellation are as for [`call_client_stream`] (sending) and
    /// [`call_stream`] (receiving): dropping the stream cancels the call;
    /// finishing or dropping the sender only ends the client's items.
    ///
    /// [`call_client_stream`]: Self::call_client_stream
    /// [`call_stream`]: Self::call_stream
    ///
    /// # Errors
    ///
    /// As [`call_stream`](Self::call_stream).
    ///
    /// # Cancel safety
    ///
    /// As [`call_stream`](Self::call_stream).
    pub async fn call_bidi(
        &self,
        method: &str,
        data: Bytes,
        opts: CallOptions,
    ) -> Result<(RpcSender, RpcStream), RpcError> {
        let (opened, stream) = self.open(method, &data, opts, Kind::Bidi).await?;
        let sender = opened.sender(self)?;
        let stream = stream.ok_or_else(|| RpcError::closed("no stream"))?;
        Ok((sender, stream))
    }

    /// Registers and sends the request of a streaming call on this
    /// connection.
    async fn open(
        &self,
        method: &str,
        data: &Bytes,
        opts: CallOptions,
        kind: Kind,
    ) -> Result<(Opened, Option<RpcStream>), RpcError> {
        let inner = &*self.inner;
        let timeout = opts.stream_timeout();
        let idle = opts.idle();
        let receives = kind != Kind::ClientStream;
        let window = if receives {
            opts.stream_window
                .unwrap_or(DEFAULT_STREAM_WINDOW)
                .clamp(1, MAX_STREAM_WINDOW)
        } else {
            0
        };
        let env = EnvelopeRef {
            exp_unix_nano: timeout.map_or(0, unix_nanos_after),
            method: method.as_bytes(),
            data,
            credit: window,
            client_stream: kind != Kind::ServerStream,
            keepalive_ms: idle.map_or(0, |(_, k)| k),
            ..EnvelopeRef::default()
        };
        // Refused before the call is registered, so that nothing (not even
        // a cancellation) is sent for it. The id is not chosen yet: count
        // its field at its largest.
        inner.check_size(env.encoded_len() + 6)?;
        let now = Instant::now();
        // The server grants credit for the client's items once the call
        // starts: none before.
        let sending = (kind != Kind::ServerStream).then(|| Arc::new(SendCredit::default()));
        let watch = || CallWatch::new(timeout, idle.map(|(i, _)| i));
        let (id, stream, reply) = if receives {
            // The window's items and the end: see `StreamWaiter`.
            let (tx, rx) = mpsc::channel(window as usize + 1);
            let id = self.register(Waiter::Stream(StreamWaiter {
                tx,
                credit: window,
                sending: sending.clone(),
                heard: now,
            }))?;
            let stream = RpcStream {
                client: self.clone(),
                id,
                rx,
                window,
                consumed: 0,
                watch: watch(),
                done: false,
            };
            (id, Some(stream), None)
        } else {
            let (tx, rx) = oneshot::channel();
            let id = self.register(Waiter::Upload(UploadWaiter {
                tx,
                sending: sending.clone().unwrap_or_default(),
                heard: now,
            }))?;
            let reply = RpcReply::new(self.clone(), id, rx, watch());
            (id, None, Some(reply))
        };
        let env = EnvelopeRef { id, ..env };
        if let Err(closed) = inner.outbox.push(&env, Some(data)).await {
            // Dropping the stream or reply now would send a cancel for a
            // call the server never saw.
            if let Some(mut s) = stream {
                s.done = true;
            }
            if let Some(r) = reply {
                r.disarm();
            }
            inner.calls.lock().pending.remove(&id);
            return Err(closed.into_rpc_error());
        }
        let deadline = timeout.map(|t| (now + t, t));
        let idle = idle.map(|(i, _)| i);
        Ok((
            Opened {
                id,
                sending,
                reply,
                deadline,
                idle,
            },
            stream,
        ))
    }

    fn register(&self, waiter: Waiter) -> Result<u32, RpcError> {
        self.register_counting(waiter).map(|(id, _)| id)
    }

    /// As [`register`](Self::register), also telling whether other calls
    /// are in flight (so more requests are likely to follow at once).
    fn register_counting(&self, waiter: Waiter) -> Result<(u32, bool), RpcError> {
        let mut st = self.inner.calls.lock();
        if let Some(err) = &st.closed {
            return Err(err.clone());
        }
        // Ids are unique among calls in flight and never 0 (a Go server's
        // id-less error replies decode as id 0).
        let (id, in_flight) = loop {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 && !st.pending.contains_key(&id) {
                st.pending.insert(id, waiter);
                break (id, st.pending.len());
            }
        };
        drop(st);
        if let Some(lanes) = &self.inner.lanes {
            lanes.grow(in_flight);
        }
        Ok((id, in_flight > 1))
    }
}

/// The three kinds of streaming call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ServerStream,
    ClientStream,
    Bidi,
}

/// A streaming call whose request has been sent.
struct Opened {
    id: u32,
    sending: Option<Arc<SendCredit>>,
    reply: Option<RpcReply>,
    /// The call's deadline and timeout, if the caller set one.
    deadline: Option<(Instant, Duration)>,
    idle: Option<Duration>,
}

impl Opened {
    fn sender(&self, client: &Client) -> Result<RpcSender, RpcError> {
        let credit = self
            .sending
            .clone()
            .ok_or_else(|| RpcError::closed("no sender"))?;
        Ok(RpcSender::new(
            client.clone(),
            self.id,
            credit,
            self.deadline,
            self.idle,
        ))
    }
}

/// A streaming call's time bounds, polled by whoever waits for it: the
/// deadline the caller set, if any, and the idle bound.
#[derive(Debug)]
struct CallWatch {
    deadline: Option<(Duration, std::pin::Pin<Box<tokio::time::Sleep>>)>,
    idle: Option<(Duration, std::pin::Pin<Box<tokio::time::Sleep>>)>,
}

impl CallWatch {
    fn new(timeout: Option<Duration>, idle: Option<Duration>) -> Self {
        CallWatch {
            deadline: timeout.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
            idle: idle.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
        }
    }

    /// The error the call ends with if a bound has passed: the deadline, or
    /// an idle period (no frame for call `id` since its bound).
    fn poll_expired(
        &mut self,
        cx: &mut std::task::Context<'_>,
        calls: &CallTable,
        id: u32,
    ) -> Option<RpcError> {
        if let Some((timeout, sleep)) = &mut self.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Some(deadline_error(*timeout));
        }
        let (idle, sleep) = self.idle.as_mut()?;
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return None;
            }
            // Frames may have come meanwhile (keep-alives reach only the
            // table): the bound runs from the last one. A call no longer in
            // the table has ended; its end is on its way to the waiter.
            let heard = calls.lock().pending.get(&id).and_then(Waiter::last_heard);
            let now = Instant::now();
            let next = heard.map_or(now, |h| h) + *idle;
            if next <= now {
                return Some(RpcError::StreamIdle { after: *idle });
            }
            sleep.as_mut().reset(next);
        }
    }
}

/// Removes a call from the table if its future ends early (dropped, timed
/// out) and tells the server to stop working on it.
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u32,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.abandon(self.id);
        }
    }
}

impl Inner {
    /// Refuses, before sending, a request larger than the frame limit.
    fn check_size(&self, len: usize) -> Result<(), RpcError> {
        let max = self.config.max_frame_len;
        if len > max {
            return Err(RpcError::FrameTooLarge { len, max });
        }
        Ok(())
    }

    /// Fails call `id` with `err` (if it is still pending) and tells the
    /// server to stop it (unless Go-compatible).
    fn fail_call(&self, id: u32, err: RpcError) {
        let waiter = self.calls.lock().pending.remove(&id);
        if let Some(w) = waiter {
            w.fail(err);
            if !self.config.go_compatible {
                send_cancel(&self.outbox, id);
            }
        }
    }

    /// Forgets a call the caller gave up on and, if it was still pending,
    /// tells the server to stop it (unless Go-compatible).
    fn abandon(&self, id: u32) {
        let waiter = self.calls.lock().pending.remove(&id);
        if let Some(w) = &waiter {
            w.close_sending();
        }
        if waiter.is_some() && !self.config.go_compatible {
            send_cancel(&self.outbox, id);
        }
    }
}

/// Tells the server to stop call `id`; best effort: if the connection is
/// gone, so is the call.
fn send_cancel(outbox: &Outbox, id: u32) {
    let cancel = EnvelopeRef {
        id,
        cancel: true,
        ..EnvelopeRef::default()
    };
    let _ = outbox.push_now(&cancel);
}

fn deadline_error(timeout: Duration) -> RpcError {
    RpcError::DeadlineExceeded {
        message: format!("no reply within {timeout:?}"),
    }
}

/// Unix time in nanoseconds `after` from now, saturating.
pub(crate) fn unix_nanos_after(after: Duration) -> i64 {
    let Some(at) = SystemTime::now().checked_add(after) else {
        return i64::MAX;
    };
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

async fn read_replies(
    mut reader: FrameReader<ReadHalf>,
    calls: Arc<CallTable>,
    outbox: Arc<Outbox>,
    cancels: bool,
    cause: Option<CloseCause>,
) {
    // A uds server's last frame may say why it closes (id 0, code 4 with a
    // `reason`): it denied this client, or it is shutting down.
    let mut notice: Option<RpcError> = None;
    let err = loop {
        let body = match reader.read_frame().await {
            Ok(Some(body)) => body,
            Ok(None) => break RpcError::closed("the server closed the connection"),
            Err(e) => {
                break match e {
                    crate::frame::FrameError::Io(io) => RpcError::closed_by(io),
                    e @ crate::frame::FrameError::Truncated { .. } => RpcError::closed_by(e),
                    other => RpcError::Protocol {
                        reason: other.to_string(),
                    },
                };
            }
        };
        let env = match Envelope::decode(&body) {
            Ok(env) => env,
            Err(e) => {
                break RpcError::Protocol {
                    reason: format!("undecodable reply: {e}"),
                };
            }
        };
        if env.id == 0 && env.err_type == super::ErrorCode::Server.as_u32() && env.reason != 0 {
            let e = RpcError::from_wire(env.err_type, env.reason, env.err_text());
            if matches!(
                e,
                RpcError::PermissionDenied { .. } | RpcError::ShuttingDown { .. }
            ) {
                tracing::debug!(%e, "the server says why it closes the connection");
                notice = Some(e);
                continue;
            }
        }
        if let Some(refused) = deliver(&calls, env)
            && cancels
        {
            send_cancel(&outbox, refused);
        }
    };
    // The server said why before the connection closed.
    let err = match (err, notice) {
        (RpcError::ConnectionClosed { .. }, Some(notice)) => notice,
        (err, _) => err,
    };
    // A watched peer (a plugin process) may say why it went: its exit.
    let err = match (err, cause) {
        (err @ RpcError::ConnectionClosed { .. }, Some(cause)) => {
            tokio::time::timeout(CLOSE_CAUSE_WAIT, (cause.0)())
                .await
                .ok()
                .flatten()
                .unwrap_or(err)
        }
        (err, _) => err,
    };
    tracing::debug!(%err, "rpc client connection ended");
    outbox.break_with(&err.to_string());
    calls.close(&err);
}

/// Hands a reply to its call. Returns the id of a call it failed because
/// the server broke the stream protocol, for the caller to cancel.
fn deliver(calls: &CallTable, env: Envelope) -> Option<u32> {
    // Both lines are the peer's to trigger: at most one a second each.
    static NO_CALL: RateLimited = RateLimited::new(Duration::from_secs(1));
    if env.id == 0 {
        log_no_id(&env);
        return None;
    }
    let id = env.id;
    let mut st = calls.lock();
    let Some(waiter) = st.pending.get_mut(&id) else {
        drop(st);
        if tracing::enabled!(tracing::Level::DEBUG)
            && let Some(suppressed) = NO_CALL.allow()
        {
            tracing::debug!(
                id,
                suppressed,
                "reply for no pending call dropped (late, cancelled or duplicate)"
            );
        }
        return None;
    };
    if !matches!(waiter, Waiter::Unary(_)) {
        waiter.heard(Instant::now());
    }
    let control = env.err_type == 0 && !env.stream_item && !env.stream_end;
    if control && env.keepalive {
        return None; // the call is alive: noted above
    }
    if control && env.credit > 0 && env.data.is_empty() {
        // Credit for the client's items; capped like the server caps ours.
        if let Some(sending) = waiter.sending() {
            sending.grant(env.credit);
        }
        return None;
    }
    if matches!(waiter, Waiter::Stream(_)) {
        return deliver_to_stream(st, env);
    }
    let tx = match st.pending.remove(&id) {
        Some(Waiter::Unary(tx)) => tx,
        Some(Waiter::Upload(w)) => {
            w.sending.end();
            w.tx
        }
        _ => return None,
    };
    drop(st);
    let reply = if env.stream_item || env.stream_end {
        Err(RpcError::Protocol {
            reason: "stream items in reply to a call that expects one reply".into(),
        })
    } else if env.err_type == 0 {
        Ok(env.data)
    } else {
        Err(reply_error(env))
    };
    let _ = tx.send(reply);
    None
}

/// A reply without a call id: a Go server sends its errors so, and nobody
/// can match them.
fn log_no_id(env: &Envelope) {
    static NO_ID: RateLimited = RateLimited::new(Duration::from_secs(1));
    if tracing::enabled!(tracing::Level::WARN)
        && let Some(suppressed) = NO_ID.allow()
    {
        let err = env.err_text();
        let err = truncate(&err, MAX_LOGGED_TEXT);
        tracing::warn!(
            err_type = env.err_type,
            err,
            suppressed,
            "reply without a call id dropped"
        );
    }
}

/// An item or the end of a stream, for the stream waiting for it in `st`.
/// As [`deliver`] for what it returns.
fn deliver_to_stream(mut st: MutexGuard<'_, CallState>, env: Envelope) -> Option<u32> {
    let id = env.id;
    if let Some(Waiter::Stream(w)) = st.pending.get_mut(&id) {
        if env.stream_item && env.err_type == 0 {
            if w.credit == 0 {
                // More items than the credit granted: end the stream with
                // the error rather than buffer them, and stop the call.
                let w = st.pending.remove(&id);
                drop(st);
                if let Some(w) = w {
                    w.fail(RpcError::Protocol {
                        reason: "the server sent a stream item beyond the credit granted".into(),
                    });
                }
                return Some(id);
            }
            w.credit -= 1;
            if w.tx.try_send(StreamEvent::Item(env.data)).is_err() {
                // Cannot be full (the credit bounds it): the stream is gone.
                st.pending.remove(&id);
            }
            return None;
        }
        let end = if env.err_type == 0 && env.stream_end {
            Ok(())
        } else if env.err_type == 0 {
            Err(RpcError::Protocol {
                reason: "a unary reply to a streaming call (is the method a stream on the server?)"
                    .into(),
            })
        } else {
            Err(reply_error(env))
        };
        if let Some(Waiter::Stream(w)) = st.pending.remove(&id) {
            if let Some(s) = &w.sending {
                s.end();
            }
            // Cannot be full: there is room for the end beyond the window.
            let _ = w.tx.try_send(StreamEvent::End(end));
        }
    }
    None
}

/// The error of a failed reply.
fn reply_error(env: Envelope) -> RpcError {
    let message = env.err_text();
    if env.app_error && env.err_type == super::ErrorCode::Server.as_u32() {
        RpcError::Application {
            message,
            data: env.data,
        }
    } else {
        RpcError::from_wire(env.err_type, env.reason, message)
    }
}

/// The items of a server-streaming or bidirectional call; see
/// [`Client::call_stream`] and [`Client::call_bidi`].
///
/// A [`Stream`](futures_core::Stream) of `Result<Bytes, RpcError>`: items
/// until the server ends the stream (then `None`), or an error as the last
/// item (deadline, connection loss, server error, or [`RpcError::Protocol`]
/// when the server sends an item beyond the credit the client granted: the
/// client never buffers more than its window of items, and cancels such a
/// call).
#[derive(Debug)]
pub struct RpcStream {
    client: Client,
    id: u32,
    rx: mpsc::Receiver<StreamEvent>,
    window: u32,
    consumed: u32,
    watch: CallWatch,
    done: bool,
}

impl RpcStream {
    /// Receives the next item; `None` at the end of the stream.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item is only taken from the stream when this
    /// returns it.
    pub async fn next_item(&mut self) -> Option<Result<Bytes, RpcError>> {
        std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut *self), cx)
        })
        .await
    }

    fn finish(&mut self) {
        self.done = true;
        self.rx.close();
    }
}

impl futures_core::Stream for RpcStream {
    type Item = Result<Bytes, RpcError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(event) = self.rx.poll_recv(cx) {
            return Poll::Ready(match event {
                Some(StreamEvent::Item(item)) => {
                    self.consumed += 1;
                    if self.consumed >= self.window / 2 {
                        // Count the credit before granting it, so that the
                        // items it allows are never taken for excess ones.
                        // A stream already ended (the rest of it buffered)
                        // needs no more.
                        let inner = &self.client.inner;
                        let live = match inner.calls.lock().pending.get_mut(&self.id) {
                            Some(Waiter::Stream(w)) => {
                                w.credit = w.credit.saturating_add(self.consumed);
                                true
                            }
                            _ => false,
                        };
                        let grant = EnvelopeRef {
                            id: self.id,
                            credit: self.consumed,
                            ..EnvelopeRef::default()
                        };
                        if live {
                            // If the connection is gone the reader ends us.
                            let _ = inner.outbox.push_now(&grant);
                        }
                        self.consumed = 0;
                    }
                    Some(Ok(item))
                }
                Some(StreamEvent::End(Ok(()))) => {
                    self.finish();
                    None
                }
                Some(StreamEvent::End(Err(e))) => {
                    self.finish();
                    Some(Err(e))
                }
                None => {
                    self.finish();
                    Some(Err(RpcError::closed(
                        "the stream ended without its end marker",
                    )))
                }
            });
        }
        let this = &mut *self;
        if let Some(err) = this
            .watch
            .poll_expired(cx, &this.client.inner.calls, this.id)
        {
            self.cancel();
            self.finish();
            return Poll::Ready(Some(Err(err)));
        }
        Poll::Pending
    }
}

impl RpcStream {
    /// Stops waiting for the stream and tells the server to stop it.
    fn cancel(&mut self) {
        self.client.inner.abandon(self.id);
    }
}

impl Drop for RpcStream {
    fn drop(&mut self) {
        if !self.done {
            self.cancel();
        }
    }
}
