//! The write side of an RPC connection: a bounded queue of encoded frames and
//! the one task that writes them.
//!
//! Callers (client calls, server replies) encode their frame straight into a
//! shared buffer under a short lock and wake the writer task; the writer swaps
//! the buffer out and writes everything queued in one (vectored) syscall. So
//! concurrent calls coalesce into few writes, nothing is allocated per frame
//! once the buffers have grown, and a caller's future being dropped can never
//! leave half a frame on the wire (only the writer writes). Large `data`
//! fields are not copied: they are queued as `Bytes` and written in place.
//! When more than the high-water mark is queued, callers wait: memory stays
//! bounded even if the peer stops reading.

use std::io::{self, IoSlice};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::envelope::EnvelopeRef;
use crate::frame::{MAX_HEADER_LEN, encode_header};

/// `data` fields at least this large are written from the caller's `Bytes`.
const BIG_DATA: usize = 16 * 1024;
/// Most slices handed to one `writev`.
const MAX_IOV: usize = 64;

/// Why the outbox refuses frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The writer failed; the connection is gone.
    Broken(String),
    /// The outbox was closed on purpose.
    Shutdown,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Broken(e) => write!(f, "write failed: {e}"),
            Closed::Shutdown => f.write_str("connection is shutting down"),
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    /// Encoded bytes, with `big` payloads spliced in at their offsets.
    small: Vec<u8>,
    /// Large payloads: (offset in `small` where it goes, bytes).
    big: Vec<(usize, Bytes)>,
    queued: usize,
    closed: Option<Closed>,
    /// Close once everything queued is written.
    finish: bool,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    wake_writer: Notify,
    space: Notify,
    high_water: usize,
    /// How long a write may make no progress (and a frame wait for queue
    /// space) before the peer is taken to have stopped reading.
    stall: Duration,
    /// Fired when the outbox breaks: waiters on other signals can stop.
    broken: tokio_util::sync::CancellationToken,
}

/// Default time a connection's writes may make no progress before the peer
/// is taken to have stopped reading and the connection is broken: 30 s.
pub const DEFAULT_WRITE_STALL: Duration = Duration::from_secs(30);

impl Outbox {
    pub(crate) fn new(high_water: usize, stall: Duration) -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
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
    fn try_push(
        &self,
        env: &EnvelopeRef<'_>,
        data: Option<&Bytes>,
        force: bool,
    ) -> Result<bool, Closed> {
        let body_len = env.encoded_len();
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let hlen = encode_header(body_len, &mut hdr);
        let total = hlen + body_len;
        let mut q = self.lock();
        if let Some(c) = &q.closed {
            return Err(c.clone());
        }
        if q.finish {
            return Err(Closed::Shutdown);
        }
        if !force && q.queued > 0 && q.queued + total > self.high_water {
            return Ok(false);
        }
        let was_empty = q.queued == 0;
        q.small.extend_from_slice(&hdr[..hlen]);
        match data {
            Some(big) if big.len() >= BIG_DATA => {
                env.encode_prefix(&mut q.small);
                let at = q.small.len();
                q.big.push((at, big.clone()));
                env.encode_suffix(&mut q.small);
            }
            _ => env.encode(&mut q.small),
        }
        q.queued += total;
        drop(q);
        if was_empty {
            self.wake_writer.notify_one();
        }
        Ok(true)
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
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if self.try_push(env, data, false)? {
                return Ok(());
            }
            if tokio::time::timeout(self.stall, space).await.is_err() {
                self.break_with("the peer stopped reading (write queue full)");
            }
        }
    }

    /// Queues a small control frame at once, ignoring the high-water mark
    /// (for cancellations sent from `Drop`).
    pub(crate) fn push_now(&self, env: &EnvelopeRef<'_>) -> Result<(), Closed> {
        self.try_push(env, None, true).map(drop)
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
        let mut q = self.lock();
        if q.closed.is_none() {
            q.closed = Some(Closed::Broken(why.to_owned()));
        }
        drop(q);
        self.broken.cancel();
        self.wake_writer.notify_one();
        self.space.notify_waiters();
    }

    /// The writer task body: writes queued frames until finished or broken.
    pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(&self, mut w: W) {
        let mut small = Vec::new();
        let mut big = Vec::new();
        loop {
            let next = {
                let mut q = self.lock();
                if q.closed.is_some() {
                    Next::Stop
                } else if q.queued > 0 {
                    std::mem::swap(&mut q.small, &mut small);
                    std::mem::swap(&mut q.big, &mut big);
                    q.queued = 0;
                    Next::Write
                } else if q.finish {
                    q.closed = Some(Closed::Shutdown);
                    Next::Finish
                } else {
                    Next::Wait
                }
            };
            match next {
                Next::Write => {}
                Next::Wait => {
                    self.wake_writer.notified().await;
                    continue;
                }
                Next::Finish => {
                    let _ = tokio::time::timeout(self.stall, w.shutdown()).await;
                    return;
                }
                Next::Stop => return,
            }
            self.space.notify_waiters();
            let written = tokio::select! {
                r = write_segments(&mut w, &small, &big, self.stall) => r,
                () = self.broken.cancelled() => return,
            };
            if let Err(e) = written {
                tracing::debug!(%e, "rpc connection write failed");
                self.break_with(&e.to_string());
                return;
            }
            small.clear();
            big.clear();
        }
    }
}

/// What the writer does next.
enum Next {
    Write,
    Wait,
    Finish,
    Stop,
}

/// Writes `small` with each `big` payload spliced in at its offset.
async fn write_segments<W: AsyncWrite + Unpin>(
    w: &mut W,
    small: &[u8],
    big: &[(usize, Bytes)],
    no_progress_limit: Duration,
) -> io::Result<()> {
    // Segment i: even = a piece of `small`, odd = a big payload.
    let seg = |i: usize| -> &[u8] {
        let k = i / 2;
        if i % 2 == 1 {
            return &big[k].1;
        }
        let start = if k == 0 { 0 } else { big[k - 1].0 };
        let end = big.get(k).map_or(small.len(), |b| b.0);
        &small[start..end]
    };
    let count = 2 * big.len() + 1;
    let (mut i, mut off) = (0usize, 0usize);
    while i < count {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n_iov = 0;
        let mut j = i;
        let mut first_off = off;
        while j < count && n_iov < MAX_IOV {
            let s = &seg(j)[first_off..];
            first_off = 0;
            if !s.is_empty() {
                iov[n_iov] = IoSlice::new(s);
                n_iov += 1;
            }
            j += 1;
        }
        if n_iov == 0 {
            break;
        }
        let mut n = tokio::time::timeout(no_progress_limit, w.write_vectored(&iov[..n_iov]))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no write progress for {no_progress_limit:?}: the peer stopped reading"
                    ),
                )
            })??;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Advance the cursor by n bytes.
        while n > 0 && i < count {
            let left = seg(i).len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
        while i < count && seg(i).len() == off {
            i += 1;
            off = 0;
        }
    }
    w.flush().await
}
