//! Defaults and shared limits of the RPC client and server, in one place:
//! both sides use these, and neither imports the other for them.

use std::time::Duration;

/// Default time a call may take when none is given: 30 s.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Default bytes of frames queued for writing before callers wait: 4 MiB
/// (client requests and server replies alike).
pub const DEFAULT_WRITE_QUEUE: usize = 4 * 1024 * 1024;

/// Default time a connection's writes may make no progress before the peer
/// is taken to have stopped reading and the connection is broken: 30 s.
pub const DEFAULT_WRITE_STALL: Duration = Duration::from_secs(30);

/// Most stream credit a client can hold at once on a uds server, and so the
/// largest stream window a uds client asks for.
pub(crate) const MAX_STREAM_CREDIT: u32 = 4096;

/// Least time between two log lines of one kind that a peer can trigger.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Send buffer asked for on every RPC connection (Linux doubles it, to
/// 512 KiB). One connection carries every caller's frames, and a Unix stream
/// socket's send buffer bounds what it can have in flight: the default
/// (208 KiB on Linux) holds two 100 KiB frames, so writer and reader take
/// turns in small steps. Larger is not better: at 1 MiB the benchmark lost
/// 5-15 % at 100 KiB-1 MB against 256 KiB, the data in flight going cold in
/// the cache. The kernel charges only the bytes actually queued, and caps the
/// value at its own maximum (`net.core.wmem_max`).
pub(crate) const SEND_BUFFER: usize = 256 * 1024;

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
/// Default longest a server may stay silent on a streaming call (no item,
/// end or keep-alive) before the client ends it: 60 s. The client asks for
/// a keep-alive every third of it.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Shortest idle timeout honoured (shorter ones are raised to it): 300 ms,
/// so keep-alives come at most every 100 ms.
pub const MIN_STREAM_IDLE_TIMEOUT: Duration = Duration::from_millis(300);
/// Least time between two keep-alives a server sends for one call,
/// whatever the client asks for.
pub(crate) const MIN_KEEPALIVE: Duration = Duration::from_millis(100);
/// Default items of a client stream a server lets a client send ahead of
/// the handler: 16 (see
/// [`ServerBuilder::client_stream_window`](crate::rpc::ServerBuilder::client_stream_window)).
pub const DEFAULT_CLIENT_STREAM_WINDOW: u32 = 16;
