//! The RPC server: dispatch by method name, deadlines, cancellation, bounds,
//! graceful shutdown.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::io::Interest;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::context::Context;
use super::envelope::{Envelope, EnvelopeRef};
use super::error::{ErrorCode, HandlerError, RpcError};
use super::outbox::Outbox;
use crate::cred::Cred;
use crate::frame::{DEFAULT_MAX_FRAME_LEN, FrameConfig, FrameError, FrameReader};
use crate::log_limit::{RateLimited, truncate};
use crate::net::{Conn, Listener};

/// Default most calls running at once on one connection: 128. Further
/// requests wait in a queue (at least 64 of them; reading stops once they
/// keep 16 MiB alive, counting whole frames, padding included) while the
/// connection goes on being read for cancellations and stream credit; when
/// that queue is full too, the server stops reading the connection until a
/// call finishes (backpressure; the client's writes then wait).
pub const DEFAULT_MAX_CALLS_PER_CONNECTION: usize = 128;
/// Default most calls running at once in the whole server: 1024. Same
/// behaviour when reached.
pub const DEFAULT_MAX_CALLS: usize = 1024;
/// Default most calls running at once for one peer process (by the pid the
/// kernel reported when it connected), over all its connections: 256. Same
/// behaviour when reached: further requests wait in their connection's
/// queue. One process cannot take the whole server's call slots.
pub const DEFAULT_MAX_CALLS_PER_PROCESS: usize = 256;
/// Default most calls running at once for one user (uid), over all its
/// processes: 512, half the server. Under the default policy every peer is
/// the server's own user, so this is then the server's working limit.
pub const DEFAULT_MAX_CALLS_PER_USER: usize = 512;
/// Default most requests of one peer process waiting for a call slot, over
/// all its connections: 1024. A request beyond it is answered at once with
/// a server error (code 4), [`TOO_MANY_CALLS`].
pub const DEFAULT_MAX_QUEUED_PER_PROCESS: usize = 1024;
/// Default most requests of one user waiting for a call slot: 4096; beyond
/// it, as for a process.
pub const DEFAULT_MAX_QUEUED_PER_USER: usize = 4096;
/// Default most connections open at once from one user (uid): 2048. A
/// connection beyond it is closed unread (logged at most once a second).
/// Keep it under the process's descriptor limit divided by the users you
/// admit, or one user can exhaust the descriptors.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 2048;
/// Default cap on any unary call's time, whatever deadline the client sent
/// (far-future, or none): 5 minutes. Long for an IPC call, so real work is
/// not cut short, yet a call slot held by a stuck or hostile call comes back
/// within minutes, not never.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The text of the server error (code 4) answering a request beyond its
/// peer's queue quota. Stable: clients may match on it.
pub const TOO_MANY_CALLS: &str = "uds: too many calls from this peer";
/// Default time a connection with no call in flight may stay silent before
/// the server closes it: 15 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Stream items sent before the client grants credit, if its request names
/// no window.
pub const DEFAULT_STREAM_WINDOW: u32 = 16;
/// Most stream credit a client can hold at once.
const MAX_STREAM_CREDIT: usize = 4096;
/// Longest error text sent in a reply; longer texts are cut.
const MAX_ERROR_TEXT: usize = 16 * 1024;

/// A handler's outcome, as the server replies it.
type Outcome = Result<Bytes, HandlerError>;

/// Type-erased handler: starts one call as its own task. Spawning inside the
/// generic impl keeps the handler's future unboxed — one allocation per call.
trait ErasedHandler: Send + Sync + 'static {
    fn spawn(&self, ctx: Context, req: Bytes, call: CallGuard) -> AbortHandle;

    /// Whether the handler answers with a stream of items.
    fn streaming(&self) -> bool {
        false
    }
}

struct StreamHandler<F>(F);

impl<F, Fut, S> ErasedHandler for StreamHandler<F>
where
    F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, HandlerError>> + Send + 'static,
    S: futures_core::Stream<Item = Result<Bytes, HandlerError>> + Send + 'static,
{
    fn spawn(&self, ctx: Context, req: Bytes, call: CallGuard) -> AbortHandle {
        let fut = std::panic::catch_unwind(AssertUnwindSafe(|| (self.0)(ctx, req)));
        tokio::spawn(async move {
            let outcome = match fut {
                Ok(fut) => {
                    let pump = pump_stream(fut, &call);
                    run_to_deadline(pump, call.deadline, call.expiry).await
                }
                Err(_) => Err(panicked()),
            };
            call.finish_stream(outcome.map(drop)).await;
        })
        .abort_handle()
    }

    fn streaming(&self) -> bool {
        true
    }
}

/// Sends a handler's stream item by item, each only once the client has
/// granted credit for it: a slow client slows the producer.
async fn pump_stream<Fut, S>(fut: Fut, call: &CallGuard) -> Outcome
where
    Fut: Future<Output = Result<S, HandlerError>>,
    S: futures_core::Stream<Item = Result<Bytes, HandlerError>>,
{
    use futures_util::StreamExt;
    let stream = fut.await?;
    let mut stream = std::pin::pin!(stream);
    let Some(credits) = call.credits.as_ref() else {
        return Err(HandlerError::server("stream without flow control"));
    };
    loop {
        // The next item first, then the credit to send it: the end of the
        // stream is not an item and needs none (a stream of exactly its
        // window's items must end without waiting for a grant the client has
        // no reason to send). The producer runs at most one item ahead.
        match stream.next().await {
            Some(Ok(item)) => {
                let credit = tokio::select! {
                    c = credits.acquire() => c,
                    () = call.conn.outbox.broken() => {
                        return Err(HandlerError::server("connection closed"));
                    }
                };
                match credit {
                    Ok(permit) => permit.forget(),
                    Err(_) => return Err(HandlerError::server("stream closed")),
                }
                let env = EnvelopeRef {
                    id: call.id,
                    data: &item,
                    stream_item: true,
                    ..EnvelopeRef::default()
                };
                if env.encoded_len() > call.conn.max_frame_len {
                    return Err(HandlerError::server(format!(
                        "a stream item of {} bytes exceeds the frame limit",
                        item.len()
                    )));
                }
                if call.conn.outbox.push(&env, Some(&item)).await.is_err() {
                    return Err(HandlerError::server("connection closed"));
                }
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(Bytes::new()),
        }
    }
}

struct FnHandler<F>(F);

impl<F, Fut> ErasedHandler for FnHandler<F>
where
    F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn spawn(&self, ctx: Context, req: Bytes, call: CallGuard) -> AbortHandle {
        // A handler that panics while *building* its future is caught too.
        let fut = std::panic::catch_unwind(AssertUnwindSafe(|| (self.0)(ctx, req)));
        tokio::spawn(async move {
            let outcome = match fut {
                Ok(fut) => run_to_deadline(fut, call.deadline, call.expiry).await,
                Err(_) => Err(panicked()),
            };
            call.finish(outcome).await;
        })
        .abort_handle()
    }
}

