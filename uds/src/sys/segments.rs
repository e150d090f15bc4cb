//! A `BufMut` that keeps one large `Bytes` written into it by reference.
//!
//! prost writes a `bytes` field held as `Bytes` with `BufMut::put(Bytes)`;
//! for a `Bytes` source, `Buf::copy_to_bytes` is a reference-count bump, not
//! a copy. So an encoder that overrides `put` can keep a large payload in
//! place and have the connection write it with `writev`, instead of copying
//! it into the message's buffer. Neither `bytes` nor prost offers such a
//! buffer; it lives here because `BufMut` is an `unsafe` trait, and this
//! module holds the crate's `unsafe`.

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Encodes into `cur`, except for the first `put` of at least `min_ref`
/// bytes, which is kept by reference: the message is then `head` (what was
/// written before it), `big`, and what `cur` holds after it.
pub(crate) struct SegmentedBuf<'a> {
    cur: &'a mut BytesMut,
    min_ref: usize,
    parts: Option<(Bytes, Bytes)>,
}

impl<'a> SegmentedBuf<'a> {
    /// A buffer writing into `cur` (which should be empty).
    pub(crate) fn new(cur: &'a mut BytesMut, min_ref: usize) -> Self {
        SegmentedBuf {
            cur,
            min_ref,
            parts: None,
        }
    }

    /// `(head, big)` if a payload was kept by reference; the rest of the
    /// message is in `cur`.
    pub(crate) fn finish(self) -> Option<(Bytes, Bytes)> {
        self.parts
    }
}

// SAFETY: every method forwards to the `BytesMut` that holds the bytes, so
// `chunk_mut`, `advance_mut` and `remaining_mut` keep `BytesMut`'s own
// guarantees; `put` only chooses between forwarding and keeping `src`'s
// bytes aside, never touching `cur`'s uninitialized memory.
unsafe impl BufMut for SegmentedBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller upholds `advance_mut`'s contract for the chunk
        // it got from `chunk_mut`, which is `cur`'s.
        unsafe { self.cur.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.cur.chunk_mut()
    }

    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        let n = src.remaining();
        if self.parts.is_none() && n >= self.min_ref {
            let head = self.cur.split().freeze();
            // A reference-count bump when `src` is `Bytes` (prost's case).
            let big = src.copy_to_bytes(n);
            self.parts = Some((head, big));
        } else {
            self.cur.put(src);
        }
    }

    fn put_slice(&mut self, src: &[u8]) {
        self.cur.put_slice(src);
    }
}
