//! [`FrameReader`]: frames in from an [`AsyncRead`], bodies handed out
//! without a copy, buffers grown only as bytes arrive.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::header::{FrameDecoder, Header, MAX_HEADER_LEN, split_frame};
use super::spares::Spares;
use super::{FrameConfig, FrameError};

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

/// The body of a large frame being read into an allocation of its own.
#[derive(Debug)]
struct LargeBody {
    /// The body bytes received so far.
    body: BytesMut,
    /// The header of its frame.
    header: Header,
}

impl LargeBody {
    /// Body bytes still to come.
    fn left(&self) -> usize {
        self.header.body_len - self.body.len()
    }

    /// Grows the body buffer, if it is full, by as much as is missing but
    /// at most [`GROWTH_AHEAD`] (or what it holds) at a time.
    fn make_room(&mut self) {
        let have = self.body.len();
        if self.body.capacity() == have {
            self.body.reserve(self.left().min(GROWTH_AHEAD.max(have)));
        }
    }

    /// The error for an end of stream inside this body.
    fn truncated(&self) -> FrameError {
        FrameError::Truncated {
            expected: self.header.frame_len(),
            received: self.header.len + self.body.len(),
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
///
/// Headers are parsed, and small frames split off, by the same code as the
/// synchronous decoder (`frame::__wire::FrameDecoder`) that the fuzz and
/// property tests drive.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    /// The large frame being read, if any.
    large: Option<LargeBody>,
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
    /// [`DEFAULT_IDLE_RELEASE`](super::DEFAULT_IDLE_RELEASE).
    ///
    /// Costs nothing per frame beyond a flag: one timer per reader, polled
    /// only while waiting for a frame to start and reset at most once a
    /// period.
    ///
    /// # Panics
    ///
    /// With a period set, [`read_frame`](Self::read_frame) panics if it
    /// runs outside a tokio runtime with the time driver enabled (as every
    /// tokio timer does).
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
    /// Returns `Ok(None)` at a clean end of stream (between frames). Waiting
    /// for a frame to *start* is unbounded; once its first byte has arrived,
    /// the rest must follow within the frame timeout — measured from that
    /// byte, even across cancelled calls.
    ///
    /// # Errors
    ///
    /// [`FrameError::Truncated`] if the stream ends inside a frame,
    /// [`FrameError::Timeout`] if a started frame does not complete in time,
    /// [`FrameError::Io`] if the read fails, and the header errors of
    /// [`FrameError`] for a malformed or over-limit header. After any of
    /// them but `Io`, close the connection.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled, if a frame
    /// timeout or an idle release period is set.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes already read stay buffered for the next call, and
    /// the frame timeout keeps counting from the frame's first byte.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(done) = self.large.take_if(|l| l.left() == 0) {
                return Ok(Some(self.finish_large(done)));
            }
            if let Some(large) = &mut self.large {
                large.make_room();
                if self.read_large_body().await? == 0 {
                    return Err(self.truncated());
                }
                continue;
            }
            // The header is parsed once per pass and serves every branch.
            let header = self.decoder.header(&self.buf)?;
            if let Some(h) = header
                && h.body_len >= LARGE_BODY
            {
                if let Some(frame) = self.start_large(h) {
                    return Ok(Some(frame));
                }
                continue;
            }
            if let Some(h) = header
                && self.buf.len() >= h.frame_len()
            {
                return Ok(Some(self.finish_small(h)));
            }
            self.reserve(header.map(Header::frame_len));
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

    /// Hands out a small frame that is all in the shared buffer.
    fn finish_small(&mut self, header: Header) -> Bytes {
        let frame = split_frame(&mut self.buf, header);
        self.started = None;
        self.after_large = false;
        self.active = true;
        self.released = false;
        let total = frame.len() + MAX_HEADER_LEN;
        self.hint = self.hint.max((4 * total).min(MAX_BUFFER));
        frame
    }

    /// Moves a large frame's body, as far as it is in the shared buffer, to
    /// a buffer of its own. Returns the body if it was all there; otherwise
    /// the rest is read by later passes.
    fn start_large(&mut self, header: Header) -> Option<Bytes> {
        self.buf.advance(header.len);
        let blen = header.body_len;
        if self.buf.len() >= blen {
            // All here: copy it out (cheaper than a read of its own) so the
            // shared buffer stays free for reuse.
            let mut body = self.spares.take(blen);
            body.extend_from_slice(&self.buf[..blen]);
            self.buf.advance(blen);
            return Some(self.finish_large(LargeBody { body, header }));
        }
        let first = blen.min(GROWTH_AHEAD.max(self.buf.len()));
        let mut body = self.spares.take(first);
        body.extend_from_slice(&self.buf);
        self.buf.clear();
        self.large = Some(LargeBody { body, header });
        None
    }

    /// Hands out the complete large body, keeping its allocation for reuse.
    fn finish_large(&mut self, large: LargeBody) -> Bytes {
        let LargeBody { mut body, header } = large;
        let len = header.body_len;
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

    /// Reads into the large body, at most the bytes it still lacks.
    async fn read_large_body(&mut self) -> Result<usize, FrameError> {
        let Some(large) = &mut self.large else {
            return Ok(0);
        };
        let left = large.left();
        let mut dst = (&mut large.body).limit(left);
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
        if let Some(large) = &self.large {
            return large.truncated();
        }
        let expected = match self.decoder.header(&self.buf) {
            Ok(Some(h)) => h.frame_len(),
            _ => self.buf.len() + 1,
        };
        FrameError::Truncated {
            expected,
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
            + self.large.as_ref().map_or(0, |l| l.body.capacity())
            + self.spares.bytes()
    }

    /// Whether a whole frame is already buffered, so that the next
    /// [`read_frame`](Self::read_frame) returns it without reading (the RPC
    /// server runs a call on the spot only when no other request is at
    /// hand).
    pub(crate) fn frame_ready(&self) -> bool {
        if let Some(large) = &self.large {
            return large.left() == 0;
        }
        matches!(self.decoder.header(&self.buf), Ok(Some(h)) if self.buf.len() >= h.frame_len())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::header::put_frame;

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
}
