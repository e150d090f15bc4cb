//! The write side of an RPC connection: a bounded queue of encoded frames,
//! written by whoever finds the connection idle, else by one writer task.
//!
//! Callers (client calls, server replies) encode their frame straight into a
//! shared buffer under a short lock. A caller that finds nothing queued and
//! nobody writing takes the `writing` token and writes its frame itself with
//! non-blocking writes (then what others queued meanwhile, for a few rounds),
//! outside the lock: an idle connection's frame costs no task switch. What
//! the socket does not take at once, and frames queued while someone holds
//! the token, go to the writer task, which writes everything queued in one
//! vectored syscall: concurrent calls coalesce into few writes. Only the
//! token holder writes, so frames never interleave, and a caller's future
//! being dropped can never leave half a frame on the wire (the inline write
//! is synchronous; its remainder is handed over). Nothing is allocated per
//! frame once the buffers have grown; a connection that queues nothing for
//! a while gives them back (see `IDLE_RELEASE`). Large `data` fields are
//! not copied: they are queued as `Bytes` and written in place. When more
//! than the high-water mark is queued, callers wait: memory stays bounded
//! even if the peer stops reading.

use std::io::{self, IoSlice};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::envelope::EnvelopeRef;
use super::error::{RpcError, SharedError};
use crate::frame::{MAX_HEADER_LEN, encode_header};
use crate::net::WriteHalf;

/// `data` fields at least this large are written from the caller's `Bytes`.
const BIG_DATA: usize = 8 * 1024;
/// Most slices handed to one `writev`.
const MAX_IOV: usize = 64;

/// Why the outbox refuses frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The connection is gone (said why, in words).
    Broken(String),
    /// A write failed with this error; the connection is gone.
    Failed(SharedError),
    /// The outbox was closed on purpose.
    Shutdown,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Broken(e) => write!(f, "write failed: {e}"),
            Closed::Failed(e) => write!(f, "write failed: {e}"),
            Closed::Shutdown => f.write_str("connection is shutting down"),
        }
    }
}

impl Closed {
    /// The error of a call that could not be sent; a write error is its
    /// source.
    pub(crate) fn into_rpc_error(self) -> RpcError {
        let source = match &self {
            Closed::Failed(e) => Some(e.clone()),
            Closed::Broken(_) | Closed::Shutdown => None,
        };
        RpcError::ConnectionClosed {
            reason: self.to_string(),
            source,
        }
    }
}

/// Frames queued for writing: `small` with each `big` payload spliced in at
/// its offset.
#[derive(Debug, Default)]
struct Batch {
    /// Encoded bytes.
    small: Vec<u8>,
    /// Large payloads: (offset in `small` where it goes, bytes).
    big: Vec<(usize, Bytes)>,
    /// Bytes at the front already written.
    skip: usize,
}

impl Batch {
    fn clear(&mut self) {
        self.small.clear();
        self.big.clear();
        self.skip = 0;
    }
}

#[derive(Debug, Default)]
struct Queue {
    /// Frames waiting to be written.
    batch: Batch,
    /// An empty batch with capacity, swapped in when `batch` is taken.
    spare: Batch,
    /// Bytes in `batch` (not counting `skip`).
    queued: usize,
    /// Someone (a caller or the writer task) holds frames it is writing:
    /// nobody else may write until it is done.
    writing: bool,
    /// A caller's batch that the socket did not take at once; the writer
    /// task writes it before anything in `batch`.
    handoff: Option<Batch>,
    closed: Option<Closed>,
    /// Close once everything queued is written.
    finish: bool,
    /// A frame was queued since the writer's idle timer was last set.
    active: bool,
}

/// Who writes a frame queued on an idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// The caller, at once: the least latency for a lone frame.
    Inline,
    /// The writer task, once the tasks ready to run have queued theirs.
    Batched,
}

/// What [`Queue::enqueue`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enqueued {
    /// Over the high-water mark: nothing queued; wait for room.
    Full,
    /// Queued; whoever is writing (a caller, or the writer task woken for
    /// what was queued before) writes it too.
    Queued,
    /// Queued on an idle connection: the caller now holds the `writing`
    /// token and writes it at once.
    WriteNow,
}

