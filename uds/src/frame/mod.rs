//! Chunk framing, wire-compatible with the Go package's `highlevel/chunk`.
//!
//! A frame is the body length as Go's **signed** varint (`binary.PutVarint`:
//! zigzag, then base-128 little-endian groups) followed by the body. Length 5
//! is the byte `0x0a`, 300 is `0xd8 0x04`.
//!
//! The decoder checks the declared length before allocating anything: a
//! negative length, an overflowing varint or a length over the configured
//! maximum is a [`FrameError`], and the connection should be closed. Bodies
//! are handed out as [`Bytes`](bytes::Bytes) split off a reused read buffer, without a
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

//! # Layout
//!
//! - `header`: the length header and the synchronous decoder, the one
//!   implementation of frame parsing;
//! - `reader`: [`FrameReader`], which parses with that decoder;
//! - `writer`: [`FrameWriter`];
//! - `spares`: reuse of large-body allocations by the reader.
//!
//! The wire-level functions (header encoding and decoding, the synchronous
//! decoder) are in [`__wire`], hidden: they are for the fuzz and property
//! tests, not a stable API.

use std::io;
use std::time::Duration;

mod header;
mod reader;
mod spares;
mod writer;

pub(crate) use header::{MAX_HEADER_LEN, encode_header};
pub use reader::FrameReader;
pub use writer::FrameWriter;

/// Wire internals, public for the fuzz targets, the property tests and the
/// benchmarks only. Not a stable API: it changes without notice.
#[doc(hidden)]
pub mod __wire {
    pub use super::header::{
        FrameDecoder, MAX_HEADER_LEN, decode_header, encode_header, put_frame,
    };
}

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
///
/// Built from [`FrameConfig::default`] and its setters (the fields can be
/// read, and more may be added):
///
/// ```
/// use std::time::Duration;
/// use uds::frame::FrameConfig;
/// let config = FrameConfig::default()
///     .max_frame_len(1 << 20)
///     .frame_timeout(Some(Duration::from_secs(2)));
/// assert_eq!(config.max_frame_len, 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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

impl FrameConfig {
    /// Sets the largest body accepted, in bytes.
    #[must_use]
    pub const fn max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Sets the time a frame may take to arrive once started; `None` waits
    /// forever.
    #[must_use]
    pub const fn frame_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.frame_timeout = timeout;
        self
    }
}
