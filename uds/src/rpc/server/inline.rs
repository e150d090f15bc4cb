//! Running a unary handler on the spot: the connection's reader polls a new
//! call's handler once, in place, before it gives the call a task of its
//! own.
//!
//! The dispatcher tries it only for a call that is its connection's only
//! work (no other call running, no other request read): under load, tasks
//! spread the handlers over the runtime's workers while the reader reads on.
//!
//! A handler that is ready at once (an echo, a lookup in memory, most small
//! calls) then costs no task, no allocation and no hop between tasks: the
//! reader queues its reply itself. A handler that waits goes on in a task
//! from where it stopped.
//!
//! Two guards keep a handler from holding the reader, and with it every
//! other call of its connection: one whose first poll waited is given a
//! task at once for its next few calls (more after each further wait); one
//! whose first poll ran long (CPU-bound work that never awaits) is given a
//! task for every later call. So such a handler holds its connection's
//! reading once at most.
//!
//! The future is polled inside a heap slot kept for reuse (a pinned
//! `Box<Option<Fut>>`): a future that waits cannot move once polled, so it
//! must be polled where its task will keep it. Slots of ready calls go back
//! to a small per-handler pool, so the steady state allocates nothing.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::rpc::error::HandlerError;

/// A first poll longer than this marks the handler as CPU-bound.
const SLOW_POLL: Duration = Duration::from_micros(200);
/// Calls spawned straight away after a first poll waited (doubled for each
/// further wait, up to [`MAX_SKIP`]).
const MIN_SKIP: u32 = 8;
/// The most calls spawned straight away after repeated waits.
const MAX_SKIP: u32 = 1024;
/// Slots kept for reuse per handler (about one per connection polling it at
/// the same moment).
const MAX_SPARES: usize = 8;

/// A pinned heap slot a handler's future is polled in.
type Slot<Fut> = Pin<Box<Option<Fut>>>;

/// Per-handler state of on-the-spot polling: when to try it, and the slots
/// kept for reuse.
pub(super) struct Inline<Fut> {
    /// Calls still to spawn straight away before trying again.
    skip: AtomicU32,
    /// The current back-off after waits; 0 after a call that was ready.
    backoff: AtomicU32,
    /// A first poll ran long: never again on the spot.
    slow: AtomicBool,
    spares: Mutex<Vec<Slot<Fut>>>,
}

impl<Fut> Default for Inline<Fut> {
    fn default() -> Self {
        Inline {
            skip: AtomicU32::new(0),
            backoff: AtomicU32::new(0),
            slow: AtomicBool::new(false),
            spares: Mutex::new(Vec::new()),
        }
    }
}

/// What one poll on the spot made of a call.
pub(super) enum Polled<Fut: Future> {
    /// The handler finished.
    Ready(Fut::Output),
    /// It waits: finish it in a task.
    Pending(Resume<Fut>),
    /// It panicked (its future is dropped).
    Panicked,
}

impl<Fut: Future> Inline<Fut> {
    /// Whether this call should be polled on the spot (else spawned at once).
    /// The counter is shared by every connection; a lost update between two
    /// of them only shifts the next try by a call.
    pub(super) fn should_try(&self) -> bool {
        if self.slow.load(Ordering::Relaxed) {
            return false;
        }
        let skip = self.skip.load(Ordering::Relaxed);
        if skip == 0 {
            return true;
        }
        self.skip.store(skip - 1, Ordering::Relaxed);
        false
    }

    /// Polls `fut` once, in a slot from the pool, with the reader's `cx`. A
    /// future that waits keeps its slot and has the reader's waker until its
    /// task polls it again (a spurious wake-up at most).
    pub(super) fn poll_once(&self, fut: Fut, cx: &mut Context<'_>) -> Polled<Fut> {
        let mut slot = self.take_slot();
        slot.set(Some(fut));
        let began = std::time::Instant::now();
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            slot.as_mut().as_pin_mut().map(|f| f.poll(cx))
        }));
        let took = began.elapsed();
        match polled {
            Ok(Some(Poll::Ready(out))) => {
                let ran_long = took > SLOW_POLL;
                if ran_long {
                    // The slots are of no more use.
                    self.slow.store(true, Ordering::Relaxed);
                    self.spares
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clear();
                } else {
                    self.backoff.store(0, Ordering::Relaxed);
                }
                // A completed future's drop may still run user code.
                let dropped = std::panic::catch_unwind(AssertUnwindSafe(|| slot.set(None)));
                if dropped.is_ok() && !ran_long {
                    self.put_back(slot);
                }
                Polled::Ready(out)
            }
            Ok(_) => {
                if took > SLOW_POLL {
                    // Computed long, then waited: never again on the spot.
                    self.slow.store(true, Ordering::Relaxed);
                }
                let backoff = self
                    .backoff
                    .load(Ordering::Relaxed)
                    .saturating_mul(2)
                    .clamp(MIN_SKIP, MAX_SKIP);
                self.backoff.store(backoff, Ordering::Relaxed);
                self.skip.store(backoff, Ordering::Relaxed);
                Polled::Pending(Resume(slot))
            }
            Err(_) => {
                // Dropping a future that panicked may panic again.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(slot)));
                Polled::Panicked
            }
        }
    }

    fn take_slot(&self) -> Slot<Fut> {
        self.spares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| Box::pin(None))
    }

    fn put_back(&self, slot: Slot<Fut>) {
        let mut spares = self.spares.lock().unwrap_or_else(PoisonError::into_inner);
        if spares.len() < MAX_SPARES {
            spares.push(slot);
        }
    }
}

