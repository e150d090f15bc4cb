//! The calls running on one connection: their abort handles, cancellation
//! signals and stream credit, and the "no call left" signal a draining
//! connection waits for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::AbortHandle;

use crate::rpc::cancel::Cancellation;
use crate::rpc::defaults::MAX_STREAM_CREDIT;

/// A connection's table of calls in flight, by call id.
#[derive(Debug, Default)]
pub(super) struct InFlightCalls {
    table: Mutex<Table>,
    /// Notified when the last call in flight ends.
    drained: Notify,
}

#[derive(Debug, Default)]
struct Table {
    calls: HashMap<u32, Entry>,
    /// Tells a call from a later one that reuses its id.
    seq: u64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    abort: Option<AbortHandle>,
    cancellation: Option<Cancellation>,
    /// For a stream: items the client is ready for.
    credits: Option<Arc<Semaphore>>,
    /// For a client stream: where its items go (`None` once the client
    /// has ended them). Bounded by the credit the server grants.
    items: Option<mpsc::Sender<Bytes>>,
}

/// What became of an item a client streamed; see [`InFlightCalls::push_item`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemOutcome {
    /// Handed to the call.
    Delivered,
    /// No such call running (it has ended, or never was): dropped.
    NoCall,
    /// The call takes no items, has ended them, or has no credit left for
    /// this one: the client broke the protocol.
    Refused,
}

impl Entry {
    fn cancel(self) {
        if let Some(a) = self.abort {
            a.abort();
        }
        if let Some(c) = self.cancellation {
            c.fire();
        }
    }
}

/// Which registration of a call id: see [`InFlightCalls::insert`].
pub(super) type Seq = u64;

impl InFlightCalls {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Never held across a point that could leave the table half
        // updated: recover from poisoning rather than propagate it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call with this id is running.
    pub(super) fn contains(&self, id: u32) -> bool {
        self.lock().calls.contains_key(&id)
    }

    /// Whether a running call still waits for items from the client (so
    /// the connection must go on being read for them).
    pub(super) fn taking_items(&self) -> bool {
        self.lock().calls.values().any(|e| e.items.is_some())
    }

    /// Whether more than one call is running (so more replies follow).
    pub(super) fn busy(&self) -> bool {
        self.lock().calls.len() > 1
    }

    /// Whether no call is running.
    pub(super) fn is_idle(&self) -> bool {
        self.lock().calls.is_empty()
    }

    /// Registers a call about to start (the caller checked that the id is
    /// free), with its stream credit if it is a stream and the sender of
    /// its items if it takes them.
    pub(super) fn insert(
        &self,
        id: u32,
        credits: Option<Arc<Semaphore>>,
        items: Option<mpsc::Sender<Bytes>>,
    ) -> Seq {
        let mut t = self.lock();
        t.seq += 1;
        let seq = t.seq;
        t.calls.insert(
            id,
            Entry {
                seq,
                abort: None,
                cancellation: None,
                credits,
                items,
            },
        );
        seq
    }

    /// Gives the call its task's abort handle, unless it has already ended
    /// (its id may then be another call's).
    pub(super) fn set_abort(&self, id: u32, seq: Seq, abort: AbortHandle) {
        if let Some(entry) = self.lock().calls.get_mut(&id)
            && entry.seq == seq
        {
            entry.abort = Some(abort);
        }
    }

    /// Forgets a call that ended by itself: fires its cancellation (work
    /// watching it stops too) and wakes drain waiters if it was the last.
    pub(super) fn finished(&self, id: u32, seq: Seq) {
        let (now_idle, cancellation) = {
            let mut t = self.lock();
            let mut cancellation = None;
            if t.calls.get(&id).is_some_and(|e| e.seq == seq) {
                cancellation = t.calls.remove(&id).and_then(|e| e.cancellation);
            }
            (t.calls.is_empty(), cancellation)
        };
        if let Some(c) = cancellation {
            c.fire();
        }
        if now_idle {
            self.drained.notify_waiters();
        }
    }

    /// The call's cancellation signal, created on first use; an already
    /// fired one if the call is over.
    pub(super) fn cancellation(&self, id: u32) -> Cancellation {
        if let Some(entry) = self.lock().calls.get_mut(&id) {
            return entry
                .cancellation
                .get_or_insert_with(Cancellation::new)
                .clone();
        }
        Cancellation::fired()
    }

    /// Adds stream credit from the client, capped so that a hostile grant
    /// can neither overflow the semaphore nor mean "unlimited".
    pub(super) fn grant(&self, id: u32, credit: u32) {
        let t = self.lock();
        if let Some(credits) = t.calls.get(&id).and_then(|e| e.credits.as_ref()) {
            let max = MAX_STREAM_CREDIT as usize;
            let room = max.saturating_sub(credits.available_permits());
            credits.add_permits((credit as usize).min(room));
        }
    }

    /// Hands an item the client streamed to its call.
    pub(super) fn push_item(&self, id: u32, item: Bytes) -> ItemOutcome {
        let t = self.lock();
        let Some(entry) = t.calls.get(&id) else {
            return ItemOutcome::NoCall;
        };
        match entry.items.as_ref().map(|tx| tx.try_send(item)) {
            Some(Ok(())) => ItemOutcome::Delivered,
            // The handler dropped its items: it wants no more, and the call
            // ends with its reply. Not the client's fault.
            Some(Err(mpsc::error::TrySendError::Closed(_))) => ItemOutcome::NoCall,
            // Full: more items than the credit granted; or no items taken.
            Some(Err(mpsc::error::TrySendError::Full(_))) | None => ItemOutcome::Refused,
        }
    }

