//! Extra connections ("lanes") of a client made by
//! [`ClientBuilder::connect`](super::ClientBuilder::connect): while many
//! calls are in flight, the client opens more connections to the same
//! server and spreads new calls over them.
//!
//! One connection is served by one reading task and one writing task on
//! each side, so however many calls it carries, it keeps at most about one
//! core busy per side; with two lanes on two cores the benchmark ran 1.5x
//! faster at 1 KiB and 1.1-1.2x at 100 KiB-1 MB. A lane is:
//!
//! - opened only under load (a few calls in flight on the first connection),
//!   one at a time, up to [`ClientBuilder::max_connections`](super::ClientBuilder::max_connections);
//! - checked as the first was (the same path and checks), and used only if
//!   the same server process (pid and uid) serves it and it has answered a
//!   probe (so a server that refuses connections beyond its per-user limit
//!   loses no call);
//! - closed once it has carried no new call for [`LANE_IDLE`] and none is in
//!   flight on it (calls and streams keep their lane open until they end).
//!
//! Only unary calls go on lanes, and only while the first connection has
//! calls in flight; streams and the calls made while it has none go on the
//! first connection. So the first connection, whose end ends the client,
//! is never left idle (for the server's idle timeout to close) while lanes
//! carry the traffic. A call, once on a lane, behaves there exactly as on
//! the first connection.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{CallOptions, Client, ClientBuilder};
use crate::cred::Cred;
use crate::rpc::RpcError;

/// Calls in flight on the first connection at which a lane is opened.
pub(super) const OPEN_AT: usize = 4;
/// A lane that carried no new call for this long, with none in flight, is
/// closed.
pub(super) const LANE_IDLE: Duration = Duration::from_secs(1);
/// After a lane could not be opened, how long before another try; doubled
/// after each further failure, up to [`MAX_RETRY_AFTER`].
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// The longest wait between tries (a server that refuses every extra
/// connection sees one try in ten minutes).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// How long a new lane has to answer its probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The method a new lane's probe calls: no server has it, so any server
/// that reads the connection answers at once ("method not found").
pub(super) const PROBE_METHOD: &str = "/uds.lane/probe";
/// The most lanes (connections, the first included) a client opens by
/// default, whatever the runtime's workers.
pub(super) const MAX_DEFAULT_LANES: usize = 4;

/// The lanes of one client, beside its first connection.
#[derive(Debug)]
pub(super) struct Lanes {
    /// Where the first connection was made, and how.
    path: PathBuf,
    builder: ClientBuilder,
    /// The first connection's server, which every lane must have too.
    server: Cred,
    /// Most connections, the first included.
    max: usize,
    /// The lanes open and checked, in use, and which task keeps to which.
    open: Mutex<Open>,
    /// How many lanes `open` holds (read without its lock on every call
    /// under load).
    count: AtomicUsize,
    /// A lane is being opened.
    opening: AtomicBool,
    /// No lane is opened before this, after a failure.
    retry_at: Mutex<Option<Instant>>,
    /// Tries that failed in a row.
    failures: AtomicU32,
    /// The tasks that open and watch lanes, stopped with the client.
    tasks: Mutex<Vec<AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lanes {
    /// Lanes for a client connected to `path` with `builder`, served by
    /// `server`; `None` if it may open only the one connection.
    pub(super) fn new(path: PathBuf, builder: &ClientBuilder, server: Cred) -> Option<Arc<Lanes>> {
        let max = builder.max_connections.unwrap_or_else(|| {
            tokio::runtime::Handle::try_current()
                .map_or(1, |h| h.metrics().num_workers())
                .clamp(1, MAX_DEFAULT_LANES)
        });
        if max <= 1 {
            return None;
        }
        let mut builder = builder.clone();
        builder.close_cause = None;
        builder.max_connections = Some(1);
        Some(Arc::new(Lanes {
            path,
            builder,
            server,
            max,
            open: Mutex::new(Open::default()),
            count: AtomicUsize::new(0),
            opening: AtomicBool::new(false),
            retry_at: Mutex::new(None),
            failures: AtomicU32::new(0),
            tasks: Mutex::new(Vec::new()),
        }))
    }

    /// The lane for a new call: `None` for the first connection. Each task
    /// keeps to one of the first connection and the lanes open, but a call
    /// made while the first connection has none in flight goes there (so
    /// that the first connection, whose end ends the client, is never left
    /// idle for the server to close while lanes carry the calls).
    pub(super) fn pick(&self, first_idle: impl FnOnce() -> bool) -> Option<Client> {
        // No lane (the usual case off load): nothing to lock or look up.
        if self.count.load(Ordering::Acquire) == 0 || first_idle() {
            return None;
        }
        let mut open = lock(&self.open);
        if open.lanes.is_empty() {
            return None;
        }
        // Outside a task: the first connection.
        let task = tokio::task::try_id()?;
        let k = open.place_of(task) % (open.lanes.len() + 1);
        let lane = open.lanes.get(k.checked_sub(1)?)?;
        // A lane the server closed is not picked (its watcher removes it).
        (!lane.reader_ended()).then(|| lane.clone())
    }

    /// `in_flight` calls are in flight on the first connection: opens a
    /// lane if that is many and there is room for one (in the background:
    /// no call waits for it).
    pub(super) fn grow(self: &Arc<Self>, in_flight: usize) {
        // Cheapest first: this runs for every call under load.
        if in_flight < OPEN_AT
            || self.count.load(Ordering::Relaxed) + 1 >= self.max
            || self.opening.load(Ordering::Relaxed)
            || lock(&self.retry_at).is_some_and(|at| Instant::now() < at)
            || self.opening.swap(true, Ordering::AcqRel)
        {
            return;
        }
        // Holding the token: a lane opened meanwhile is counted by now.
        if self.count.load(Ordering::Acquire) + 1 >= self.max {
            self.opening.store(false, Ordering::Release);
            return;
        }
        let task = tokio::spawn(run_lane(Arc::downgrade(self)));
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }

    /// No lane is opened for a while: 10 s after a first failure (or a
    /// lane that carried no call), twice as long after each further one.
    fn back_off(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).min(6);
        let wait = (RETRY_AFTER * 2u32.pow(failures)).min(MAX_RETRY_AFTER);
        *lock(&self.retry_at) = Some(Instant::now() + wait);
    }

