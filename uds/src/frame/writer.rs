//! [`FrameWriter`]: frames out to an [`AsyncWrite`], small ones coalesced,
//! large ones written from the caller's buffer.

use std::io;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::FrameError;
use super::header::{MAX_HEADER_LEN, encode_header, put_frame};

/// Bodies at least this large are written straight from the caller's buffer
/// (vectored write) instead of being copied into the write buffer.
const DIRECT_WRITE_MIN: usize = 32 * 1024;

/// Initial size of the write buffer.
const WRITE_BUFFER: usize = 8 * 1024;

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
            buf: BytesMut::with_capacity(WRITE_BUFFER),
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
    ///
    /// # Errors
    ///
    /// [`FrameError::Empty`] for an empty body; [`FrameError::Io`]
    /// (`BrokenPipe`) if an earlier write failed or was cancelled midway.
    pub fn queue(&mut self, body: &[u8]) -> Result<(), FrameError> {
        self.check()?;
        put_frame(body, &mut self.buf)
    }

    /// Writes everything queued.
    ///
    /// # Errors
    ///
    /// [`FrameError::Io`]: the write failed, or an earlier one failed or was
    /// cancelled midway (`BrokenPipe`). The writer is unusable after either.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, it may leave part of a frame on the
    /// stream, and every later write fails with `BrokenPipe`.
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
    ///
    /// # Errors
    ///
    /// As [`queue`](Self::queue) and [`flush`](Self::flush).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`flush`](Self::flush).
    pub async fn write_frame(&mut self, body: &[u8]) -> Result<(), FrameError> {
        if body.len() < DIRECT_WRITE_MIN {
            self.queue(body)?;
            return self.flush().await;
        }
        self.check()?;
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
async fn write_all_vectored<W: AsyncWrite + Unpin>(
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
