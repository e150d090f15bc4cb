//! What every connection of a server shares: its handlers, limits, global
//! call slots, stop signals, task tracker, peer usage and log limiters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::Config;
use super::handler::ErasedHandler;
use super::peers::{PeerLimits, Peers};
use crate::log_limit::RateLimited;
use crate::rpc::defaults::LOG_INTERVAL;

/// The state of a server, shared by its handles, its accept loop and its
/// connections.
pub(super) struct Shared {
    pub(super) handlers: HashMap<Box<str>, Arc<dyn ErasedHandler>>,
    pub(super) config: Config,
    /// The server's call slots.
    pub(super) calls: Arc<Semaphore>,
    /// Fired by shutdown: stop accepting and reading new requests.
    pub(super) stop_accepting: CancellationToken,
    /// Fired when the grace period runs out (or the last handle goes):
    /// cancel every call and close.
    pub(super) hard_stop: CancellationToken,
    /// The accept loop and every connection task.
    pub(super) tracker: TaskTracker,
    /// Calls cancelled by a hard stop.
    pub(super) aborted: AtomicU64,
    pub(super) peers: Arc<Peers>,
    pub(super) logs: Logs,
}

impl Shared {
    pub(super) fn new(handlers: HashMap<Box<str>, Arc<dyn ErasedHandler>>, config: Config) -> Self {
        Shared {
            calls: Arc::new(Semaphore::new(config.max_calls)),
            handlers,
            config,
            stop_accepting: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            aborted: AtomicU64::new(0),
            peers: Arc::default(),
            logs: Logs::default(),
        }
    }

    /// The per-peer limits of the configuration.
    pub(super) fn peer_limits(&self) -> PeerLimits {
        PeerLimits {
            connections_per_user: self.config.max_connections_per_user,
            calls_per_user: self.config.max_calls_per_user,
            calls_per_process: self.config.max_calls_per_process,
        }
    }
}

/// One limiter per kind of log line a peer can trigger: each is logged at
/// most once a second, with a count of those suppressed.
pub(super) struct Logs {
    pub(super) bad_framing: RateLimited,
    pub(super) read_failed: RateLimited,
    pub(super) undecodable: RateLimited,
    pub(super) cancelled: RateLimited,
    pub(super) too_many_connections: RateLimited,
    pub(super) too_many_calls: RateLimited,
    pub(super) write_failed: RateLimited,
    pub(super) idle: RateLimited,
    pub(super) bad_stream_items: RateLimited,
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
            bad_stream_items: every(),
        }
    }
}