/// What a caller that wrote inline does next; see
/// [`Queue::after_inline_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterWrite {
    /// More was queued meanwhile: write another round.
    Again,
    /// The batch was not written through: the writer task has it (and the
    /// token).
    HandedOff,
    /// Nothing left: the token is released. `finishing`: the outbox is
    /// closing, and the writer task waits for the token.
    Released { finishing: bool },
}

impl Queue {
    /// Encodes a frame into the queue if it may be queued: the decision of
    /// a push, made under the lock, with no I/O. `limit` is the high-water
    /// mark (`None`: queue regardless); a frame always fits an empty queue.
    fn enqueue(
        &mut self,
        env: &EnvelopeRef<'_>,
        data: Option<&Bytes>,
        limit: Option<usize>,
    ) -> Result<Enqueued, Closed> {
        if let Some(c) = &self.closed {
            return Err(c.clone());
        }
        if self.finish {
            return Err(Closed::Shutdown);
        }
        let body_len = env.encoded_len();
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let hlen = encode_header(body_len, &mut hdr);
        let total = hlen + body_len;
        if limit.is_some_and(|max| self.queued > 0 && self.queued + total > max) {
            return Ok(Enqueued::Full);
        }
        let was_empty = self.queued == 0;
        self.active = true;
        let b = &mut self.batch;
        b.small.extend_from_slice(&hdr[..hlen]);
        let by_reference = |p: &Bytes| p.len() >= BIG_DATA;
        let head = data.filter(|d| by_reference(d));
        if head.is_none() && !env.more.iter().any(by_reference) {
            env.encode(&mut b.small);
        } else {
            // Large pieces are spliced in where they go, not copied.
            env.encode_prefix(&mut b.small);
            match head {
                Some(d) => b.big.push((b.small.len(), d.clone())),
                None => b.small.extend_from_slice(env.data),
            }
            for piece in env.more {
                if by_reference(piece) {
                    b.big.push((b.small.len(), piece.clone()));
                } else {
                    b.small.extend_from_slice(piece);
                }
            }
            env.encode_suffix(&mut b.small);
        }
        self.queued += total;
        if self.writing || !was_empty {
            return Ok(Enqueued::Queued);
        }
        self.writing = true;
        Ok(Enqueued::WriteNow)
    }

    /// Takes back a batch a caller wrote inline (`done`: all of it, without
    /// error) and decides what it does next.
    fn after_inline_write(&mut self, batch: Batch, done: bool) -> AfterWrite {
        if !done {
            self.handoff = Some(batch);
            return AfterWrite::HandedOff;
        }
        self.recycle(batch);
        if self.queued == 0 || self.closed.is_some() {
            self.writing = false;
            return AfterWrite::Released {
                finishing: self.finish,
            };
        }
        AfterWrite::Again
    }

    /// Takes the queued frames, leaving the spare batch in their place.
    fn take_batch(&mut self) -> Batch {
        let spare = std::mem::take(&mut self.spare);
        self.queued = 0;
        std::mem::replace(&mut self.batch, spare)
    }

    /// Keeps a written batch's buffers for reuse.
    fn recycle(&mut self, mut batch: Batch) {
        batch.clear();
        if self.spare.small.capacity() < batch.small.capacity() {
            self.spare = batch;
        }
    }

    /// Whether the batches hold memory that an idle connection could give
    /// back.
    fn holds_buffers(&self) -> bool {
        self.batch.small.capacity() + self.batch.big.capacity() > 0
            || self.spare.small.capacity() + self.spare.big.capacity() > 0
    }

    /// Gives the batches' buffers back if nothing is queued or being
    /// written (the next frame starts a fresh batch); `false` if it could
    /// not.
    fn release_idle(&mut self) -> bool {
        if self.queued == 0 && !self.writing && self.handoff.is_none() {
            self.batch = Batch::default();
            self.spare = Batch::default();
            return true;
        }
        false
    }
}

