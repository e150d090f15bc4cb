//! What each peer process and each user holds in the server (connections,
//! call slots, queued requests), and the call slots a running call takes.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cred::Cred;

/// What one peer process, or one user, holds in the server.
#[derive(Debug)]
pub(super) struct Usage {
    /// Call slots: running calls.
    pub(super) calls: Arc<Semaphore>,
    /// Requests waiting for a slot, over all its connections.
    pub(super) queued: AtomicUsize,
}

impl Usage {
    pub(super) fn new(calls: usize) -> Arc<Usage> {
        Arc::new(Usage {
            calls: Arc::new(Semaphore::new(calls)),
            queued: AtomicUsize::new(0),
        })
    }
}

/// The per-peer limits [`PeerHold::register`] applies.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerLimits {
    pub(super) connections_per_user: usize,
    pub(super) calls_per_user: usize,
    pub(super) calls_per_process: usize,
}

/// Usage by peer process and by user, each entry kept while a connection of
/// that peer is open. A pid reused by a new process while connections of
/// the old one are still open shares their entry.
#[derive(Debug, Default)]
pub(super) struct Peers {
    /// By uid: connections open and usage. Locked before `pids`.
    uids: Mutex<HashMap<u32, (usize, Arc<Usage>)>>,
    /// By pid: connections open and usage.
    pids: Mutex<HashMap<i32, (usize, Arc<Usage>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection's share of its peer's entries, released when it closes.
#[derive(Debug)]
pub(super) struct PeerHold {
    peers: Arc<Peers>,
    pid: i32,
    uid: u32,
    pub(super) process: Arc<Usage>,
    pub(super) user: Arc<Usage>,
}

impl PeerHold {
    /// Counts a new connection of `peer`, or returns how many its user has
    /// open if that is already the limit.
    pub(super) fn register(
        peers: &Arc<Peers>,
        limits: PeerLimits,
        peer: &Cred,
    ) -> Result<PeerHold, usize> {
        let mut uids = lock(&peers.uids);
        let entry = uids
            .entry(peer.uid)
            .or_insert_with(|| (0, Usage::new(limits.calls_per_user)));
        if entry.0 >= limits.connections_per_user {
            return Err(entry.0);
        }
        entry.0 += 1;
        let user = entry.1.clone();
        let mut pids = lock(&peers.pids);
        let entry = pids
            .entry(peer.pid)
            .or_insert_with(|| (0, Usage::new(limits.calls_per_process)));
        entry.0 += 1;
        let process = entry.1.clone();
        Ok(PeerHold {
            peers: peers.clone(),
            pid: peer.pid,
            uid: peer.uid,
            process,
            user,
        })
    }
}

impl Drop for PeerHold {
    fn drop(&mut self) {
        let mut uids = lock(&self.peers.uids);
        if let Some(entry) = uids.get_mut(&self.uid) {
            entry.0 -= 1;
            if entry.0 == 0 {
                uids.remove(&self.uid);
            }
        }
        let mut pids = lock(&self.peers.pids);
        if let Some(entry) = pids.get_mut(&self.pid) {
            entry.0 -= 1;
            if entry.0 == 0 {
                pids.remove(&self.pid);
            }
        }
    }
}

/// The call slots a running call holds: one of its connection, of its peer
/// process, of its user and of the server. Always taken in that order, so
/// that waiters never hold slots in a cycle.
#[derive(Debug)]
pub(super) struct Slots {
    _conn: OwnedSemaphorePermit,
    _process: OwnedSemaphorePermit,
    _user: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

/// Every slot a call needs, if all are free now.
pub(super) fn try_slots(
    conn: &Arc<Semaphore>,
    hold: &PeerHold,
    server: &Arc<Semaphore>,
) -> Option<Slots> {
    Some(Slots {
        _conn: conn.clone().try_acquire_owned().ok()?,
        _process: hold.process.calls.clone().try_acquire_owned().ok()?,
        _user: hold.user.calls.clone().try_acquire_owned().ok()?,
        _server: server.clone().try_acquire_owned().ok()?,
    })
}

/// Waits for every slot a call needs. Dropped midway (another event won the
/// select), it releases whatever it had: cancel safe.
pub(super) async fn acquire_slots(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(pid: i32, uid: u32) -> Cred {
        Cred::new(pid, uid, uid, None)
    }

    const LIMITS: PeerLimits = PeerLimits {
        connections_per_user: 2,
        calls_per_user: 3,
        calls_per_process: 1,
    };

    #[test]
    fn a_user_beyond_its_connection_limit_is_refused_until_one_closes() {
        let peers = Arc::new(Peers::default());
        let a = PeerHold::register(&peers, LIMITS, &cred(10, 1000)).unwrap();
        let b = PeerHold::register(&peers, LIMITS, &cred(11, 1000)).unwrap();
        assert_eq!(
            PeerHold::register(&peers, LIMITS, &cred(12, 1000)).unwrap_err(),
            2
        );
        assert!(
            PeerHold::register(&peers, LIMITS, &cred(12, 1001)).is_ok(),
            "another user"
        );
        assert!(Arc::ptr_eq(&a.user, &b.user), "one user, one entry");
        drop(a);
        assert!(PeerHold::register(&peers, LIMITS, &cred(12, 1000)).is_ok());
        drop(b);
    }

    #[test]
    fn entries_go_with_the_last_connection() {
        let peers = Arc::new(Peers::default());
        let a = PeerHold::register(&peers, LIMITS, &cred(10, 1000)).unwrap();
        let b = PeerHold::register(&peers, LIMITS, &cred(10, 1000)).unwrap();
        assert!(Arc::ptr_eq(&a.process, &b.process));
        drop((a, b));
        assert!(lock(&peers.uids).is_empty() && lock(&peers.pids).is_empty());
    }

    #[test]
    fn a_call_needs_a_slot_of_its_process() {
        let peers = Arc::new(Peers::default());
        let hold = PeerHold::register(&peers, LIMITS, &cred(10, 1000)).unwrap();
        let (conn, server) = (Arc::new(Semaphore::new(8)), Arc::new(Semaphore::new(8)));
        let first = try_slots(&conn, &hold, &server).unwrap();
        assert!(
            try_slots(&conn, &hold, &server).is_none(),
            "process limit 1"
        );
        assert_eq!(conn.available_permits(), 7, "a failed try keeps nothing");
        drop(first);
        assert!(try_slots(&conn, &hold, &server).is_some());
    }
}