fn panicked() -> HandlerError {
    HandlerError::server("the handler panicked")
}

/// What a call that runs out of time is told, by who set its deadline.
const EXPIRED_CLIENT: &str = "the handler did not finish before the call's deadline";
const EXPIRED_MAX_TIMEOUT: &str =
    "the handler did not finish within the server's limit on a call's time (max_timeout)";
const EXPIRED_MAX_STREAM: &str =
    "the stream did not finish within the server's limit on a stream's time (max_stream_duration)";

async fn run_to_deadline<Fut: Future<Output = Outcome>>(
    fut: Fut,
    deadline: Option<Instant>,
    expiry: &'static str,
) -> Outcome {
    let guarded = AssertUnwindSafe(fut).catch_unwind();
    let result = match deadline {
        Some(at) => match tokio::time::timeout_at(at, guarded).await {
            Ok(r) => r,
            Err(_) => {
                return Err(HandlerError::with_code(ErrorCode::DeadlineExceeded, expiry));
            }
        },
        None => guarded.await,
    };
    result.unwrap_or_else(|_| Err(panicked()))
}

/// Limits and timeouts of a server.
#[derive(Debug, Clone)]
struct Config {
    max_calls_per_conn: usize,
    max_calls: usize,
    max_frame_len: usize,
    frame_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    write_queue: usize,
    write_stall: Duration,
    default_timeout: Option<Duration>,
    max_timeout: Option<Duration>,
    max_stream_duration: Option<Duration>,
    max_calls_per_process: usize,
    max_calls_per_user: usize,
    max_queued_per_process: usize,
    max_queued_per_user: usize,
    max_connections_per_user: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_calls_per_conn: DEFAULT_MAX_CALLS_PER_CONNECTION,
            max_calls: DEFAULT_MAX_CALLS,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            frame_timeout: FrameConfig::default().frame_timeout,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            write_queue: super::client::DEFAULT_WRITE_QUEUE,
            write_stall: super::outbox::DEFAULT_WRITE_STALL,
            default_timeout: None,
            max_timeout: Some(DEFAULT_MAX_TIMEOUT),
            max_stream_duration: None,
            max_calls_per_process: DEFAULT_MAX_CALLS_PER_PROCESS,
            max_calls_per_user: DEFAULT_MAX_CALLS_PER_USER,
            max_queued_per_process: DEFAULT_MAX_QUEUED_PER_PROCESS,
            max_queued_per_user: DEFAULT_MAX_QUEUED_PER_USER,
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
        }
    }
}

/// Registers handlers and sets limits; [`ServerBuilder::build`] makes the
/// [`Server`]. Handlers are fixed once built: nothing can race a
/// registration against dispatch.
#[must_use = "a builder does nothing until .build()"]
pub struct ServerBuilder {
    handlers: HashMap<Box<str>, Arc<dyn ErasedHandler>>,
    duplicates: Vec<String>,
    config: Config,
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
    /// credit (a slow client slows the stream; memory stays bounded). The
    /// call's deadline bounds the whole stream; the client dropping its
    /// stream cancels it. See `PROTOCOL.md` §2.6.
    pub fn streaming<F, Fut, S>(mut self, method: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, HandlerError>> + Send + 'static,
        S: futures_core::Stream<Item = Result<Bytes, HandlerError>> + Send + 'static,
    {
        self.insert(method.into(), Arc::new(StreamHandler(handler)));
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
        self.insert(method.into(), Arc::new(FnHandler(handler)));
        self
    }

    /// Most calls in flight per connection (default
    /// [`DEFAULT_MAX_CALLS_PER_CONNECTION`]). Beyond it requests wait, in a
    /// bounded queue, for a call to finish; see the constant's docs.
    pub fn max_calls_per_connection(mut self, n: usize) -> Self {
        self.config.max_calls_per_conn = n;
        self
    }

    /// Most calls in flight in the server (default [`DEFAULT_MAX_CALLS`]).
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
    /// [`DEFAULT_IDLE_TIMEOUT`]); `None` keeps idle connections forever.
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.idle_timeout = t;
        self
    }

    /// Bytes of replies queued per connection before handlers wait to
    /// reply (default 4 MiB).
    pub fn write_queue(mut self, bytes: usize) -> Self {
        self.config.write_queue = bytes.max(1);
        self
    }

    /// How long replies may wait for a client that does not read them
    /// (default [`DEFAULT_WRITE_STALL`](super::DEFAULT_WRITE_STALL), 30 s):
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
    /// [`DEFAULT_MAX_TIMEOUT`] (5 minutes); `None` removes the cap (a peer
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

    /// Most calls running at once for one peer process, over all its
    /// connections (default [`DEFAULT_MAX_CALLS_PER_PROCESS`]). Processes
    /// are told apart by the pid the kernel reported at connect. Beyond it,
    /// requests wait in their connection's queue.
    pub fn max_calls_per_process(mut self, n: usize) -> Self {
        self.config.max_calls_per_process = n;
        self
    }

    /// Most calls running at once for one user (uid), over all its
    /// processes (default [`DEFAULT_MAX_CALLS_PER_USER`]). Beyond it,
    /// requests wait in their connection's queue.
    pub fn max_calls_per_user(mut self, n: usize) -> Self {
        self.config.max_calls_per_user = n;
        self
    }

    /// Most requests of one peer process waiting for a call slot, over all
    /// its connections (default [`DEFAULT_MAX_QUEUED_PER_PROCESS`]). A
    /// request beyond it is answered at once with a server error (code 4)
    /// reading [`TOO_MANY_CALLS`]; the connection goes on.
    pub fn max_queued_per_process(mut self, n: usize) -> Self {
        self.config.max_queued_per_process = n;
        self
    }

    /// Most requests of one user waiting for a call slot (default
    /// [`DEFAULT_MAX_QUEUED_PER_USER`]); beyond it, as for a process.
    pub fn max_queued_per_user(mut self, n: usize) -> Self {
        self.config.max_queued_per_user = n;
        self
    }