#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// The socket's write side. Written by a caller while nothing else is
    /// queued or being written (see [`Outbox::push_if_room`]), else by the
    /// writer task.
    sock: WriteHalf,
    wake_writer: Notify,
    space: Notify,
    high_water: usize,
    /// How long a write may make no progress (and a frame wait for queue
    /// space) before the peer is taken to have stopped reading.
    stall: Duration,
    /// Fired when the outbox breaks: waiters on other signals can stop.
    broken: tokio_util::sync::CancellationToken,
}

/// Rounds a caller that found the connection idle writes what others queued
/// meanwhile, before leaving the rest to the writer task.
const INLINE_ROUNDS: usize = 4;

/// A connection that queues no frame for a whole period of this (so 500 ms
/// to 1 s after its last one) gives its batches' buffers back; see
/// [`DEFAULT_IDLE_RELEASE`](crate::frame::DEFAULT_IDLE_RELEASE).
const IDLE_RELEASE: Duration = crate::frame::DEFAULT_IDLE_RELEASE;

impl Outbox {
    /// An outbox writing to `sock`, whose send buffer it widens. A write
    /// timeout kept on `sock` shorter than `stall` applies instead.
    pub(crate) fn new(sock: WriteHalf, high_water: usize, stall: Duration) -> Self {
        widen_send_buffer(&sock);
        let stall = sock.write_timeout().map_or(stall, |t| t.min(stall));
        Outbox {
            queue: Mutex::new(Queue::default()),
            sock,
            wake_writer: Notify::new(),
            space: Notify::new(),
            high_water,
            stall,
            broken: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Completes once the outbox is broken (the connection is unusable).
    pub(crate) async fn broken(&self) {
        self.broken.cancelled().await;
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The lock is never held across a panic point that leaves the queue
        // inconsistent; recover from poisoning rather than propagate it.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame if there is room (or the queue is empty). `Ok(false)`:
    /// full, try again after `space` is notified.
    ///
    /// The decision is [`Queue::enqueue`], under the lock; when it makes
    /// this caller the writer, [`write_inline`](Self::write_inline) writes
    /// the frame at once.
    fn push_if_room(
        &self,
        env: &EnvelopeRef<'_>,
        data: Option<&Bytes>,
        force: bool,
        when: Write,
    ) -> Result<bool, Closed> {
        let limit = if force { None } else { Some(self.high_water) };
        let mut q = self.lock();
        match q.enqueue(env, data, limit)? {
            Enqueued::Full => Ok(false),
            Enqueued::Queued => Ok(true),
            Enqueued::WriteNow if when == Write::Batched => {
                // More frames are coming: leave this one to the writer
                // task, which takes everything queued by the time it runs.
                q.writing = false;
                drop(q);
                self.wake_writer.notify_one();
                Ok(true)
            }
            Enqueued::WriteNow => {
                self.write_inline(q);
                Ok(true)
            }
        }
    }

    /// Writes what is queued with non-blocking writes, outside the lock,
    /// holding the `writing` token (set by [`Queue::enqueue`]) so that no
    /// other frame can get between its bytes; then whatever others queued
    /// meanwhile, for a few rounds: an idle or lightly loaded connection's
    /// frames go out without waking the writer task. What the socket does
    /// not take at once is handed to the writer task. Synchronous, so a
    /// caller's future being dropped cannot leave half a frame behind.
    fn write_inline<'a>(&'a self, mut q: MutexGuard<'a, Queue>) {
        for round in 0..INLINE_ROUNDS {
            let mut batch = q.take_batch();
            drop(q);
            if round > 0 {
                // Others' frames were taken off the queue: room for more.
                self.space.notify_waiters();
            }
            let mut cursor = Cursor::new(&batch.small, &batch.big, batch.skip);
            // An error other than "would block" stops the inline write; the
            // writer task meets it again and breaks the outbox.
            let failed = write_now(&self.sock, &mut cursor).is_err();
            let done = cursor.done() && !failed;
            batch.skip = cursor.position();
            if done {
                // Release the payloads outside the lock.
                batch.big.clear();
            }
            q = self.lock();
            match q.after_inline_write(batch, done) {
                AfterWrite::Again => {}
                AfterWrite::HandedOff => {
                    drop(q);
                    self.wake_writer.notify_one();
                    return;
                }
                AfterWrite::Released { finishing } => {
                    drop(q);
                    if finishing {
                        // The writer task may be waiting for the token to close.
                        self.wake_writer.notify_one();
                    }
                    return;
                }
            }
        }
        // Others keep queueing: the writer task takes over.
        q.writing = false;
        drop(q);
        self.wake_writer.notify_one();
    }

    /// Queues a frame, waiting while the queue is over its high-water mark.
    /// Pass `data` as `Some` when `env.data` is that `Bytes`, so large
    /// payloads are not copied. If no room appears within the stall time,
    /// the peer has stopped reading: the outbox breaks and this fails.
    pub(crate) async fn push(
        &self,
        env: &EnvelopeRef<'_>,
        data: Option<&Bytes>,
    ) -> Result<(), Closed> {
        self.push_when(env, data, Write::Inline).await
    }

    /// As [`push`](Self::push), for a caller that knows more frames follow
    /// at once (other calls in flight, a stream's next item): the frame is
    /// never written inline, so that the writer task writes many frames
    /// with one `writev` instead of each caller making its own.
    pub(crate) async fn push_batched(
        &self,
        env: &EnvelopeRef<'_>,
        data: Option<&Bytes>,
    ) -> Result<(), Closed> {
        self.push_when(env, data, Write::Batched).await
    }

    async fn push_when(
        &self,
        env: &EnvelopeRef<'_>,
        data: Option<&Bytes>,
        when: Write,
    ) -> Result<(), Closed> {
        // Room, as usual: nothing to set up for waiting (that takes locks).
        if self.push_if_room(env, data, false, when)? {
            return Ok(());
        }
        loop {
            // Registered before looking again, so that room made in between
            // is not missed.
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if self.push_if_room(env, data, false, when)? {
                return Ok(());
            }
            if tokio::time::timeout(self.stall, space).await.is_err() {
                self.break_with("the peer stopped reading (write queue full)");
            }
        }
    }

    /// As [`push`](Self::push) (or [`push_batched`](Self::push_batched) if
    /// `batched`), without waiting: `Ok(false)` if the queue is over its
    /// high-water mark (nothing was queued).
    pub(crate) fn try_push(
        &self,
        env: &EnvelopeRef<'_>,
        data: Option<&Bytes>,
        batched: bool,
    ) -> Result<bool, Closed> {
        let when = if batched {
            Write::Batched
        } else {
            Write::Inline
        };
        self.push_if_room(env, data, false, when)
    }

    /// Queues a small control frame at once, ignoring the high-water mark
    /// (for cancellations sent from `Drop`).
    pub(crate) fn push_now(&self, env: &EnvelopeRef<'_>) -> Result<(), Closed> {
        self.push_if_room(env, None, true, Write::Inline).map(drop)
    }

    /// Stops accepting frames; the writer finishes what is queued, shuts the
    /// write side down and exits.
    pub(crate) fn finish(&self) {
        self.lock().finish = true;
        self.wake_writer.notify_one();
        self.space.notify_waiters();
    }

    /// Marks the outbox broken (e.g. the reader saw the connection die).
    pub(crate) fn break_with(&self, why: &str) {
        self.break_as(Closed::Broken(why.to_owned()));
    }

    /// Marks the outbox broken by a write error, kept as the source of the
    /// errors of calls that could not be sent.
    fn break_by(&self, err: io::Error) {
        self.break_as(Closed::Failed(SharedError::new(err)));
    }

    fn break_as(&self, closed: Closed) {
        let mut q = self.lock();
        if q.closed.is_none() {
            q.closed = Some(closed);
        }
        drop(q);
        self.broken.cancel();
        self.wake_writer.notify_one();
        self.space.notify_waiters();
    }

    /// The writer task body: writes queued frames until finished or broken,
    /// then shuts the socket's write side down — also if the task is
    /// aborted, so the peer sees end-of-stream even while a handler's
    /// `Context` keeps the connection state alive.
    pub(crate) async fn run_writer(&self) {
        struct ShutdownOnDrop<'a>(&'a WriteHalf);
        impl Drop for ShutdownOnDrop<'_> {
            fn drop(&mut self) {
                let _ = self.0.shutdown_write();
            }
        }
        let _shutdown = ShutdownOnDrop(&self.sock);
        self.write_queued().await;
    }