    /// The client has sent its last item for call `id`: the handler's items
    /// end once it has taken those queued. Whether the call takes items and
    /// had not ended them (else the client broke the protocol, or the call
    /// is over).
    pub(super) fn end_items(&self, id: u32) -> ItemOutcome {
        let mut t = self.lock();
        let Some(entry) = t.calls.get_mut(&id) else {
            return ItemOutcome::NoCall;
        };
        match entry.items.take() {
            Some(_) => ItemOutcome::Delivered,
            None => ItemOutcome::Refused,
        }
    }

    /// Stops the call with this id; whether there was one.
    pub(super) fn cancel(&self, id: u32) -> bool {
        let entry = self.lock().calls.remove(&id);
        let Some(entry) = entry else {
            return false;
        };
        entry.cancel();
        if self.is_idle() {
            self.drained.notify_waiters();
        }
        true
    }

    /// Stops every call still waiting for items from the client (which can
    /// no longer come: the connection is not read any more); their ids.
    pub(super) fn cancel_taking_items(&self) -> Vec<u32> {
        let taken: Vec<(u32, Entry)> = {
            let mut t = self.lock();
            let ids: Vec<u32> = t
                .calls
                .iter()
                .filter(|(_, e)| e.items.is_some())
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| t.calls.remove(&id).map(|e| (id, e)))
                .collect()
        };
        let ids = taken.iter().map(|(id, _)| *id).collect();
        for (_, e) in taken {
            e.cancel();
        }
        if self.is_idle() {
            self.drained.notify_waiters();
        }
        ids
    }

    /// Stops every call; how many there were.
    pub(super) fn cancel_all(&self) -> u64 {
        let all: Vec<Entry> = self.lock().calls.drain().map(|(_, v)| v).collect();
        let n = all.len() as u64;
        for e in all {
            e.cancel();
        }
        self.drained.notify_waiters();
        n
    }

    /// Waits until no call is in flight.
    ///
    /// Cancel safe: it only waits.
    pub(super) async fn wait_drained(&self) {
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
}

/// What a handler's [`Context`](crate::rpc::Context) holds of its call: the
/// way to its cancellation signal, and nothing else of the connection.
#[derive(Debug, Clone)]
pub(crate) struct CallHandle {
    calls: Arc<InFlightCalls>,
    id: u32,
}

impl CallHandle {
    pub(super) fn new(calls: Arc<InFlightCalls>, id: u32) -> Self {
        CallHandle { calls, id }
    }

    /// The call id.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// See [`InFlightCalls::cancellation`].
    pub(crate) fn cancellation(&self) -> Cancellation {
        self.calls.cancellation(self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_call_fires_its_cancellation_and_frees_its_id() {
        let calls = Arc::new(InFlightCalls::default());
        let seq = calls.insert(7, None, None);
        let handle = CallHandle::new(calls.clone(), 7);
        let c = handle.cancellation();
        assert!(calls.contains(7) && !c.is_cancelled());
        calls.finished(7, seq);
        assert!(c.is_cancelled());
        assert!(calls.is_idle());
        assert!(handle.cancellation().is_cancelled(), "over: fired");
    }

    #[test]
    fn a_stale_finish_leaves_a_later_call_with_the_same_id_alone() {
        let calls = InFlightCalls::default();
        let old = calls.insert(7, None, None);
        assert!(calls.cancel(7));
        let new = calls.insert(7, None, None);
        assert_ne!(old, new);
        calls.finished(7, old);
        assert!(calls.contains(7), "the newer call was removed");
        calls.finished(7, new);
        assert!(!calls.contains(7));
    }

    #[test]
    fn cancel_fires_the_signal_and_reports_unknown_ids() {
        let calls = InFlightCalls::default();
        calls.insert(1, None, None);
        calls.insert(2, None, None);
        let c = calls.cancellation(1);
        assert!(!calls.cancel(3));
        assert!(calls.cancel(1));
        assert!(c.is_cancelled());
        assert!(!calls.cancel(1), "already gone");
        assert_eq!(calls.cancel_all(), 1);
        assert!(calls.is_idle());
    }

    #[test]
    fn grants_are_capped_at_the_most_credit_a_client_may_hold() {
        let calls = InFlightCalls::default();
        let credits = Arc::new(Semaphore::new(16));
        calls.insert(5, Some(credits.clone()), None);
        calls.grant(5, u32::MAX);
        assert_eq!(credits.available_permits(), MAX_STREAM_CREDIT as usize);
        calls.grant(5, 10);
        assert_eq!(credits.available_permits(), MAX_STREAM_CREDIT as usize);
        calls.grant(6, 10); // no such call: nothing happens
    }

    #[tokio::test]
    async fn wait_drained_returns_when_the_last_call_ends() {
        let calls = Arc::new(InFlightCalls::default());
        calls.wait_drained().await; // idle: at once
        let seq = calls.insert(1, None, None);
        let waiter = tokio::spawn({
            let calls = calls.clone();
            async move { calls.wait_drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        calls.finished(1, seq);
        waiter.await.unwrap();
    }
}
