//! The length header and the synchronous decoder: the one implementation of
//! frame parsing, used by [`FrameReader`](super::FrameReader) on every
//! frame and, through [`__wire`](super::__wire), by the fuzz and property
//! tests.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{DEFAULT_MAX_FRAME_LEN, FrameError};

/// The longest length header: a 64-bit varint takes at most 10 bytes.
pub const MAX_HEADER_LEN: usize = 10;

/// Writes the header for a body of `len` bytes into `out`; returns how many
/// bytes it took (1 to [`MAX_HEADER_LEN`]).
#[inline]
#[must_use]
pub fn encode_header(len: usize, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
    // Zigzag of a non-negative i64 is 2n; lengths are far below 2^63.
    let mut v = (len as u64) << 1;
    let mut i = 0;
    while v >= 0x80 {
        out[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    out[i] = v as u8;
    i + 1
}

/// Appends one frame (header and body) to `dst`.
///
/// # Errors
///
/// [`FrameError::Empty`] if `body` is empty (nothing is appended).
pub fn put_frame(body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
    if body.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = encode_header(body.len(), &mut hdr);
    dst.reserve(n + body.len());
    dst.put_slice(&hdr[..n]);
    dst.put_slice(body);
    Ok(())
}

/// Parses a length header at the start of `buf`.
///
/// Returns `Ok(None)` if more bytes are needed, or the header's length and the
/// body length. Rejects negative, overflowing and over-`max` lengths as soon
/// as the header is complete, before any body byte is needed.
///
/// # Errors
///
/// [`FrameError::NegativeLength`], [`FrameError::VarintOverflow`] or
/// [`FrameError::TooLarge`]; the stream cannot be resynchronised after any
/// of them.
#[inline]
pub fn decode_header(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, FrameError> {
    let mut x: u64 = 0;
    let mut shift = 0u32;
    for (i, &b) in buf.iter().enumerate() {
        if i == MAX_HEADER_LEN {
            return Err(FrameError::VarintOverflow);
        }
        if b < 0x80 {
            if i == MAX_HEADER_LEN - 1 && b > 1 {
                return Err(FrameError::VarintOverflow);
            }
            x |= u64::from(b) << shift;
            // Zigzag decode, as Go's binary.Varint: odd values are negative.
            if x & 1 == 1 {
                return Err(FrameError::NegativeLength {
                    declared: (!(x >> 1)).cast_signed(),
                });
            }
            let len = x >> 1;
            if len > max as u64 {
                return Err(FrameError::TooLarge { declared: len, max });
            }
            return Ok(Some((i + 1, len as usize)));
        }
        x |= u64::from(b & 0x7f) << shift;
        shift += 7;
    }
    if buf.len() >= MAX_HEADER_LEN {
        return Err(FrameError::VarintOverflow);
    }
    Ok(None)
}

/// A complete, checked header at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// Bytes of the header itself.
    pub(super) len: usize,
    /// The body length it declares (at most the decoder's maximum).
    pub(super) body_len: usize,
}

impl Header {
    /// Header and body together.
    #[inline]
    pub(super) fn frame_len(self) -> usize {
        self.len + self.body_len
    }
}

/// A synchronous frame decoder over a byte buffer: the header parsing and
/// frame splitting that [`FrameReader`](super::FrameReader) runs, usable
/// with any transport.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder accepting bodies of at most `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder { max_frame_len }
    }

    /// Takes one complete frame's body off the front of `buf`, or returns
    /// `Ok(None)` if it is not all there yet. It never reserves memory: the
    /// caller decides how fast to grow the buffer (see
    /// [`FrameReader`](super::FrameReader)). A zero-length frame yields an
    /// empty body.
    ///
    /// # Errors
    ///
    /// As [`decode_header`]; `buf` is then left as it was.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(header) = self.header(buf)? else {
            return Ok(None);
        };
        if buf.len() < header.frame_len() {
            return Ok(None);
        }
        Ok(Some(split_frame(buf, header)))
    }

    /// The checked header at the front of `buf`, if it is complete.
    #[inline]
    pub(super) fn header(self, buf: &[u8]) -> Result<Option<Header>, FrameError> {
        Ok(decode_header(buf, self.max_frame_len)?.map(|(len, body_len)| Header { len, body_len }))
    }
}

/// Takes the frame `header` describes, which is all in `buf`, off its front
/// and returns its body without a copy.
#[inline]
pub(super) fn split_frame(buf: &mut BytesMut, header: Header) -> Bytes {
    debug_assert!(buf.len() >= header.frame_len());
    buf.advance(header.len);
    buf.split_to(header.body_len).freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_small_and_large() {
        for len in [0usize, 1, 63, 64, 127, 128, 300, 1 << 20, (1 << 40) + 7] {
            let mut h = [0u8; MAX_HEADER_LEN];
            let n = encode_header(len, &mut h);
            assert_eq!(decode_header(&h[..n], usize::MAX).unwrap(), Some((n, len)));
            // Every strict prefix is incomplete.
            for cut in 0..n {
                assert_eq!(decode_header(&h[..cut], usize::MAX).unwrap(), None);
            }
        }
    }

    #[test]
    fn header_300_is_d8_04() {
        let mut h = [0u8; MAX_HEADER_LEN];
        let n = encode_header(300, &mut h);
        assert_eq!(&h[..n], &[0xd8, 0x04]);
    }
}