    async fn write_queued(&self) {
        // One timer for the connection's life, reset at most once a period:
        // a period with no frame queued gives the batches' buffers back.
        let idle = tokio::time::sleep(IDLE_RELEASE);
        tokio::pin!(idle);
        loop {
            let next = {
                let mut q = self.lock();
                if q.closed.is_some() {
                    Next::Stop
                } else if let Some(batch) = q.handoff.take() {
                    // A caller's unfinished write: `writing` is still set.
                    Next::Write(batch, false)
                } else if q.writing {
                    // A caller is writing; it hands over or clears the token.
                    Next::Wait(false)
                } else if q.queued > 0 {
                    q.writing = true;
                    Next::Write(q.take_batch(), true)
                } else if q.finish {
                    q.closed = Some(Closed::Shutdown);
                    Next::Stop
                } else {
                    Next::Wait(q.holds_buffers())
                }
            };
            let (mut batch, took_queued) = match next {
                Next::Write(batch, took_queued) => (batch, took_queued),
                Next::Wait(false) => {
                    self.wake_writer.notified().await;
                    // Let the tasks ready to run queue their frames first:
                    // one `writev` then takes them all.
                    tokio::task::yield_now().await;
                    continue;
                }
                Next::Wait(true) => {
                    tokio::select! {
                        biased;
                        () = self.wake_writer.notified() => {
                            tokio::task::yield_now().await;
                        }
                        () = &mut idle => {
                            let mut q = self.lock();
                            // Frames queued this period: not idle.
                            let busy = std::mem::take(&mut q.active);
                            if busy || !q.release_idle() {
                                drop(q);
                                idle.as_mut().reset(tokio::time::Instant::now() + IDLE_RELEASE);
                            }
                        }
                    }
                    continue;
                }
                Next::Stop => return,
            };
            if took_queued {
                self.space.notify_waiters();
            }
            let cursor = Cursor::new(&batch.small, &batch.big, batch.skip);
            let written = tokio::select! {
                r = write_all(&self.sock, cursor, self.stall) => r,
                () = self.broken.cancelled() => return,
            };
            if let Err(e) = written {
                tracing::debug!(%e, "rpc connection write failed");
                self.break_by(e);
                return;
            }
            // Release the payloads outside the lock.
            batch.big.clear();
            let mut q = self.lock();
            q.writing = false;
            q.recycle(batch);
        }
    }
}

