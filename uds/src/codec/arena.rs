//! The per-thread buffer that the built-in codecs encode into.
//!
//! Encoded messages are short-lived: the RPC layer copies small ones into the
//! connection's write buffer and writes large ones in place, then drops them.
//! So each thread keeps one `BytesMut` and splits every message off it; once
//! the messages split off a block are all gone, the next `reserve` reclaims
//! the block in place, and encoding allocates nothing. While earlier
//! messages are still alive, `reserve` starts a new block (the allocator's
//! job, amortized over the block's messages).
//!
//! Hand-written because neither `bytes` nor prost provides such a pool.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// Least size of a block: small messages share one.
const BLOCK: usize = 64 * 1024;
/// Messages larger than this get an allocation of their own, so a thread
/// does not keep a huge block for the rest of its life.
const MAX_REUSED: usize = 1024 * 1024;

thread_local! {
    static BUF: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Runs `write` to encode one message (of `len` bytes, if known) and returns
/// its bytes. On error nothing is kept.
pub(super) fn encode<E>(
    len: Option<usize>,
    write: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<Bytes, E> {
    let mut write = Some(write);
    if len.is_none_or(|len| len <= MAX_REUSED) {
        let pooled = BUF.try_with(|cell| {
            // Only a codec running inside another's encode finds the buffer
            // borrowed; it falls back to a buffer of its own.
            let mut buf = cell.try_borrow_mut().ok()?;
            let write = write.take()?;
            Some(encode_pooled(&mut buf, len, write))
        });
        if let Ok(Some(out)) = pooled {
            return out;
        }
    }
    let mut own = BytesMut::with_capacity(len.unwrap_or(0));
    match write.take() {
        Some(write) => write(&mut own).map(|()| own.freeze()),
        // `write` is taken only on the pooled path, which returned.
        None => Ok(Bytes::new()),
    }
}

fn encode_pooled<E>(
    buf: &mut BytesMut,
    len: Option<usize>,
    write: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<Bytes, E> {
    // An encode that panicked midway left its bytes here: drop them.
    buf.clear();
    let need = len.unwrap_or(1).max(1);
    if buf.capacity() - buf.len() < need {
        // Reclaims the block in place if every message split off it is
        // gone; otherwise starts a new one.
        buf.reserve(need.max(BLOCK));
    }
    let out = match write(buf) {
        Ok(()) => Ok(buf.split().freeze()),
        Err(e) => {
            buf.clear();
            Err(e)
        }
    };
    if buf.capacity() > MAX_REUSED {
        // An unsized message (JSON) grew the block past the limit.
        *buf = BytesMut::new();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn put(len: Option<usize>, bytes: &[u8]) -> Bytes {
        encode::<()>(len, |b| {
            b.put_slice(bytes);
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn messages_are_independent_and_the_block_is_reused() {
        let a = put(Some(3), b"abc");
        let b = put(None, b"defg");
        assert_eq!(&a[..], b"abc");
        assert_eq!(&b[..], b"defg");
        let first = a.as_ptr();
        drop((a, b));
        // Once the block is used up and every message off it is gone, the
        // block is reclaimed in place: the first message's address recurs.
        let reused = (0..2 * BLOCK / 1000).any(|_| put(Some(1000), &[1; 1000]).as_ptr() == first);
        assert!(reused, "the block was not reclaimed");
    }

    #[test]
    fn a_live_message_is_never_overwritten() {
        let a = put(Some(3), b"abc");
        for _ in 0..100_000 {
            drop(put(Some(5), b"zzzzz"));
        }
        assert_eq!(&a[..], b"abc");
    }

    #[test]
    fn a_failed_encode_leaves_nothing_behind() {
        let r = encode::<&str>(None, |b| {
            b.put_slice(b"partial");
            Err("no")
        });
        assert_eq!(r, Err("no"));
        assert_eq!(&put(None, b"x")[..], b"x");
    }

    #[test]
    fn an_encode_that_panicked_leaves_nothing_behind() {
        let panicked = std::panic::catch_unwind(|| {
            encode::<()>(None, |b| {
                b.put_slice(b"junk");
                panic!("a Serialize impl panicked");
            })
        });
        assert!(panicked.is_err());
        assert_eq!(&put(None, b"next")[..], b"next");
    }

    #[test]
    fn large_messages_get_their_own_buffer() {
        let big = encode::<()>(Some(MAX_REUSED + 1), |b| {
            b.put_bytes(7, MAX_REUSED + 1);
            Ok(())
        })
        .unwrap();
        assert_eq!(big.len(), MAX_REUSED + 1);
        BUF.with_borrow(|buf| assert!(buf.capacity() <= MAX_REUSED));
    }
}