    /// Fails the calls of every lane with `err` (see [`Client::fail_with`]).
    pub(super) fn fail_all(&self, err: &RpcError) {
        let lanes = std::mem::take(&mut lock(&self.open).lanes);
        self.count.store(0, Ordering::Relaxed);
        for lane in lanes {
            lane.fail_with(err);
        }
    }

    /// Opens, checks and probes a lane.
    async fn open_lane(&self) -> Result<Client, String> {
        let conn = crate::net::connect(&self.path)
            .await
            .map_err(|e| e.to_string())?;
        let peer = conn.peer_cred();
        // Pid 0: the server is in a pid namespace this process cannot see,
        // so the same pid would not prove the same process.
        if self.server.pid <= 0 || peer.pid != self.server.pid || peer.uid != self.server.uid {
            return Err(format!(
                "served by {peer}, not by the first connection's {}",
                self.server
            ));
        }
        let lane = self.builder.clone().build(conn);
        let probe = lane
            .call_with(
                PROBE_METHOD,
                Bytes::new(),
                CallOptions::timeout(PROBE_TIMEOUT),
            )
            .await;
        match probe {
            Ok(_) | Err(RpcError::MethodNotFound { .. }) => Ok(lane),
            Err(e) => Err(format!("the probe failed: {e}")),
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// The lanes in use, and the place of each task that called lately.
///
/// A task's calls keep to one connection (whose reader then wakes it):
/// that measured better than taking turns call by call (the benchmark's 16
/// tasks at 1 KiB: 1.37x the floor with a connection each, 1.14x taking
/// turns). Places are handed out in turn as tasks first call, so tasks
/// spread evenly.
#[derive(Debug, Default)]
struct Open {
    lanes: Vec<Client>,
    places: HashMap<tokio::task::Id, usize>,
    next: usize,
}

/// Tasks remembered at most; past it they are placed afresh (harmless:
/// a task's next call may then go on another connection).
const MAX_PLACES: usize = 4096;

impl Open {
    fn place_of(&mut self, task: tokio::task::Id) -> usize {
        if let Some(&place) = self.places.get(&task) {
            return place;
        }
        if self.places.len() >= MAX_PLACES {
            self.places.clear();
        }
        let place = self.next;
        self.next = self.next.wrapping_add(1);
        self.places.insert(task, place);
        place
    }
}

/// A lane's life: opened and checked, used while it is busy, removed once
/// idle (or closed by the server).
async fn run_lane(lanes: Weak<Lanes>) {
    let opened = match lanes.upgrade() {
        Some(l) => l.open_lane().await,
        None => return,
    };
    let Some(pool) = lanes.upgrade() else {
        return;
    };
    let lane = match opened {
        Ok(lane) => lane,
        Err(why) => {
            tracing::debug!(path = %pool.path.display(), %why, "no extra connection: calls stay on one");
            pool.back_off();
            pool.opening.store(false, Ordering::Release);
            return;
        }
    };
    {
        let mut open = lock(&pool.open);
        open.lanes.push(lane.clone());
        pool.count.store(open.lanes.len(), Ordering::Release);
    }
    // Only now, so that no second opener can see room that this lane took.
    pool.opening.store(false, Ordering::Release);
    drop(pool);
    let opened_at = lane.calls_started();
    let mut calls_seen = opened_at;
    loop {
        tokio::time::sleep(LANE_IDLE).await;
        let started = lane.calls_started();
        let idle = started == calls_seen && lane.in_flight() == 0;
        calls_seen = started;
        if idle || lane.reader_ended() {
            break;
        }
    }
    if let Some(pool) = lanes.upgrade() {
        {
            let mut open = lock(&pool.open);
            open.lanes.retain(|l| !l.same_connection(&lane));
            pool.count.store(open.lanes.len(), Ordering::Release);
            if open.lanes.is_empty() {
                // Idle: forget the tasks (and their memory).
                open.places = HashMap::new();
            }
        }
        if lane.calls_started() == opened_at {
            // It carried no call (the load was long streams on the first
            // connection, say): not again soon.
            pool.back_off();
        } else {
            pool.failures.store(0, Ordering::Relaxed);
        }
    }
    // The lane closes once the last call or stream on it is done.
}
