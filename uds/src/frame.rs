//! Chunk framing, wire-compatible with the Go package's `highlevel/chunk`.
//!
//! A frame is the body length as Go's **signed** varint (`binary.PutVarint`:
//! zigzag, then base-128 little-endian groups) followed by the body. Length 5
//! is the byte `0x0a`, 300 is `0xd8 0x04`.
//!
//! The decoder checks the declared length before allocating anything: a
//! negative length, an overflowing varint or a length over the configured
//! maximum is a [`FrameError`], and the connection should be closed. Bodies
//! are handed out as [`Bytes`] split off a reused read buffer, without a
//! copy.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), uds::frame::FrameError> {
//! use uds::frame::{FrameReader, FrameWriter};
//! let (a, b) = tokio::io::duplex(64);
//! let mut w = FrameWriter::new(a);
//! let mut r = FrameReader::new(b);
//! w.write_frame(b"hello").await?;
//! assert_eq!(r.read_frame().await?.as_deref(), Some(&b"hello"[..]));
//! drop(w);
//! assert_eq!(r.read_frame().await?, None); // clean EOF between frames
//! # Ok(()) }
//! ```

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

mod spares;
use spares::Spares;

/// The longest length header: a 64-bit varint takes at most 10 bytes.
pub const MAX_HEADER_LEN: usize = 10;

/// Default largest frame body accepted: 16 MiB. The Go package has no limit.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Default time a frame may take to arrive once its first byte has.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Default period of [`FrameReader::set_idle_release`], as the RPC client
/// and server use it: a reader that has read no frame for a whole period
/// (so 500 ms to 1 s after its last one) gives its buffers back.
/// Far longer than the gaps between frames of a busy connection, so the
/// buffers it keeps warm are reused while it is busy.
pub const DEFAULT_IDLE_RELEASE: Duration = Duration::from_millis(500);

/// Bodies at least this large are written straight from the caller's buffer
/// (vectored write) instead of being copied into the write buffer.
const DIRECT_WRITE_MIN: usize = 32 * 1024;

/// Least room free in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Least size of a fresh read buffer: many small frames fit in one, so a
/// new allocation is rare even while earlier frames are still in use.
const MIN_BUFFER: usize = 64 * 1024;
/// Largest size of a fresh read buffer learned from frame sizes. Kept under
/// the allocator's usual mmap threshold (128 KiB in glibc), so a fresh
/// buffer comes from recycled heap memory rather than new, zeroed pages.
const MAX_BUFFER: usize = 96 * 1024;
/// Bodies at least this large are handed out in a buffer of their own, sized
/// to the body, instead of a slice of the shared read buffer; see
/// [`FrameReader`].
const LARGE_BODY: usize = 8 * 1024;
/// After a body at least this large, the next header is read on its own so
/// that a body like it is read straight into its buffer, not copied there.
const DIRECT_BODY: usize = 64 * 1024;
/// How far ahead of the bytes received a buffer grows for a declared frame:
/// a bare header cannot make the reader allocate its declared size.
const GROWTH_AHEAD: usize = 256 * 1024;

/// Errors of the framing layer. All but [`FrameError::Io`] mean the stream
/// can no longer be trusted: close the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header declares a negative length.
    #[error("protocol error: frame header declares a negative length ({declared}); closing")]
    NegativeLength {
        /// The declared length.
        declared: i64,
    },
    /// The header is not a valid 64-bit varint.
    #[error("protocol error: frame length varint overflows 64 bits; closing")]
    VarintOverflow,
    /// The header declares more than the configured maximum.
    #[error(
        "frame of {declared} bytes exceeds the limit of {max} bytes; raise max_frame_len on both sides if this is expected"
    )]
    TooLarge {
        /// The declared length.
        declared: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("connection closed mid-frame: {received} of {expected} bytes arrived")]
    Truncated {
        /// Bytes the frame needed (header and body; a lower bound while the
        /// header is incomplete).
        expected: usize,
        /// Bytes that arrived.
        received: usize,
    },
    /// A frame started but did not complete in time.
    #[error("frame started but did not complete within {after:?}; the peer stalled")]
    Timeout {
        /// The configured frame timeout.
        after: Duration,
    },
    /// Empty frames are never written (the Go reader would take one for an
    /// empty message, ours refuses it).
    #[error("refusing to write an empty frame")]
    Empty,
    /// The underlying reader or writer failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Limits applied while reading frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameConfig {
    /// Largest body accepted, in bytes (default [`DEFAULT_MAX_FRAME_LEN`]).
    pub max_frame_len: usize,
    /// Time a frame may take to arrive once started (default
    /// [`DEFAULT_FRAME_TIMEOUT`]); `None` waits forever.
    pub frame_timeout: Option<Duration>,
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            frame_timeout: Some(DEFAULT_FRAME_TIMEOUT),
        }
    }
}