    /// Most connections open at once from one user (default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_USER`]). A connection beyond it is
    /// closed before a frame is read, with a warning logged at most once a
    /// second.
    pub fn max_connections_per_user(mut self, n: usize) -> Self {
        self.config.max_connections_per_user = n;
        self
    }

    /// Builds the server.
    pub fn build(self) -> Result<Server, RpcError> {
        if !self.duplicates.is_empty() {
            return Err(RpcError::Config {
                message: format!(
                    "methods registered more than once: {}",
                    self.duplicates.join(", ")
                ),
            });
        }
        let c = &self.config;
        let limits = [
            c.max_calls,
            c.max_calls_per_conn,
            c.max_calls_per_process,
            c.max_calls_per_user,
        ];
        if limits.iter().any(|&n| n == 0 || n > Semaphore::MAX_PERMITS) {
            return Err(RpcError::Config {
                message: format!(
                    "call limits must be between 1 and {}",
                    Semaphore::MAX_PERMITS
                ),
            });
        }
        if c.max_connections_per_user == 0 {
            return Err(RpcError::Config {
                message: "max_connections_per_user must be at least 1".to_owned(),
            });
        }
        let shared = Arc::new(Shared {
            calls: Arc::new(Semaphore::new(self.config.max_calls)),
            handlers: self.handlers,
            config: self.config,
            stop_accepting: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            aborted: AtomicU64::new(0),
            peers: Peers::default(),
            logs: Logs::default(),
        });
        Ok(Server {
            owner: Arc::new(Owner(shared)),
        })
    }
}

struct Shared {
    handlers: HashMap<Box<str>, Arc<dyn ErasedHandler>>,
    config: Config,
    calls: Arc<Semaphore>,
    stop_accepting: CancellationToken,
    hard_stop: CancellationToken,
    tracker: TaskTracker,
    aborted: AtomicU64,
    peers: Peers,
    logs: Logs,
}

/// One limiter per kind of log line a peer can trigger: each is logged at
/// most once a second, with a count of those suppressed.
struct Logs {
    bad_framing: RateLimited,
    read_failed: RateLimited,
    undecodable: RateLimited,
    cancelled: RateLimited,
    too_many_connections: RateLimited,
    too_many_calls: RateLimited,
    write_failed: RateLimited,
    idle: RateLimited,
}

impl Default for Logs {
    fn default() -> Self {
        let every = || RateLimited::new(LOG_INTERVAL);
        Logs {
            bad_framing: every(),
            read_failed: every(),
            undecodable: every(),
            cancelled: every(),
            too_many_connections: every(),
            too_many_calls: every(),
            write_failed: every(),
            idle: every(),
        }
    }
}

/// Least time between two log lines of one kind that a peer can trigger.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Replies that could not be sent because their connection closed: a peer
/// that leaves with many calls in flight would log one line per call. Kept
/// process-wide: the connection's state, which sends them, does not know
/// its server.
static NOT_SENT: RateLimited = RateLimited::new(LOG_INTERVAL);

/// What one peer process, or one user, holds in the server.
#[derive(Debug)]
struct Usage {
    /// Call slots: running calls.
    calls: Arc<Semaphore>,
    /// Requests waiting for a slot, over all its connections.
    queued: AtomicUsize,
}

/// Usage by peer process and by user, each entry kept while a connection of
/// that peer is open. A pid reused by a new process while connections of
/// the old one are still open shares their entry.
#[derive(Default)]
struct Peers {
    /// By uid: connections open and usage. Locked before `pids`.
    uids: Mutex<HashMap<u32, (usize, Arc<Usage>)>>,
    /// By pid: connections open and usage.
    pids: Mutex<HashMap<i32, (usize, Arc<Usage>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection's share of its peer's entries, released when it closes.
struct PeerHold {
    shared: Arc<Shared>,
    pid: i32,
    uid: u32,
    process: Arc<Usage>,
    user: Arc<Usage>,
}

impl PeerHold {
    /// Counts a new connection of `peer`, or returns how many its user has
    /// open if that is already the limit.
    fn register(shared: &Arc<Shared>, peer: &Cred) -> Result<PeerHold, usize> {
        let c = &shared.config;
        let usage = |n| {
            Arc::new(Usage {
                calls: Arc::new(Semaphore::new(n)),
                queued: AtomicUsize::new(0),
            })
        };
        let mut uids = lock(&shared.peers.uids);
        let entry = uids
            .entry(peer.uid)
            .or_insert_with(|| (0, usage(c.max_calls_per_user)));
        if entry.0 >= c.max_connections_per_user {
            return Err(entry.0);
        }
        entry.0 += 1;
        let user = entry.1.clone();
        let mut pids = lock(&shared.peers.pids);
        let entry = pids
            .entry(peer.pid)
            .or_insert_with(|| (0, usage(c.max_calls_per_process)));
        entry.0 += 1;
        let process = entry.1.clone();
        Ok(PeerHold {
            shared: shared.clone(),
            pid: peer.pid,
            uid: peer.uid,
            process,
            user,
        })
    }
}

impl PeerHold {
    /// [`register`](Self::register), logging a refusal (rate-limited).
    fn admit(shared: &Arc<Shared>, peer: &Cred) -> Option<Arc<PeerHold>> {
        match PeerHold::register(shared, peer) {
            Ok(hold) => Some(Arc::new(hold)),
            Err(open) => {
                if let Some(suppressed) = shared.logs.too_many_connections.allow() {
                    tracing::warn!(
                        peer = %peer,
                        open,
                        limit = shared.config.max_connections_per_user,
                        suppressed,
                        "closing connection: too many connections from this user"
                    );
                }
                None
            }
        }
    }
}

impl Drop for PeerHold {
    fn drop(&mut self) {
        let mut uids = lock(&self.shared.peers.uids);
        if let Some(entry) = uids.get_mut(&self.uid) {
            entry.0 -= 1;
            if entry.0 == 0 {
                uids.remove(&self.uid);
            }
        }
        let mut pids = lock(&self.shared.peers.pids);
        if let Some(entry) = pids.get_mut(&self.pid) {
            entry.0 -= 1;
            if entry.0 == 0 {
                pids.remove(&self.pid);
            }
        }
    }
}

/// Stops everything when the last [`Server`] handle goes.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.stop_accepting.cancel();
        self.0.hard_stop.cancel();
    }
}

