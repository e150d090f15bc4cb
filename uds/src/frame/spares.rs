//! Reuse of large-body buffers by a [`FrameReader`](super::FrameReader).
//!
//! A large frame body is read into an allocation of its own and handed to
//! the caller as `Bytes`. The reader keeps an empty handle on each such
//! allocation; once the caller has dropped the body, the handle is the
//! allocation's only owner and the next large body is read into it in place.
//! That keeps the memory warm and off the allocator, which under load hands
//! back freshly mapped pages for buffers this size (page faults and zeroing
//! on every frame: measured at about a quarter of the benchmark's CPU time
//! at 100 KiB).
//!
//! Hand-written because `bytes` has no pool; it provides only
//! [`BytesMut::try_reclaim`], which this builds on.

use bytes::BytesMut;

/// Most allocations kept per reader.
const MAX_COUNT: usize = 32;
/// Most bytes kept per reader: the memory an idle connection may hold.
pub(super) const MAX_BYTES: usize = 2 * 1024 * 1024;

/// Handles on the allocations of earlier large bodies.
#[derive(Debug, Default)]
pub(super) struct Spares {
    /// Each handle is empty; the `usize` is its allocation's size.
    kept: Vec<(BytesMut, usize)>,
    bytes: usize,
}

impl Spares {
    /// An empty buffer with room for at least `first` bytes: a kept
    /// allocation that nobody else uses any more if there is one, else a new
    /// one of `first` bytes.
    pub(super) fn take(&mut self, first: usize) -> BytesMut {
        for i in 0..self.kept.len() {
            let (handle, size) = &mut self.kept[i];
            if *size >= first && handle.try_reclaim(first) {
                let size = *size;
                self.bytes -= size;
                return self.kept.swap_remove(i).0;
            }
        }
        BytesMut::with_capacity(first)
    }

    /// Keeps `rest` (what is left once a body of an allocation of `size`
    /// bytes was split off it) for reuse, dropping the oldest handles beyond
    /// the limits.
    pub(super) fn keep(&mut self, rest: BytesMut, size: usize) {
        if size > MAX_BYTES {
            return;
        }
        self.kept.push((rest, size));
        self.bytes += size;
        while self.bytes > MAX_BYTES || self.kept.len() > MAX_COUNT {
            let (_, size) = self.kept.remove(0);
            self.bytes -= size;
        }
    }

    /// Bytes of the allocations kept (some may still back live bodies).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(spares: &mut Spares, len: usize) -> bytes::Bytes {
        let mut b = spares.take(len);
        b.resize(len, 1);
        let size = b.capacity();
        let frame = b.split_to(len).freeze();
        spares.keep(b, size);
        frame
    }

    #[test]
    fn a_dropped_body_allocation_is_reused() {
        let mut s = Spares::default();
        let a = body(&mut s, 100_000);
        let at = a.as_ptr();
        drop(a);
        let b = body(&mut s, 100_000);
        assert_eq!(b.as_ptr(), at);
    }

    #[test]
    fn a_live_body_is_never_reused() {
        let mut s = Spares::default();
        let a = body(&mut s, 100_000);
        let b = body(&mut s, 100_000);
        assert_ne!(a.as_ptr(), b.as_ptr());
        assert!(a.iter().all(|&x| x == 1) && b.iter().all(|&x| x == 1));
    }

    #[test]
    fn memory_kept_is_bounded() {
        let mut s = Spares::default();
        let live: Vec<_> = (0..100).map(|_| body(&mut s, 100_000)).collect();
        assert!(s.bytes() <= MAX_BYTES);
        assert!(s.kept.len() <= MAX_COUNT);
        drop(live);
        drop(body(&mut s, 3 * 1024 * 1024));
        assert!(s.bytes() <= MAX_BYTES);
    }
}