/// Writes the header for a body of `len` bytes into `out`; returns how many
/// bytes it took.
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

/// A synchronous frame decoder over a byte buffer: the core of
/// [`FrameReader`], usable with any transport.
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
    /// caller decides how fast to grow the buffer (see [`FrameReader`]). A
    /// zero-length frame yields an empty body.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some((hlen, blen)) = decode_header(buf, self.max_frame_len)? else {
            return Ok(None);
        };
        let total = hlen + blen;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(hlen);
        Ok(Some(buf.split_to(blen).freeze()))
    }

    /// How many bytes the frame at the front of `buf` needs in all, if its
    /// header is complete.
    fn frame_total(self, buf: &[u8]) -> Option<usize> {
        match decode_header(buf, self.max_frame_len) {
            Ok(Some((h, b))) => Some(h + b),
            _ => None,
        }
    }
}

/// Reads frames from an [`AsyncRead`], reusing one buffer.
///
/// Small frame bodies are split off a shared read buffer as [`Bytes`] without
/// a copy. The buffer is sized from the frames seen (64 to 96 KiB), so that
/// it is usually reclaimed in place, or else replaced from recycled heap
/// memory. A body of 8 KiB or more gets an allocation of its own, sized to
/// the body: copied there if it arrived whole with other frames, read
/// straight into it otherwise (after a body of 64 KiB or more the next
/// header is read on its own, so a body like it is not copied). The reader
/// keeps a handle on that allocation and, once the caller has dropped the
/// body, puts a later large body in it in place (at most 2 MiB of such
/// allocations are kept per reader). A reader can give all of that back
/// when it goes idle: see [`FrameReader::set_idle_release`].
///
/// Either way a buffer grows only as fast as bytes actually arrive (at most
/// 256 KiB ahead of them), never to a length a header merely declares.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    /// The body of a large frame being read, its declared length and the
    /// length of its header.
    large: Option<(BytesMut, usize, usize)>,
    decoder: FrameDecoder,
    frame_timeout: Option<Duration>,
    /// When the first byte of the frame being read arrived.
    started: Option<Instant>,
    /// Size of a fresh buffer, learned from completed frames.
    hint: usize,
    /// The last frame was large: read the next header on its own, so that
    /// the next large body is not copied out of the shared buffer.
    after_large: bool,
    /// Allocations of earlier large bodies, for reuse once they are dropped.
    spares: Spares,
    /// See [`FrameReader::set_idle_release`].
    idle_release: Option<Duration>,
    /// Fires a period after it was last set; created on first use, then
    /// reset at most once a period (not per frame).
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame was read since the idle timer was last set.
    active: bool,
    /// The buffers were given back and no frame was read since: wait for
    /// the next one with a header's room only.
    released: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with the default [`FrameConfig`].
    pub fn new(inner: R) -> Self {
        FrameReader::with_config(inner, FrameConfig::default())
    }

    /// A reader with the given limits.
    pub fn with_config(inner: R, config: FrameConfig) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::new(),
            large: None,
            decoder: FrameDecoder::new(config.max_frame_len),
            frame_timeout: config.frame_timeout,
            started: None,
            hint: MIN_BUFFER,
            after_large: false,
            spares: Spares::default(),
            idle_release: None,
            idle_timer: None,
            active: false,
            released: false,
        }
    }

    /// Gives the reader's buffers back when it goes idle: once it has read
    /// no frame for a whole `period` (so `period` to twice that after its
    /// last frame), it does [`release_idle`](Self::release_idle) while it
    /// waits for the next one. `None` (the default) keeps them for as long
    /// as the reader lives. The RPC client and server use
    /// [`DEFAULT_IDLE_RELEASE`].
    ///
    /// Costs nothing per frame beyond a flag: one timer per reader, polled
    /// only while waiting for a frame to start and reset at most once a
    /// period. Needs a tokio runtime with the time driver enabled.
    pub fn set_idle_release(&mut self, period: Option<Duration>) {
        self.idle_release = period;
        self.idle_timer = None;
    }

    /// Gives back the memory the reader keeps for reuse: the allocations
    /// of earlier large bodies (up to 2 MiB) and, if no frame is partly
    /// read, the read buffer (64 to 96 KiB). Bodies already returned keep
    /// their own memory until dropped. The next frame is read into fresh
    /// buffers, which then grow as usual.
    pub fn release_idle(&mut self) {
        self.spares = Spares::default();
        if self.buf.is_empty() && self.large.is_none() {
            self.buf = BytesMut::new();
            self.hint = MIN_BUFFER;
            self.released = true;
        }
    }

    /// Reads the next frame's body.
    ///
    /// Returns `Ok(None)` at a clean end of stream (between frames), and
    /// [`FrameError::Truncated`] if the stream ends inside a frame. Waiting
    /// for a frame to *start* is unbounded; once its first byte has arrived,
    /// the rest must follow within the frame timeout — measured from that
    /// byte, even across cancelled calls.
    ///
    /// Cancel safe: bytes already read stay buffered for the next call.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some((body, len, _)) = &mut self.large {
                if body.len() == *len {
                    let (body, len) = (std::mem::take(body), *len);
                    self.large = None;
                    return Ok(Some(self.finish_large(body, len)));
                }
                let (have, left) = (body.len(), *len - body.len());
                if body.capacity() == have {
                    body.reserve(left.min(GROWTH_AHEAD.max(have)));
                }
                let n = self.read_large_body(left).await?;
                if n == 0 {
                    return Err(self.truncated());
                }
                continue;
            }
            // The header is parsed once per pass and serves every branch.
            let header = decode_header(&self.buf, self.decoder.max_frame_len)?;
            if let Some((hlen, blen)) = header
                && blen >= LARGE_BODY
            {
                self.buf.advance(hlen);
                if self.buf.len() >= blen {
                    // All here: copy it out (cheaper than a read of its own)
                    // so the shared buffer stays free for reuse.
                    let mut body = self.spares.take(blen);
                    body.extend_from_slice(&self.buf[..blen]);
                    self.buf.advance(blen);
                    return Ok(Some(self.finish_large(body, blen)));
                }
                // Move what there is of its body to a buffer of its own.
                let first = blen.min(GROWTH_AHEAD.max(self.buf.len()));
                let mut body = self.spares.take(first);
                body.extend_from_slice(&self.buf);
                self.buf.clear();
                self.large = Some((body, blen, hlen));
                continue;
            }
            if let Some((hlen, blen)) = header
                && self.buf.len() >= hlen + blen
            {
                self.buf.advance(hlen);
                let frame = self.buf.split_to(blen).freeze();
                self.started = None;
                self.after_large = false;
                self.active = true;
                self.released = false;
                let total = frame.len() + MAX_HEADER_LEN;
                self.hint = self.hint.max((4 * total).min(MAX_BUFFER));
                return Ok(Some(frame));
            }
            self.reserve(header.map(|(hlen, blen)| hlen + blen));
            // After a large frame, read just the next header, so a following
            // large body lands in its own buffer rather than this one; after
            // the buffers were released, so that a header needs no more.
            let limit = if (self.after_large || self.released) && self.buf.is_empty() {
                MAX_HEADER_LEN
            } else {
                usize::MAX
            };
            let Some(n) = self.read_shared(limit).await? else {
                continue; // the idle timer fired
            };
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(self.truncated());
            }
        }
    }

    /// Hands out a complete large body, keeping its allocation for reuse.
    fn finish_large(&mut self, mut body: BytesMut, len: usize) -> Bytes {
        let size = body.capacity();
        let frame = body.split_to(len).freeze();
        self.spares.keep(body, size);
        self.started = None;
        self.active = true;
        self.released = false;
        // Bodies this large are better read straight into their own buffer
        // than copied out of the shared one: read the next header alone.
        self.after_large = len >= DIRECT_BODY;
        frame
    }

    /// Reads into the large body, at most `left` bytes.
    async fn read_large_body(&mut self, left: usize) -> Result<usize, FrameError> {
        let Some((body, _, _)) = &mut self.large else {
            return Ok(0);
        };
        let mut dst = (&mut *body).limit(left);
        let read = self.inner.read_buf(&mut dst);
        Self::within_frame_time(&mut self.started, self.frame_timeout, read).await
    }

    /// Reads into the shared buffer, at most `limit` bytes. `None`: the
    /// idle timer fired first (and the buffers may have been released):
    /// nothing was read, go round again.
    async fn read_shared(&mut self, limit: usize) -> Result<Option<usize>, FrameError> {
        let waiting = self.buf.is_empty();
        let mut dst = (&mut self.buf).limit(limit);
        let read = self.inner.read_buf(&mut dst);
        if !waiting {
            return Self::within_frame_time(&mut self.started, self.frame_timeout, read)
                .await
                .map(Some);
        }
        // Waiting for a frame to start is not bounded; while there is
        // memory to give back, the idle timer runs alongside.
        let Some(period) = self.idle_release.filter(|_| !self.released) else {
            return Ok(Some(read.await?));
        };
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(period)));
        tokio::select! {
            biased;
            n = read => return Ok(Some(n?)),
            () = timer.as_mut() => {}
        }
        if self.active {
            // Frames were read this period: not idle; look again in one.
            self.active = false;
            timer.as_mut().reset(Instant::now() + period);
        } else {
            self.release_idle();
        }
        Ok(None)
    }

    /// Runs a read of the frame in progress under the frame timeout, counted
    /// from the frame's first byte.
    async fn within_frame_time(
        started: &mut Option<Instant>,
        limit: Option<Duration>,
        read: impl Future<Output = io::Result<usize>>,
    ) -> Result<usize, FrameError> {
        let Some(limit) = limit else {
            return Ok(read.await?);
        };
        let start = *started.get_or_insert_with(Instant::now);
        tokio::time::timeout_at(start + limit, read)
            .await
            .map_err(|_| FrameError::Timeout { after: limit })?
            .map_err(FrameError::from)
    }

    /// The error for an end of stream inside a frame.
    fn truncated(&self) -> FrameError {
        if let Some((body, len, header)) = &self.large {
            return FrameError::Truncated {
                expected: header + len,
                received: header + body.len(),
            };
        }
        FrameError::Truncated {
            expected: self
                .decoder
                .frame_total(&self.buf)
                .unwrap_or(self.buf.len() + 1),
            received: self.buf.len(),
        }
    }

    /// Makes room in the shared buffer before a read, given the size of the
    /// frame at its front if its header is complete.
    fn reserve(&mut self, frame_total: Option<usize>) {
        let have = self.buf.len();
        if self.released && have == 0 {
            // Idle: wait for a header with no more than its room.
            self.buf.reserve(MAX_HEADER_LEN);
            return;
        }
        let frame_left = frame_total.map_or(0, |t| t.saturating_sub(have));
        let room = frame_left.max(READ_CHUNK);
        if self.buf.capacity() - have < room {
            // When the buffer is not shared any more this reclaims it in
            // place; otherwise it takes a fresh one, sized for several frames.
            self.buf.reserve(room.max(self.hint.saturating_sub(have)));
        }
    }

    /// Bytes the reader holds in buffers: the read buffer, the large body
    /// being read and the allocations kept for reuse (for memory
    /// monitoring; bodies already returned are not counted).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
            + self
                .large
                .as_ref()
                .map_or(0, |(body, _, _)| body.capacity())
            + self.spares.bytes()
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying reader, mutably. Reading from it directly loses framing.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The underlying reader; bytes read ahead into the buffer are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Writes frames to an [`AsyncWrite`], reusing one buffer. Small frames are
/// coalesced with [`FrameWriter::queue`] + [`FrameWriter::flush`]; large
/// bodies go out by vectored write without being copied.
///
/// After a write fails or a write future is dropped midway, the stream may
/// hold part of a frame: the writer then refuses further writes
/// ([`io::ErrorKind::BrokenPipe`]) instead of corrupting the framing.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: BytesMut,
    /// A write is (or was left) in progress.
    writing: bool,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer over `inner`.
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            writing: false,
        }
    }

    fn check(&self) -> Result<(), FrameError> {
        if self.writing {
            return Err(FrameError::Io(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier frame write failed or was cancelled midway; the stream is unusable",
            )));
        }
        Ok(())
    }

    /// Adds a frame to the write buffer without writing it.
    pub fn queue(&mut self, body: &[u8]) -> Result<(), FrameError> {
        self.check()?;
        put_frame(body, &mut self.buf)
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        self.check()?;
        self.writing = true;
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.inner.flush().await?;
        self.writing = false;
        Ok(())
    }

    /// Writes one frame (after anything queued) and flushes.
    pub async fn write_frame(&mut self, body: &[u8]) -> Result<(), FrameError> {
        if body.len() < DIRECT_WRITE_MIN {
            self.queue(body)?;
            return self.flush().await;
        }
        self.check()?;
        if body.is_empty() {
            return Err(FrameError::Empty);
        }
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = encode_header(body.len(), &mut hdr);
        self.buf.put_slice(&hdr[..n]);
        self.writing = true;
        write_all_vectored(&mut self.inner, &self.buf, body).await?;
        self.buf.clear();
        self.inner.flush().await?;
        self.writing = false;
        Ok(())
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying writer, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The underlying writer; anything queued and not flushed is lost.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Writes `a` then `b` with as few syscalls as the writer allows.
pub(crate) async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut a: &[u8],
    mut b: &[u8],
) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = if a.is_empty() {
            w.write(b).await?
        } else {
            let slices = [io::IoSlice::new(a), io::IoSlice::new(b)];
            w.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
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

    /// Once idle for its period, a reader holds next to nothing, and reads
    /// the frames that follow, small and large, whole and split, as before.
    #[tokio::test]
    async fn an_idle_reader_gives_its_buffers_back_and_reads_on() {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut r = FrameReader::new(b);
        r.set_idle_release(Some(Duration::from_millis(50)));
        let frames: Vec<Vec<u8>> = [300_000usize, 5, 100, 20_000, 70_000, 1]
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8 + 1; n])
            .collect();
        for round in 0..3 {
            for f in &frames {
                let mut out = BytesMut::new();
                put_frame(f, &mut out).unwrap();
                if round == 1 {
                    // Split: the header, then the body in two.
                    let mid = out.len() / 2;
                    a.write_all(&out[..1]).await.unwrap();
                    a.write_all(&out[1..mid]).await.unwrap();
                    a.write_all(&out[mid..]).await.unwrap();
                } else {
                    a.write_all(&out).await.unwrap();
                }
                assert_eq!(r.read_frame().await.unwrap().as_deref(), Some(&f[..]));
            }
            assert!(r.buffer_capacity() >= 64 * 1024, "{}", r.buffer_capacity());
            // Idle: the reader waits for a frame while the timer runs.
            let wait = tokio::time::timeout(Duration::from_millis(300), r.read_frame()).await;
            assert!(wait.is_err(), "no frame was sent");
            assert!(
                r.buffer_capacity() <= MAX_HEADER_LEN * 2,
                "round {round}: {} bytes kept while idle",
                r.buffer_capacity()
            );
        }
        drop(a);
        assert_eq!(r.read_frame().await.unwrap(), None);
    }

    #[test]
    fn header_300_is_d8_04() {
        let mut h = [0u8; MAX_HEADER_LEN];
        let n = encode_header(300, &mut h);
        assert_eq!(&h[..n], &[0xd8, 0x04]);
    }
}