/// An RPC server. Cheap to clone. Dropping the last clone stops it at once,
/// unless it is serving a listener ([`Server::serve`] keeps it alive until
/// [`Server::shutdown`]); use `shutdown` to stop gracefully.
///
/// Every reply carries the request's id. Error replies use the wire codes:
/// unknown method → 1, deadline → 2, undecodable request → 3, handler error
/// or panic → 4. A request whose deadline has passed is refused without
/// running the handler; a handler still running at its deadline (the
/// client's, or the server's cap, [`ServerBuilder::max_timeout`]) is dropped
/// and answered with a deadline error.
///
/// Calls are bounded per connection, per peer process, per user and per
/// server; a request beyond its peer's queue quota is answered with a
/// server error reading [`TOO_MANY_CALLS`]. Connections are bounded per
/// user ([`ServerBuilder::max_connections_per_user`]). Every log line a
/// peer can trigger is rate-limited (one a second per kind).
#[derive(Clone)]
pub struct Server {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field(
                "methods",
                &self.shared().handlers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A connection being served by [`Server::serve_connection`].
#[derive(Debug)]
pub struct ServedConnection {
    task: tokio::task::JoinHandle<()>,
    /// The task's result was taken (a `JoinHandle` must not be polled again).
    joined: bool,
}

impl ServedConnection {
    /// Waits until the connection has ended — the peer closed it, it failed,
    /// or the server stopped — and every call on it has finished.
    ///
    /// Cancel safe: dropping the future leaves the connection served.
    pub async fn closed(&mut self) {
        if !self.joined {
            // A join error means the connection's task panicked or was
            // aborted with the runtime: either way the connection is over.
            let _ = (&mut self.task).await;
            self.joined = true;
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.joined || self.task.is_finished()
    }
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether every call finished (and its reply was written) within the
    /// grace period.
    pub graceful: bool,
    /// Calls cancelled because the grace period ran out.
    pub aborted_calls: u64,
}

impl Server {
    /// A builder.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            handlers: HashMap::new(),
            duplicates: Vec::new(),
            config: Config::default(),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.0
    }

    /// The registered method names.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.shared().handlers.keys().map(AsRef::as_ref)
    }

    /// Serves every connection `listener` accepts, in the background, until
    /// [`shutdown`](Self::shutdown) (or until the listener fails). Must be
    /// called inside a tokio runtime.
    ///
    /// Serving keeps the server alive: `Server::builder().build()?.serve(l)`
    /// on a temporary serves, although no handle is kept. Stop it with
    /// [`shutdown`](Self::shutdown) on any clone.
    pub fn serve(&self, listener: Listener) {
        let shared = self.shared().clone();
        // The accept loop owns a handle: dropping every other one must not
        // silently stop a server that was asked to serve.
        let keep_alive = self.clone();
        self.shared().tracker.spawn(async move {
            let _keep_alive = keep_alive;
            loop {
                let conn = tokio::select! {
                    () = shared.stop_accepting.cancelled() => break,
                    c = listener.accept() => c,
                };
                match conn {
                    Ok(conn) => {
                        let s = shared.clone();
                        shared.tracker.spawn(serve_conn(s, conn));
                    }
                    Err(err) => {
                        tracing::error!(%err, "listener failed; no longer accepting");
                        break;
                    }
                }
            }
            // Dropping the listener closes it and removes its socket file, so
            // that no new client connects to a server that will not answer.
            drop(listener);
        });
    }

    /// Serves one connection (for example an end of [`net::pair`](crate::net::pair))
    /// in the background. The returned handle tells when the connection has
    /// ended; dropping it changes nothing.
    pub fn serve_connection(&self, conn: Conn) -> ServedConnection {
        let shared = self.shared().clone();
        ServedConnection {
            task: self.shared().tracker.spawn(serve_conn(shared, conn)),
            joined: false,
        }
    }

    /// Stops gracefully: stops accepting connections (removing the socket
    /// file) and reading new requests, lets calls in flight finish and writes
    /// their replies for up to `grace`, then cancels what is left and closes
    /// every connection.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let shared = self.shared();
        shared.stop_accepting.cancel();
        shared.tracker.close();
        let graceful = tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_ok();
        if !graceful {
            shared.hard_stop.cancel();
            shared.tracker.wait().await;
        }
        ShutdownReport {
            graceful,
            aborted_calls: shared.aborted.load(Ordering::Relaxed),
        }
    }
}

/// Per-connection state shared with the calls running on it.
#[derive(Debug)]
pub(crate) struct ConnState {
    outbox: Outbox,
    inflight: Mutex<InFlightTable>,
    /// Notified when the last call in flight ends.
    drained: Notify,
    max_frame_len: usize,
}

#[derive(Debug, Default)]
struct InFlightTable {
    calls: HashMap<u32, InFlight>,
    seq: u64,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    abort: Option<AbortHandle>,
    token: Option<CancellationToken>,
    /// For a stream: items the client is ready for.
    credits: Option<Arc<Semaphore>>,
}

impl InFlight {
    fn cancel(self) {
        if let Some(a) = self.abort {
            a.abort();
        }
        if let Some(t) = self.token {
            t.cancel();
        }
    }
}