/// Asks for [`SEND_BUFFER`](super::defaults::SEND_BUFFER) on an RPC
/// connection; failure only costs throughput, so it is logged.
fn widen_send_buffer(sock: &WriteHalf) {
    if let Err(e) = sock.set_send_buffer(super::defaults::SEND_BUFFER) {
        tracing::debug!(%e, "could not widen the socket's send buffer");
    }
}

/// What the writer does next.
enum Next {
    /// Write this batch; `true` if it was taken off the queue (room freed).
    Write(Batch, bool),
    /// Wait to be woken; `true` if there are buffers to give back should
    /// the connection stay idle.
    Wait(bool),
    Stop,
}

/// A position in queued bytes: `small` with each `big` payload spliced in at
/// its offset. Segment i: even = a piece of `small`, odd = a big payload.
struct Cursor<'a> {
    small: &'a [u8],
    big: &'a [(usize, Bytes)],
    /// Current segment, and offset in it.
    seg: usize,
    off: usize,
    /// Bytes passed since the start.
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor `skip` bytes in.
    fn new(small: &'a [u8], big: &'a [(usize, Bytes)], skip: usize) -> Self {
        let mut c = Cursor {
            small,
            big,
            seg: 0,
            off: 0,
            pos: 0,
        };
        c.advance(skip);
        c
    }

    fn segments(&self) -> usize {
        2 * self.big.len() + 1
    }

    fn segment(&self, i: usize) -> &'a [u8] {
        let k = i / 2;
        if i % 2 == 1 {
            return &self.big[k].1;
        }
        let start = if k == 0 { 0 } else { self.big[k - 1].0 };
        let end = self.big.get(k).map_or(self.small.len(), |b| b.0);
        &self.small[start..end]
    }

    fn done(&self) -> bool {
        self.seg >= self.segments()
    }

    fn position(&self) -> usize {
        self.pos
    }

    /// Fills `iov` with the slices ahead; returns how many.
    fn fill(&self, iov: &mut [IoSlice<'a>; MAX_IOV]) -> usize {
        let mut n = 0;
        let mut off = self.off;
        for i in self.seg..self.segments() {
            if n == MAX_IOV {
                break;
            }
            let s = &self.segment(i)[off..];
            off = 0;
            if !s.is_empty() {
                iov[n] = IoSlice::new(s);
                n += 1;
            }
        }
        n
    }

    /// Moves `n` bytes on, past any segments left empty.
    fn advance(&mut self, mut n: usize) {
        self.pos += n;
        while self.seg < self.segments() {
            let left = self.segment(self.seg).len() - self.off;
            if n < left {
                self.off += n;
                return;
            }
            n -= left;
            self.seg += 1;
            self.off = 0;
        }
    }
}

