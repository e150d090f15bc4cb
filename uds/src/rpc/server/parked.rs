//! Requests read but waiting for a call slot: the per-connection queue,
//! its byte count and quotas, and what a waiting request keeps alive.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::handler::ErasedHandler;
use super::peers::Usage;
use crate::rpc::defaults::MIN_KEEPALIVE;
use crate::rpc::envelope::{Envelope, EnvelopeRef};
use crate::rpc::outbox::Outbox;

/// Requests that may wait for a call slot per connection, at least.
pub(super) const MIN_PARKED: usize = 64;
/// Bytes that requests waiting for a call slot may keep alive per
/// connection before the server stops reading it (whole frames, or what was
/// copied out of them: see [`detach`]). The request that crosses it is
/// still queued, so at most this plus one frame is held.
pub(super) const MAX_PARKED_BYTES: usize = 16 * 1024 * 1024;

/// Frames smaller than this are slices of the reader's shared buffer (see
/// [`FrameReader`](crate::frame::FrameReader)): a parked one would keep that whole buffer alive, so
/// what it keeps is copied out instead.
const SHARED_FRAME_MAX: usize = 8 * 1024;

/// A request read but not yet started.
pub(super) struct Parked {
    pub(super) env: Envelope,
    pub(super) handler: Arc<dyn ErasedHandler>,
    pub(super) deadline: Option<Instant>,
    /// What the call is told if it runs out of time.
    pub(super) expiry: &'static str,
    /// Bytes this request keeps alive while it waits (see [`detach`]).
    pub(super) retained: usize,
    /// For a client stream: the client ended its items before the call
    /// started (an empty stream needs no credit).
    pub(super) items_ended: bool,
    /// For a stream that asked for keep-alives: when the last one was sent
    /// while it waits, so that a busy server is not taken for a dead one.
    pub(super) alive_at: Instant,
}

/// A connection's requests waiting for a call slot, with a running count of
/// the bytes they keep alive, each also counted against its peer's process
/// and user queue quotas.
pub(super) struct ParkedQueue {
    queue: VecDeque<Parked>,
    /// Sum of `retained` over `queue`, kept as requests come and go.
    bytes: usize,
    /// Requests held before the connection stops being read.
    max_len: usize,
    process: Arc<Usage>,
    user: Arc<Usage>,
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

/// The quotas a [`ParkedQueue`] counts its requests against.
#[derive(Debug, Clone, Copy)]
pub(super) struct ParkLimits {
    /// Requests this connection may hold (reading stops beyond).
    pub(super) connection: usize,
    /// Requests the peer process may have waiting over all its connections.
    pub(super) process: usize,
    /// Requests the user may have waiting over all its connections.
    pub(super) user: usize,
}

impl ParkedQueue {
    pub(super) fn new(process: Arc<Usage>, user: Arc<Usage>, limits: ParkLimits) -> Self {
        ParkedQueue {
            queue: VecDeque::new(),
            bytes: 0,
            max_len: limits.connection,
            process,
            user,
            max_per_process: limits.process,
            max_per_user: limits.user,
        }
    }