impl ConnState {
    fn lock(&self) -> MutexGuard<'_, InFlightTable> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn cancellation_token(&self, id: u32) -> CancellationToken {
        if let Some(entry) = self.lock().calls.get_mut(&id) {
            return entry
                .token
                .get_or_insert_with(CancellationToken::new)
                .clone();
        }
        // The call is already over: a cancelled token is the truth.
        let t = CancellationToken::new();
        t.cancel();
        t
    }

    fn is_idle(&self) -> bool {
        self.lock().calls.is_empty()
    }

    /// Adds stream credit from the client, capped so that a hostile grant
    /// can neither overflow the semaphore nor mean "unlimited".
    fn grant(&self, id: u32, credit: u32) {
        let t = self.lock();
        if let Some(credits) = t.calls.get(&id).and_then(|e| e.credits.as_ref()) {
            let room = MAX_STREAM_CREDIT.saturating_sub(credits.available_permits());
            credits.add_permits((credit as usize).min(room));
        }
    }

    fn cancel(&self, id: u32) -> bool {
        let entry = self.lock().calls.remove(&id);
        let found = entry.is_some();
        if let Some(e) = entry {
            e.cancel();
        }
        if found && self.is_idle() {
            self.drained.notify_waiters();
        }
        found
    }

    fn cancel_all(&self) -> u64 {
        let all: Vec<InFlight> = self.lock().calls.drain().map(|(_, v)| v).collect();
        let n = all.len() as u64;
        for e in all {
            e.cancel();
        }
        self.drained.notify_waiters();
        n
    }

    /// Waits until no call is in flight.
    async fn wait_drained(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.is_idle() {
                return;
            }
            drained.await;
        }
    }

    async fn reply(&self, id: u32, outcome: Outcome) {
        let result = match outcome {
            Ok(data) => {
                let env = EnvelopeRef {
                    id,
                    data: &data,
                    ..EnvelopeRef::default()
                };
                if env.encoded_len() > self.max_frame_len {
                    let msg = format!(
                        "the reply of {} bytes exceeds the frame limit of {} bytes",
                        data.len(),
                        self.max_frame_len
                    );
                    self.push_error(id, ErrorCode::Server, &msg).await
                } else {
                    self.outbox.push(&env, Some(&data)).await
                }
            }
            Err(e) => self.push_failure(id, &e, false).await,
        };
        if let Err(closed) = result
            && let Some(suppressed) = NOT_SENT.allow()
        {
            tracing::debug!(id, %closed, suppressed, "reply not sent: connection closed");
        }
    }

    /// An error reply; an application error carries its value in `data`.
    async fn push_failure(
        &self,
        id: u32,
        e: &HandlerError,
        stream_end: bool,
    ) -> Result<(), super::outbox::Closed> {
        let msg = truncate(&e.message, MAX_ERROR_TEXT.min(self.max_frame_len / 2));
        let app = e
            .app
            .as_ref()
            .filter(|d| d.len() + msg.len() + 64 <= self.max_frame_len);
        let env = EnvelopeRef {
            id,
            data: app.map_or(&[][..], |d| &d[..]),
            err_type: e.code.as_u32(),
            err: msg.as_bytes(),
            app_error: app.is_some(),
            stream_end,
            ..EnvelopeRef::default()
        };
        self.outbox.push(&env, app).await
    }

    /// The end of a stream, successful or not.
    async fn end_stream(&self, id: u32, outcome: Result<(), HandlerError>) {
        let result = match outcome {
            Ok(()) => {
                let env = EnvelopeRef {
                    id,
                    stream_end: true,
                    ..EnvelopeRef::default()
                };
                self.outbox.push(&env, None).await
            }
            Err(e) => self.push_failure(id, &e, true).await,
        };
        if let Err(closed) = result
            && let Some(suppressed) = NOT_SENT.allow()
        {
            tracing::debug!(id, %closed, suppressed, "stream end not sent: connection closed");
        }
    }

    async fn push_error(
        &self,
        id: u32,
        code: ErrorCode,
        msg: &str,
    ) -> Result<(), super::outbox::Closed> {
        let msg = truncate(msg, MAX_ERROR_TEXT.min(self.max_frame_len / 2));
        let env = EnvelopeRef {
            id,
            err_type: code.as_u32(),
            err: msg.as_bytes(),
            ..EnvelopeRef::default()
        };
        self.outbox.push(&env, None).await
    }
}

/// One call in flight: releases its permits and its table entry when the
/// call ends, however it ends (finished, cancelled, aborted).
pub(crate) struct CallGuard {
    conn: Arc<ConnState>,
    id: u32,
    seq: u64,
    deadline: Option<Instant>,
    credits: Option<Arc<Semaphore>>,
    expiry: &'static str,
    _permits: Slots,
}

impl CallGuard {
    async fn finish(self, outcome: Outcome) {
        // Replying while still registered keeps graceful shutdown waiting
        // for the reply to be queued.
        self.conn.reply(self.id, outcome).await;
    }

    async fn finish_stream(self, outcome: Result<(), HandlerError>) {
        self.conn.end_stream(self.id, outcome).await;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let (now_idle, token) = {
            let mut t = self.conn.lock();
            let mut token = None;
            if t.calls.get(&self.id).is_some_and(|e| e.seq == self.seq) {
                token = t.calls.remove(&self.id).and_then(|e| e.token);
            }
            (t.calls.is_empty(), token)
        };
        // The call is over (finished, past its deadline, or dropped): work
        // watching its token stops too.
        if let Some(token) = token {
            token.cancel();
        }
        if now_idle {
            self.conn.drained.notify_waiters();
        }
    }
}

// Issue 10 item 5 (sec-client) added one line below, taking this past 100.
#[allow(clippy::too_many_lines)]
async fn serve_conn(shared: Arc<Shared>, conn: Conn) {
    let (stream, peer) = conn.into_parts();
    let Some(hold) = PeerHold::admit(&shared, &peer) else {
        // Dropped unread: the peer sees the connection close.
        return;
    };
    let peer = Arc::new(peer);
    super::widen_send_buffer(&stream);
    let (rd, wr) = stream.into_split();
    let state = Arc::new(ConnState {
        outbox: Outbox::new(wr, shared.config.write_queue, shared.config.write_stall),
        inflight: Mutex::new(InFlightTable::default()),
        drained: Notify::new(),
        max_frame_len: shared.config.max_frame_len,
    });
    let writer = tokio::spawn({
        let state = state.clone();
        async move { state.outbox.run_writer().await }
    });
    let mut reader = FrameReader::with_config(
        rd,
        FrameConfig {
            max_frame_len: shared.config.max_frame_len,
            frame_timeout: shared.config.frame_timeout,
        },
    );
    // Issue 10 item 5 (sec-client): an idle connection gives its read
    // buffers back; see FrameReader::set_idle_release.
    reader.set_idle_release(Some(crate::frame::DEFAULT_IDLE_RELEASE));
    let conn_permits = Arc::new(Semaphore::new(shared.config.max_calls_per_conn));
    // Requests read but waiting for a call slot. The reader never waits for a
    // slot itself, so cancellations and stream credit keep being read at the
    // limit; only when this queue is full too does it stop reading.
    let mut parked = ParkedQueue::new(hold.clone(), &shared.config);
    let park_limit = shared.config.max_calls_per_conn.max(MIN_PARKED);
    // How the reading ended decides what happens to calls in flight.
    let mut eof = false;
    let mut broken = false;
    loop {
        let frame = tokio::select! {
            biased;
            () = shared.stop_accepting.cancelled() => break,
            // Replies can no longer be written (the peer stopped reading, or
            // the connection broke): stop reading requests too and close,
            // rather than run handlers whose replies go nowhere.
            () = state.outbox.broken() => {
                if let Some(suppressed) = shared.logs.write_failed.allow() {
                    tracing::debug!(peer = %peer, suppressed, "closing connection: replies cannot be written");
                }
                broken = true;
                break;
            }
            slots = acquire_slots(&conn_permits, &hold, &shared.calls), if !parked.is_empty() => {
                if let (Some(slots), Some(call)) = (slots, parked.pop()) {
                    start_call(&state, &peer, call, slots).await;
                }
                continue;
            }
            () = idle(&state, shared.config.idle_timeout), if parked.is_empty() => {
                if let Some(suppressed) = shared.logs.idle.allow() {
                    tracing::debug!(peer = %peer, suppressed, "closing idle connection");
                }
                break;
            }
            f = reader.read_frame(), if parked.len() < park_limit
                && parked.bytes() < MAX_PARKED_BYTES => f,
        };
        let body = match frame_body(&shared, &peer, frame) {
            Ok(body) => body,
            Err(ReadEnd::Eof) => {
                eof = true;
                break;
            }
            Err(ReadEnd::Broken) => {
                broken = true;
                break;
            }
        };
        let keep_going = tokio::select! {
            () = shared.stop_accepting.cancelled() => false,
            () = handle_frame(&shared, &state, &peer, &hold, &conn_permits, &mut parked, body) => true,
        };
        if !keep_going {
            break;
        }
        // Frames already in the read buffer are handed out without touching
        // the socket, so without this a peer that keeps the buffer full
        // (cancellations, bad frames, cheap calls) would hold this worker
        // thread and starve every other connection on it. Each frame costs
        // a unit of tokio's cooperative budget; when it runs out, the task
        // yields to the others.
        tokio::task::coop::consume_budget().await;
    }
    end_conn(&shared, &state, &reader, writer, &mut parked, eof, broken).await;
    // The peer's quotas count this connection until here.
    drop(parked);
    drop(hold);
}