/// A handler's future that waited on its first poll, to be finished where
/// it is (in its slot) by a task.
pub(super) struct Resume<Fut>(Slot<Fut>);

impl<O, Fut: Future<Output = Result<O, HandlerError>>> Future for Resume<Fut> {
    type Output = Fut::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut().0.as_mut().as_pin_mut() {
            Some(fut) => fut.poll(cx),
            // Never so: a `Resume` is made only of a slot holding a future.
            None => Poll::Ready(Err(HandlerError::server("the handler's future was lost"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_with_noop<Fut: Future>(inline: &Inline<Fut>, fut: Fut) -> Polled<Fut> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        inline.poll_once(fut, &mut cx)
    }

    /// A ready future reuses its slot; one that waits backs the handler off
    /// (more after each further wait) and resumes where it stopped.
    #[tokio::test]
    async fn ready_calls_reuse_slots_and_waiting_ones_back_off() {
        type Fut = Pin<Box<dyn Future<Output = Result<u32, HandlerError>> + Send>>;
        let inline: Inline<Fut> = Inline::default();
        for _ in 0..3 {
            assert!(inline.should_try());
            let polled = poll_with_noop(&inline, Box::pin(async { Ok(7) }));
            assert!(matches!(polled, Polled::Ready(Ok(7))));
        }
        assert_eq!(inline.spares.lock().unwrap().len(), 1, "one slot, reused");

        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let waits: Fut = Box::pin(async move { rx.await.map_err(|_| HandlerError::server("x")) });
        let Polled::Pending(rest) = poll_with_noop(&inline, waits) else {
            panic!("the future waits for the channel");
        };
        let skipped = (0..100).take_while(|_| !inline.should_try()).count();
        assert_eq!(skipped, MIN_SKIP as usize);
        tx.send(9).unwrap();
        assert_eq!(rest.await.unwrap(), 9);

        // A second wait in a row backs off twice as long.
        let Polled::Pending(_) = poll_with_noop(&inline, Box::pin(std::future::pending())) else {
            panic!("pending");
        };
        let skipped = (0..100).take_while(|_| !inline.should_try()).count();
        assert_eq!(skipped, 2 * MIN_SKIP as usize);
    }

    /// A panic in the poll is caught and reported; after a long first poll
    /// every later call is spawned.
    #[test]
    fn panics_are_caught_and_slow_polls_back_off_long() {
        type Fut = Pin<Box<dyn Future<Output = Result<u32, HandlerError>> + Send>>;
        let inline: Inline<Fut> = Inline::default();
        let panics: Fut = Box::pin(async { panic!("in the handler") });
        assert!(matches!(poll_with_noop(&inline, panics), Polled::Panicked));
        assert!(inline.should_try(), "a panic is not a reason to back off");

        let slow: Fut = Box::pin(async {
            std::thread::sleep(SLOW_POLL * 2);
            Ok(1)
        });
        assert!(matches!(
            poll_with_noop(&inline, slow),
            Polled::Ready(Ok(1))
        ));
        assert!((0..10_000).all(|_| !inline.should_try()));

        // Computing long and then waiting counts as long too.
        let inline: Inline<Fut> = Inline::default();
        let then_waits: Fut = Box::pin(async {
            std::thread::sleep(SLOW_POLL * 2);
            std::future::pending::<()>().await;
            Ok(1)
        });
        assert!(matches!(
            poll_with_noop(&inline, then_waits),
            Polled::Pending(_)
        ));
        assert!((0..10_000).all(|_| !inline.should_try()));
    }
}