    /// Takes a place for one more request in the peer's quotas, if both
    /// have room; [`push`](Self::push) fills it.
    pub(super) fn reserve(&self) -> bool {
        let (process, user) = (&self.process.queued, &self.user.queued);
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
        self.process.queued.fetch_sub(1, Ordering::AcqRel);
        self.user.queued.fetch_sub(1, Ordering::AcqRel);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes kept alive by the requests waiting.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the connection may be read for more requests: the queue is
    /// under both its length and its byte limit.
    pub(super) fn has_room(&self) -> bool {
        self.queue.len() < self.max_len && self.bytes < MAX_PARKED_BYTES
    }

    /// Queues a request whose place [`reserve`](Self::reserve) took.
    pub(super) fn push(&mut self, call: Parked) {
        self.bytes += call.retained;
        self.queue.push_back(call);
    }

    /// The oldest request, its place given back.
    pub(super) fn pop(&mut self) -> Option<Parked> {
        let call = self.queue.pop_front()?;
        self.bytes -= call.retained;
        self.release();
        Some(call)
    }

    pub(super) fn contains(&self, id: u32) -> bool {
        self.queue.iter().any(|p| p.env.id == id)
    }

    /// The client ended the items of waiting call `id`; whether it waits
    /// and had not ended them already.
    pub(super) fn end_items(&mut self, id: u32) -> bool {
        match self.queue.iter_mut().find(|p| p.env.id == id) {
            Some(p) if p.env.client_stream && !p.items_ended => {
                p.items_ended = true;
                true
            }
            _ => false,
        }
    }

    /// Whether a waiting stream asked for keep-alives.
    pub(super) fn wants_keepalives(&self) -> bool {
        self.queue.iter().any(|p| p.env.keepalive_ms > 0)
    }

    /// Sends a keep-alive to each waiting stream whose interval has passed
    /// (best effort: a connection that cannot take it is ending).
    pub(super) fn send_keepalives(&mut self, outbox: &Outbox, now: Instant) {
        for p in self.queue.iter_mut().filter(|p| p.env.keepalive_ms > 0) {
            let every = Duration::from_millis(u64::from(p.env.keepalive_ms)).max(MIN_KEEPALIVE);
            if now.saturating_duration_since(p.alive_at) >= every {
                p.alive_at = now;
                let alive = EnvelopeRef {
                    id: p.env.id,
                    keepalive: true,
                    ..EnvelopeRef::default()
                };
                let _ = outbox.push_now(&alive);
            }
        }
    }

    /// Removes the request with this id; whether there was one.
    pub(super) fn remove(&mut self, id: u32) -> bool {
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
pub(super) fn detach(env: &mut Envelope, frame_len: usize) -> usize {
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
            crate::rpc::envelope::put_varint(&mut body, (99 << 3) | 2);
            crate::rpc::envelope::put_varint(&mut body, pad as u64);
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

    /// A handler that is never run.
    fn handler() -> Arc<dyn ErasedHandler> {
        Arc::new(super::super::handler::FnHandler::new(
            |_: super::super::Context, req: Bytes| async move { Ok(req) },
        ))
    }

    fn parked(id: u32, retained: usize) -> Parked {
        Parked {
            env: Envelope {
                id,
                ..Envelope::default()
            },
            handler: handler(),
            deadline: None,
            expiry: "",
            retained,
            items_ended: false,
            alive_at: Instant::now(),
        }
    }

    fn queue(connection: usize, process: usize, user: usize) -> ParkedQueue {
        let limits = ParkLimits {
            connection,
            process,
            user,
        };
        ParkedQueue::new(Usage::new(1), Usage::new(1), limits)
    }

    #[test]
    fn the_byte_count_follows_pushes_pops_and_removals() {
        let mut q = queue(8, 8, 8);
        for (id, bytes) in [(1, 100), (2, 20), (3, 3)] {
            assert!(q.reserve());
            q.push(parked(id, bytes));
        }
        assert_eq!((q.len(), q.bytes()), (3, 123));
        assert!(q.remove(2) && !q.remove(2));
        assert_eq!(q.bytes(), 103);
        assert_eq!(q.pop().map(|p| p.env.id), Some(1), "oldest first");
        assert_eq!(q.bytes(), 3);
        assert!(q.contains(3) && !q.contains(1));
        assert_eq!(q.pop().map(|p| p.env.id), Some(3));
        assert!(q.is_empty() && q.bytes() == 0 && q.pop().is_none());
    }

    #[test]
    fn reading_stops_at_the_length_or_the_byte_limit() {
        let mut q = queue(2, 8, 8);
        assert!(q.has_room());
        assert!(q.reserve());
        q.push(parked(1, MAX_PARKED_BYTES));
        assert!(!q.has_room(), "byte limit");
        assert!(q.remove(1));
        for id in [1, 2] {
            assert!(q.reserve());
            q.push(parked(id, 1));
        }
        assert!(!q.has_room(), "length limit");
    }

    #[test]
    fn quotas_are_shared_by_the_peer_s_queues_and_given_back_on_drop() {
        let (process, user) = (Usage::new(1), Usage::new(1));
        let limits = ParkLimits {
            connection: 8,
            process: 2,
            user: 3,
        };
        let mut a = ParkedQueue::new(process.clone(), user.clone(), limits);
        let b = ParkedQueue::new(process.clone(), user.clone(), limits);
        assert!(a.reserve());
        a.push(parked(1, 1));
        assert!(b.reserve());
        assert!(!a.reserve(), "the process has 2 waiting");
        assert_eq!(
            user.queued.load(Ordering::Relaxed),
            2,
            "a refusal keeps nothing"
        );
        drop(a);
        assert_eq!(process.queued.load(Ordering::Relaxed), 1);
        let other = ParkedQueue::new(Usage::new(1), user.clone(), limits);
        assert!(other.reserve(), "b holds 1 of the user's 3");
        assert!(other.reserve());
        assert!(!other.reserve(), "the user's quota is 3");
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