/// The end of a connection: answers the requests that never started,
/// stops the calls if nobody can read their replies, waits for the rest
/// (until a hard stop), and lets the writer flush.
async fn end_conn<T>(
    shared: &Shared,
    state: &ConnState,
    reader: &FrameReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::task::JoinHandle<T>,
    parked: &mut ParkedQueue,
    eof: bool,
    broken: bool,
) {
    // Requests that never got a slot are answered, with their ids.
    if !broken {
        while let Some(call) = parked.pop() {
            let e = HandlerError::server("the server is shutting down; the call did not start");
            state.reply(call.env.id, Err(e)).await;
        }
    }
    // A broken connection, or a peer that closed both directions (not just
    // its writing side): nobody will read replies, so stop the calls now.
    if broken || (eof && peer_fully_closed(reader).await) {
        state.outbox.break_with("the connection ended");
        state.cancel_all();
    }
    tokio::select! {
        () = state.wait_drained() => {}
        () = state.outbox.broken() => {
            state.cancel_all();
        }
        () = shared.hard_stop.cancelled() => {
            shared.aborted.fetch_add(state.cancel_all(), Ordering::Relaxed);
        }
    }
    state.outbox.finish();
    let mut writer = writer;
    tokio::select! {
        _ = &mut writer => {}
        () = shared.hard_stop.cancelled() => writer.abort(),
    }
}

/// How reading a connection ended, short of a stop.
enum ReadEnd {
    /// The peer closed its side between frames.
    Eof,
    /// Reading failed, or the peer broke the framing.
    Broken,
}

/// The body of a frame read, or how the reading ended (logged, at most once
/// a second per kind).
fn frame_body(
    shared: &Shared,
    peer: &Cred,
    frame: Result<Option<Bytes>, FrameError>,
) -> Result<Bytes, ReadEnd> {
    match frame {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err(ReadEnd::Eof),
        Err(FrameError::Io(e)) => {
            if let Some(suppressed) = shared.logs.read_failed.allow() {
                tracing::debug!(peer = %peer, %e, suppressed, "connection read failed");
            }
            Err(ReadEnd::Broken)
        }
        Err(e) => {
            if let Some(suppressed) = shared.logs.bad_framing.allow() {
                tracing::warn!(peer = %peer, %e, suppressed, "closing connection: bad framing");
            }
            Err(ReadEnd::Broken)
        }
    }
}