/// Writes what the socket takes without waiting.
fn write_now(sock: &WriteHalf, c: &mut Cursor<'_>) -> io::Result<()> {
    while !c.done() {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let n_iov = c.fill(&mut iov);
        match sock.try_write_vectored(&iov[..n_iov]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes everything from the cursor on, failing if no byte can be written
/// for `no_progress_limit`.
async fn write_all(
    sock: &WriteHalf,
    mut c: Cursor<'_>,
    no_progress_limit: Duration,
) -> io::Result<()> {
    while !c.done() {
        write_now(sock, &mut c)?;
        if c.done() {
            break;
        }
        tokio::time::timeout(no_progress_limit, sock.writable())
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no write progress for {no_progress_limit:?}: the peer stopped reading"
                    ),
                )
            })??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(data: &[u8]) -> EnvelopeRef<'_> {
        EnvelopeRef {
            id: 1,
            data,
            ..EnvelopeRef::default()
        }
    }

    /// Bytes a frame of `env` takes in the queue, header included.
    fn framed(env: &EnvelopeRef<'_>) -> usize {
        let mut hdr = [0u8; MAX_HEADER_LEN];
        encode_header(env.encoded_len(), &mut hdr) + env.encoded_len()
    }

    #[test]
    fn the_first_frame_on_an_idle_connection_is_written_by_its_caller() {
        let mut q = Queue::default();
        let e = env(b"hello");
        assert_eq!(q.enqueue(&e, None, Some(1)).unwrap(), Enqueued::WriteNow);
        assert!(q.writing && q.active);
        assert_eq!(
            q.queued,
            framed(&e),
            "over the mark, but the queue was empty"
        );
        // The token is taken: the next frame is only queued.
        assert_eq!(q.enqueue(&e, None, None).unwrap(), Enqueued::Queued);
        assert_eq!(q.queued, 2 * framed(&e));
    }

    #[test]
    fn a_frame_over_the_high_water_mark_waits_unless_forced() {
        let mut q = Queue::default();
        let e = env(&[7; 100]);
        let one = framed(&e);
        assert_eq!(q.enqueue(&e, None, Some(one)).unwrap(), Enqueued::WriteNow);
        assert_eq!(q.enqueue(&e, None, Some(one)).unwrap(), Enqueued::Full);
        assert_eq!(q.queued, one, "a full push queues nothing");
        assert_eq!(q.enqueue(&e, None, None).unwrap(), Enqueued::Queued);
        assert_eq!(q.queued, 2 * one);
    }

    #[test]
    fn frames_queued_behind_others_leave_the_writing_to_whoever_writes() {
        let mut q = Queue::default();
        let e = env(b"x");
        q.enqueue(&e, None, None).unwrap();
        q.writing = false; // as if the writer task took the token back
        assert_eq!(q.enqueue(&e, None, None).unwrap(), Enqueued::Queued);
        assert!(!q.writing, "the writer task was woken for the first frame");
    }

    #[test]
    fn a_closed_or_finishing_queue_refuses_frames() {
        let mut q = Queue {
            finish: true,
            ..Queue::default()
        };
        assert_eq!(q.enqueue(&env(b"x"), None, None), Err(Closed::Shutdown));
        q.closed = Some(Closed::Broken("gone".into()));
        assert_eq!(
            q.enqueue(&env(b"x"), None, None),
            Err(Closed::Broken("gone".into()))
        );
        assert_eq!(q.queued, 0);
    }

    #[test]
    fn large_data_is_queued_by_reference_not_copied() {
        let mut q = Queue::default();
        let big = Bytes::from(vec![3u8; BIG_DATA]);
        let e = env(&big);
        q.enqueue(&e, Some(&big), None).unwrap();
        assert_eq!(q.batch.big.len(), 1);
        assert_eq!(q.batch.big[0].1.as_ptr(), big.as_ptr());
        assert_eq!(q.batch.small.len() + big.len(), framed(&e));
        let small = Bytes::from_static(b"small");
        q.enqueue(&env(&small), Some(&small), None).unwrap();
        assert_eq!(q.batch.big.len(), 1, "small data is copied");
    }

    #[test]
    fn after_an_inline_write_the_caller_goes_on_hands_off_or_lets_go() {
        let mut q = Queue::default();
        let e = env(b"x");
        q.enqueue(&e, None, None).unwrap();
        let batch = q.take_batch();
        assert_eq!(
            q.after_inline_write(batch, true),
            AfterWrite::Released { finishing: false }
        );
        assert!(!q.writing);

        q.enqueue(&e, None, None).unwrap();
        let batch = q.take_batch();
        q.enqueue(&e, None, None).unwrap(); // queued meanwhile
        assert_eq!(q.after_inline_write(batch, true), AfterWrite::Again);
        let batch = q.take_batch();
        assert_eq!(q.after_inline_write(batch, false), AfterWrite::HandedOff);
        assert!(
            q.writing && q.handoff.is_some(),
            "the writer task holds it now"
        );
    }

    #[test]
    fn payload_pieces_are_spliced_by_reference_in_order() {
        let mut q = Queue::default();
        let head = Bytes::from(vec![1u8; 3]);
        let big = Bytes::from(vec![2u8; BIG_DATA]);
        let tail = Bytes::from(vec![3u8; 2]);
        let more = [big.clone(), tail];
        let e = EnvelopeRef {
            id: 5,
            data: &head,
            more: &more,
            ..EnvelopeRef::default()
        };
        q.enqueue(&e, Some(&head), None).unwrap();
        let batch = q.take_batch();
        assert_eq!(batch.big.len(), 1, "only the large piece by reference");
        assert_eq!(batch.big[0].1.as_ptr(), big.as_ptr());
        let mut cursor = Cursor::new(&batch.small, &batch.big, 0);
        let mut out = Vec::new();
        while !cursor.done() {
            let seg = cursor.segment(cursor.seg);
            out.extend_from_slice(&seg[cursor.off..]);
            let n = seg.len() - cursor.off;
            cursor.advance(n.max(1).min(seg.len() - cursor.off));
            if n == 0 {
                cursor.seg += 1;
                cursor.off = 0;
            }
        }
        let mut want = Vec::new();
        e.encode(&mut want);
        assert_eq!(&out[out.len() - want.len()..], &want[..]);
    }
}