async fn peer_fully_closed(reader: &FrameReader<tokio::net::unix::OwnedReadHalf>) -> bool {
    let stream: &tokio::net::UnixStream = reader.get_ref().as_ref();
    match tokio::time::timeout(Duration::from_millis(10), stream.ready(Interest::WRITABLE)).await {
        Ok(Ok(ready)) => ready.is_write_closed(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// Completes once the connection has had no call in flight for `timeout`.
async fn idle(state: &ConnState, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    // Within one read, calls only end (a new one needs a frame), so once the
    // connection is drained it stays drained until this future is dropped.
    state.wait_drained().await;
    tokio::time::sleep(timeout).await;
}

/// Requests that may wait for a call slot per connection, at least.
const MIN_PARKED: usize = 64;
/// Bytes that requests waiting for a call slot may keep alive per
/// connection before the server stops reading it (whole frames, or what was
/// copied out of them: see [`detach`]). The request that crosses it is
/// still queued, so at most this plus one frame is held.
const MAX_PARKED_BYTES: usize = 16 * 1024 * 1024;

/// Frames smaller than this are slices of the reader's shared buffer (see
/// [`FrameReader`]): a parked one would keep that whole buffer alive, so
/// what it keeps is copied out instead.
const SHARED_FRAME_MAX: usize = 8 * 1024;

/// A request read but not yet started.
struct Parked {
    env: Envelope,
    handler: Arc<dyn ErasedHandler>,
    deadline: Option<Instant>,
    /// What the call is told if it runs out of time.
    expiry: &'static str,
    /// Bytes this request keeps alive while it waits.
    retained: usize,
}

/// A connection's requests waiting for a call slot, with a running count of
/// the bytes they keep alive, each also counted against its peer's process
/// and user queue quotas.
struct ParkedQueue {
    queue: VecDeque<Parked>,
    bytes: usize,
    hold: Arc<PeerHold>,
    max_per_process: usize,
    max_per_user: usize,
}

impl Drop for ParkedQueue {
    fn drop(&mut self) {
        for _ in 0..self.queue.len() {
            self.release();
        }
    }
}

impl ParkedQueue {
    fn new(hold: Arc<PeerHold>, config: &Config) -> Self {
        ParkedQueue {
            queue: VecDeque::new(),
            bytes: 0,
            hold,
            max_per_process: config.max_queued_per_process,
            max_per_user: config.max_queued_per_user,
        }
    }

    /// Takes a place for one more request in the peer's quotas, if both
    /// have room; [`push`](Self::push) fills it.
    fn reserve(&self) -> bool {
        let (process, user) = (&self.hold.process.queued, &self.hold.user.queued);
        if process.fetch_add(1, Ordering::AcqRel) >= self.max_per_process {
            process.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if user.fetch_add(1, Ordering::AcqRel) >= self.max_per_user {
            user.fetch_sub(1, Ordering::AcqRel);
            process.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn release(&self) {
        self.hold.process.queued.fetch_sub(1, Ordering::AcqRel);
        self.hold.user.queued.fetch_sub(1, Ordering::AcqRel);
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes kept alive by the requests waiting.
    fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queues a request whose place [`reserve`](Self::reserve) took.
    fn push(&mut self, call: Parked) {
        self.bytes += call.retained;
        self.queue.push_back(call);
    }

    fn pop(&mut self) -> Option<Parked> {
        let call = self.queue.pop_front()?;
        self.bytes -= call.retained;
        self.release();
        Some(call)
    }

    fn contains(&self, id: u32) -> bool {
        self.queue.iter().any(|p| p.env.id == id)
    }

    /// Removes the request with this id; whether there was one.
    fn remove(&mut self, id: u32) -> bool {
        let Some(i) = self.queue.iter().position(|p| p.env.id == id) else {
            return false;
        };
        if let Some(call) = self.queue.remove(i) {
            self.bytes -= call.retained;
            self.release();
        }
        true
    }
}

/// Makes a request ready to wait for a slot, returning the bytes it then
/// keeps alive. Its `method` and `data` are slices of the whole frame, so
/// the frame stays allocated while they do: counting `data` alone would let
/// padding in an unknown field go uncounted. When they are most of the
/// frame, the frame is kept and counted whole; when they are not (padding),
/// or the frame lives in the reader's shared buffer, they are copied out and
/// the frame is released.
///
/// A kept frame counts twice its length: the reader grows a large body's
/// buffer by doubling as bytes arrive, so its allocation can be up to twice
/// the frame. Copying the rest out is cheap next to that (it is at most half
/// of a frame, and only when the call limits are reached).
fn detach(env: &mut Envelope, frame_len: usize) -> usize {
    let kept = env.method.len() + env.data.len();
    // The error text of a request means nothing; drop its slice too.
    env.err = Bytes::new();
    if frame_len >= SHARED_FRAME_MAX && kept >= frame_len / 2 {
        return frame_len.saturating_mul(2);
    }
    let mut own = bytes::BytesMut::with_capacity(kept);
    own.extend_from_slice(&env.method);
    own.extend_from_slice(&env.data);
    let mut own = own.freeze();
    env.method = own.split_to(env.method.len());
    env.data = own;
    kept
}

/// The call slots a running call holds: one of its connection, of its peer
/// process, of its user and of the server. Always taken in that order, so
/// that waiters never hold slots in a cycle.
struct Slots {
    _conn: OwnedSemaphorePermit,
    _process: OwnedSemaphorePermit,
    _user: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

/// Every slot a call needs, if all are free now.
fn try_slots(conn: &Arc<Semaphore>, hold: &PeerHold, server: &Arc<Semaphore>) -> Option<Slots> {
    Some(Slots {
        _conn: conn.clone().try_acquire_owned().ok()?,
        _process: hold.process.calls.clone().try_acquire_owned().ok()?,
        _user: hold.user.calls.clone().try_acquire_owned().ok()?,
        _server: server.clone().try_acquire_owned().ok()?,
    })
}

/// Waits for every slot a call needs. Dropped midway (another event won the
/// select), it releases whatever it had.
async fn acquire_slots(
    conn: &Arc<Semaphore>,
    hold: &PeerHold,
    server: &Arc<Semaphore>,
) -> Option<Slots> {
    Some(Slots {
        _conn: conn.clone().acquire_owned().await.ok()?,
        _process: hold.process.calls.clone().acquire_owned().await.ok()?,
        _user: hold.user.calls.clone().acquire_owned().await.ok()?,
        _server: server.clone().acquire_owned().await.ok()?,
    })
}

async fn handle_frame(
    shared: &Arc<Shared>,
    state: &Arc<ConnState>,
    peer: &Arc<Cred>,
    hold: &PeerHold,
    conn_permits: &Arc<Semaphore>,
    parked: &mut ParkedQueue,
    body: Bytes,
) {
    let env = match Envelope::decode(&body) {
        Ok(env) => env,
        Err(e) => {
            // The frame boundary is intact, so the connection goes on. The raw
            // bytes are never echoed back.
            if let Some(suppressed) = shared.logs.undecodable.allow() {
                tracing::debug!(peer = %peer, %e, len = body.len(), suppressed, "undecodable request");
            }
            let msg = format!("request envelope could not be decoded: {e}");
            let _ = state.push_error(0, ErrorCode::BadData, &msg).await;
            return;
        }
    };
    if env.cancel {
        let started = if state.cancel(env.id) {
            true
        } else if parked.remove(env.id) {
            false
        } else {
            return;
        };
        if let Some(suppressed) = shared.logs.cancelled.allow() {
            tracing::debug!(
                id = env.id,
                started,
                suppressed,
                "call cancelled by the client"
            );
        }
        return;
    }
    if env.credit > 0 && env.method.is_empty() {
        state.grant(env.id, env.credit);
        return;
    }
    if env.id == 0 {
        let _ = state
            .push_error(0, ErrorCode::BadData, "request has no call id")
            .await;
        return;
    }
    let id = env.id;
    let (handler, deadline, expiry) = match route(shared, &env) {
        Ok((handler, deadline, expiry)) => (handler.clone(), deadline, expiry),
        Err(refusal) => {
            state.reply(id, Err(refusal)).await;
            return;
        }
    };
    if state.lock().calls.contains_key(&id) || parked.contains(id) {
        let e = HandlerError::bad_data(format!("call id {id} is already in flight"));
        state.reply(id, Err(e)).await;
        return;
    }
    let mut call = Parked {
        env,
        handler,
        deadline,
        expiry,
        retained: 0,
    };
    // Start at once if a slot is free and nobody is queued ahead.
    if parked.is_empty()
        && let Some(slots) = try_slots(conn_permits, hold, &shared.calls)
    {
        start_call(state, peer, call, slots).await;
        return;
    }
    if !parked.reserve() {
        if let Some(suppressed) = shared.logs.too_many_calls.allow() {
            tracing::warn!(peer = %peer, suppressed, "refusing a call: too many calls from this peer");
        }
        state
            .reply(id, Err(HandlerError::server(TOO_MANY_CALLS)))
            .await;
        return;
    }
    call.retained = detach(&mut call.env, body.len());
    drop(body);
    parked.push(call);
}

/// Runs a call in its own task, holding its slots until it ends.
async fn start_call(state: &Arc<ConnState>, peer: &Arc<Cred>, call: Parked, slots: Slots) {
    let Parked {
        env,
        handler,
        deadline,
        expiry,
        ..
    } = call;
    let id = env.id;
    if deadline.is_some_and(|d| d <= Instant::now()) {
        let e = HandlerError::with_code(
            ErrorCode::DeadlineExceeded,
            "the call's deadline passed while it waited for a slot",
        );
        state.reply(id, Err(e)).await;
        return;
    }
    let credits = handler.streaming().then(|| {
        let window = if env.credit == 0 {
            DEFAULT_STREAM_WINDOW
        } else {
            env.credit
        };
        Arc::new(Semaphore::new((window as usize).min(MAX_STREAM_CREDIT)))
    });
    let seq = {
        let mut t = state.lock();
        t.seq += 1;
        let seq = t.seq;
        t.calls.insert(
            id,
            InFlight {
                seq,
                abort: None,
                token: None,
                credits: credits.clone(),
            },
        );
        seq
    };
    let ctx = Context {
        peer: peer.clone(),
        id,
        deadline,
        conn: state.clone(),
    };
    let guard = CallGuard {
        conn: state.clone(),
        id,
        seq,
        deadline,
        credits,
        expiry,
        _permits: slots,
    };
    let abort = handler.spawn(ctx, env.data, guard);
    if let Some(entry) = state.lock().calls.get_mut(&id)
        && entry.seq == seq
    {
        entry.abort = Some(abort);
    }
}

/// Finds the handler and deadline of a request, or the error to answer it
/// with (without running anything).
type Route<'s> = (&'s Arc<dyn ErasedHandler>, Option<Instant>, &'static str);

fn route<'s>(shared: &'s Shared, env: &Envelope) -> Result<Route<'s>, HandlerError> {
    let Some(method) = env.method_str() else {
        return Err(HandlerError::bad_data("method name is not valid UTF-8"));
    };
    let Ok(deadline) = deadline_of(env.exp_unix_nano, shared.config.default_timeout) else {
        return Err(HandlerError::with_code(
            ErrorCode::DeadlineExceeded,
            "the call's deadline had passed when it arrived",
        ));
    };
    let Some(handler) = shared.handlers.get(method) else {
        return Err(HandlerError::with_code(
            ErrorCode::MethodNotFound,
            format!("method {} not found", truncate(method, 256)),
        ));
    };
    // The server's cap applies whatever the client asked for; an earlier
    // deadline of the client's stands.
    let (cap, capped) = if handler.streaming() {
        (shared.config.max_stream_duration, EXPIRED_MAX_STREAM)
    } else {
        (shared.config.max_timeout, EXPIRED_MAX_TIMEOUT)
    };
    let cap = cap.and_then(|t| Instant::now().checked_add(t));
    Ok(match (deadline, cap) {
        (Some(d), Some(c)) if c < d => (handler, Some(c), capped),
        (None, Some(c)) => (handler, Some(c), capped),
        (d, _) => (handler, d, EXPIRED_CLIENT),
    })
}

/// The local deadline for a call's `exp_unix_nano`: `Err` if it has passed.
fn deadline_of(exp_unix_nano: i64, default: Option<Duration>) -> Result<Option<Instant>, ()> {
    if exp_unix_nano == 0 {
        return Ok(default.and_then(|t| Instant::now().checked_add(t)));
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let left = exp_unix_nano.saturating_sub(now);
    if left <= 0 {
        return Err(());
    }
    // Far-future deadlines (beyond ~a year) mean "no deadline" to the timer.
    let left = Duration::from_nanos(left.cast_unsigned());
    Ok(Instant::now()
        .checked_add(left)
        .filter(|_| left < Duration::from_secs(366 * 86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An envelope decoded from a frame of `method`, `data` and `pad` bytes
    /// of an unknown field (99), with the frame's length.
    fn decoded(method: &[u8], data: &[u8], pad: usize) -> (Envelope, usize) {
        let mut body = Vec::new();
        Envelope {
            id: 7,
            method: Bytes::copy_from_slice(method),
            data: Bytes::copy_from_slice(data),
            ..Envelope::default()
        }
        .encode(&mut body);
        if pad > 0 {
            super::super::envelope::put_varint(&mut body, (99 << 3) | 2);
            super::super::envelope::put_varint(&mut body, pad as u64);
            body.resize(body.len() + pad, 0);
        }
        let frame = Bytes::from(body);
        (Envelope::decode(&frame).unwrap(), frame.len())
    }

    /// Whether two `Bytes` start at the same address, i.e. one is still a
    /// view of the other's memory (here: of the frame).
    fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
        a.as_ptr() == b.as_ptr()
    }

    #[test]
    fn a_padded_request_is_copied_out_and_counted_by_what_it_keeps() {
        let (mut env, len) = decoded(b"/m", b"data", 1 << 20);
        let before = env.data.clone();
        let kept = detach(&mut env, len);
        assert_eq!(kept, 2 + 4);
        assert_eq!((&env.method[..], &env.data[..]), (&b"/m"[..], &b"data"[..]));
        assert!(
            !same_bytes(&before, &env.data),
            "still a slice of the frame"
        );
    }

    #[test]
    fn a_request_that_is_mostly_data_keeps_its_frame_counted_twice() {
        let (mut env, len) = decoded(b"/m", &vec![1; 64 * 1024], 1024);
        let before = env.data.clone();
        assert_eq!(detach(&mut env, len), 2 * len);
        assert!(same_bytes(&before, &env.data), "copied for nothing");
    }

    #[test]
    fn a_small_request_is_copied_out_of_the_shared_buffer() {
        let (mut env, len) = decoded(b"/m", b"tiny", 0);
        let before = env.data.clone();
        assert_eq!(detach(&mut env, len), 6);
        assert!(!same_bytes(&before, &env.data));
        assert!(env.err.is_empty());
    }
}
