//! Typed streams of JSON or protobuf values over one connection,
//! byte-compatible with the Go package's `highlevel/json/stream` and
//! `highlevel/proto/stream`.
//!
//! - [`JsonStream`]: each frame is one JSON value; end of stream is EOF.
//! - [`ProtoStream`]: each frame is a type byte (1 data, 2 close, 3
//!   close-ack) and, for data, the protobuf message. [`ProtoStream::close`]
//!   runs the close handshake to the end on both sides — it keeps reading
//!   until it has the peer's close *and* the ack to its own — so neither side
//!   leaks (the Go side that sees the peer's close first stops reading and
//!   waits forever for its ack).
//!
#![cfg_attr(feature = "json", doc = "```")]
#![cfg_attr(not(feature = "json"), doc = "```ignore")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use uds::stream::JsonStream;
//! let (a, b) = uds::net::pair()?;
//! let mut tx: JsonStream<String> = JsonStream::new(a);
//! let mut rx: JsonStream<String> = JsonStream::new(b);
//! tx.send(&"hello".to_owned()).await?;
//! tx.close().await?;
//! assert_eq!(rx.recv().await?.as_deref(), Some("hello"));
//! assert_eq!(rx.recv().await?, None); // the sender closed
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::codec::CodecError;
#[cfg(feature = "json")]
use crate::codec::Json;
#[cfg(feature = "proto")]
use crate::codec::{Decode, Proto};
use crate::cred::Cred;
use crate::frame::{FrameConfig, FrameError, FrameReader, FrameWriter};
use crate::net::Conn;

/// Default time [`ProtoStream::close`] waits for the peer's side of the
/// close handshake: 10 s.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes of messages [`ProtoStream::close`] keeps for its caller while
/// the peer finishes: 16 MiB. A peer that sends more without closing is a
/// protocol error rather than unbounded memory.
pub const MAX_CLOSE_BACKLOG: usize = 16 * 1024 * 1024;

/// Errors of the stream layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Reading or writing a frame failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A value could not be encoded or decoded.
    #[error("stream value: {0}")]
    Codec(#[from] CodecError),
    /// The peer broke the stream protocol (the source says how).
    #[error("stream protocol error: {0}")]
    Protocol(#[source] ProtocolError),
    /// The connection ended before the peer closed the stream.
    #[error("the peer went away without closing the stream")]
    PeerGone,
    /// The close handshake did not complete in time.
    #[error("the peer did not finish the close handshake within {0:?}")]
    CloseTimeout(Duration),
}

/// How a peer broke the [`ProtoStream`] protocol: the source of
/// [`StreamError::Protocol`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A data frame after the peer's own close.
    #[error("data after the peer's close")]
    DataAfterClose,
    /// More than [`MAX_CLOSE_BACKLOG`] bytes of messages after our close.
    #[error("the peer kept sending after our close")]
    KeptSendingAfterClose,
    /// A close-ack although we never sent a close.
    #[error("close-ack for a close that was never sent")]
    UnexpectedCloseAck,
    /// A frame whose type byte is not data, close or close-ack.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A frame with no type byte.
    #[error("empty frame")]
    EmptyFrame,
}

fn split(
    conn: Conn,
    config: FrameConfig,
) -> (
    FrameReader<OwnedReadHalf>,
    FrameWriter<OwnedWriteHalf>,
    Cred,
) {
    let (stream, peer) = conn.into_parts();
    let (rd, wr) = stream.into_split();
    (
        FrameReader::with_config(rd, config),
        FrameWriter::new(wr),
        peer,
    )
}

/// A stream of JSON values: sends `S`, receives `R`.
#[cfg(feature = "json")]
#[derive(Debug)]
pub struct JsonStream<S, R = S> {
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
    peer: Cred,
    buf: Vec<u8>,
    _types: PhantomData<fn(&S) -> R>,
}

#[cfg(feature = "json")]
impl<S: serde::Serialize, R: serde::de::DeserializeOwned> JsonStream<S, R> {
    /// A stream over `conn` with the default frame limits.
    pub fn new(conn: Conn) -> Self {
        JsonStream::with_config(conn, FrameConfig::default())
    }

    /// A stream over `conn` with the given frame limits.
    pub fn with_config(conn: Conn, config: FrameConfig) -> Self {
        let (reader, writer, peer) = split(conn, config);
        JsonStream {
            reader,
            writer,
            peer,
            buf: Vec::new(),
            _types: PhantomData,
        }
    }

    /// The peer's kernel credentials.
    pub fn peer_cred(&self) -> &Cred {
        &self.peer
    }

    /// Sends one value (one frame).
    ///
    /// # Errors
    ///
    /// [`StreamError::Codec`] if `value` does not serialize (nothing is
    /// sent), [`StreamError::Frame`] if the write fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, it may leave part of a frame on the
    /// connection, and every later `send` fails rather than corrupt it.
    pub async fn send(&mut self, value: &S) -> Result<(), StreamError> {
        self.buf.clear();
        Json::encode_into(value, &mut self.buf)?;
        self.writer.write_frame(&self.buf).await?;
        Ok(())
    }

    /// Receives the next value; `None` when the peer has closed.
    ///
    /// # Errors
    ///
    /// [`StreamError::Frame`] if reading fails or the framing is broken,
    /// [`StreamError::Codec`] if a frame is not the JSON of an `R` (the
    /// stream goes on: the next `recv` reads the next frame).
    ///
    /// # Panics
    ///
    /// If the tokio runtime has no time driver and a frame timeout is set
    /// (the default), as [`FrameReader::read_frame`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a partly read frame stays buffered for the next call.
    pub async fn recv(&mut self) -> Result<Option<R>, StreamError> {
        match self.reader.read_frame().await? {
            None => Ok(None),
            // An empty frame is an error, not `null`, as the Go reader has it.
            Some(frame) => Ok(Some(Json::decode_exact(&frame)?)),
        }
    }

    /// Ends sending (the peer's `recv` returns `None`); receiving goes on.
    ///
    /// # Errors
    ///
    /// [`StreamError::Frame`] if the shutdown fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: call it again.
    pub async fn close(&mut self) -> Result<(), StreamError> {
        self.writer
            .get_mut()
            .shutdown()
            .await
            .map_err(FrameError::Io)?;
        Ok(())
    }
}

#[cfg(feature = "proto")]
const TYPE_DATA: u8 = 1;
#[cfg(feature = "proto")]
const TYPE_CLOSE: u8 = 2;
#[cfg(feature = "proto")]
const TYPE_CLOSE_ACK: u8 = 3;

/// A stream of protobuf messages with the Go package's close handshake:
/// sends `S`, receives `R`.
#[cfg(feature = "proto")]
#[derive(Debug)]
pub struct ProtoStream<S, R = S> {
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
    peer: Cred,
    buf: Vec<u8>,
    sent_close: bool,
    got_close: bool,
    got_ack: bool,
    close_timeout: Duration,
    _types: PhantomData<fn(&S) -> R>,
}

#[cfg(feature = "proto")]
impl<S: prost::Message, R: prost::Message + Default> ProtoStream<S, R> {
    /// A stream over `conn` with the default frame limits.
    pub fn new(conn: Conn) -> Self {
        ProtoStream::with_config(conn, FrameConfig::default())
    }

    /// A stream over `conn` with the given frame limits.
    pub fn with_config(conn: Conn, config: FrameConfig) -> Self {
        let (reader, writer, peer) = split(conn, config);
        ProtoStream {
            reader,
            writer,
            peer,
            buf: Vec::new(),
            sent_close: false,
            got_close: false,
            got_ack: false,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            _types: PhantomData,
        }
    }

    /// How long [`close`](Self::close) waits for the peer (default
    /// [`DEFAULT_CLOSE_TIMEOUT`]).
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The peer's kernel credentials.
    pub fn peer_cred(&self) -> &Cred {
        &self.peer
    }

    /// Sends one message.
    ///
    /// # Errors
    ///
    /// [`StreamError::Codec`] if `msg` does not encode (nothing is sent),
    /// [`StreamError::Frame`] if the write fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, it may leave part of a frame on the
    /// connection, and every later write fails rather than corrupt it.
    pub async fn send(&mut self, msg: &S) -> Result<(), StreamError> {
        // `close` consumes the stream: sending after it cannot compile.
        self.buf.clear();
        self.buf.push(TYPE_DATA);
        Proto::encode_into(msg, &mut self.buf)?;
        self.writer.write_frame(&self.buf).await?;
        Ok(())
    }

    /// Receives the next message; `None` once the peer has closed its side
    /// (its close is acknowledged at once).
    ///
    /// # Errors
    ///
    /// [`StreamError::PeerGone`] if the connection ends without the peer's
    /// close, [`StreamError::Protocol`] if the peer breaks the protocol
    /// (a frame of unknown type, a stray close-ack, data after its close),
    /// [`StreamError::Codec`] if a message does not decode, and
    /// [`StreamError::Frame`] if reading or writing the ack fails.
    ///
    /// # Panics
    ///
    /// If the tokio runtime has no time driver and a frame timeout is set
    /// (the default), as [`FrameReader::read_frame`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe while waiting for a frame, but not across the peer's
    /// close: a `recv` dropped while it writes the acknowledgement leaves
    /// the stream unusable (later calls fail rather than corrupt the
    /// framing).
    pub async fn recv(&mut self) -> Result<Option<R>, StreamError> {
        if self.got_close {
            return Ok(None);
        }
        loop {
            match self.next_frame().await? {
                Event::Data(msg) => return Ok(Some(msg)),
                Event::Closed => return Ok(None),
                Event::Acked => {}
                Event::Eof => return Err(StreamError::PeerGone),
            }
        }
    }

    /// Closes the stream: sends close, acknowledges the peer's close, and
    /// waits until both have happened. Messages the peer sent meanwhile are
    /// returned, not dropped (up to [`MAX_CLOSE_BACKLOG`] bytes; more is a
    /// protocol error). The connection is then shut down.
    ///
    /// # Errors
    ///
    /// [`StreamError::CloseTimeout`] if the handshake does not finish
    /// within the [`close_timeout`](Self::close_timeout), and the errors of
    /// [`recv`](Self::recv) (`PeerGone` only if the peer neither closed
    /// nor acknowledged before hanging up).
    ///
    /// # Panics
    ///
    /// If the tokio runtime it runs on has no time driver (the close
    /// timeout is a tokio timer).
    ///
    /// # Cancel safety
    ///
    /// It consumes the stream: dropped midway, the handshake is abandoned
    /// and the connection closed, as if the stream had been dropped.
    pub async fn close(mut self) -> Result<Vec<R>, StreamError> {
        let limit = self.close_timeout;
        let mut rest = Vec::new();
        let handshake = async {
            if !self.sent_close {
                self.writer.write_frame(&[TYPE_CLOSE]).await?;
                self.sent_close = true;
            }
            let mut backlog = 0usize;
            while !(self.got_close && self.got_ack) {
                match self.next_frame().await? {
                    Event::Data(msg) => {
                        backlog += msg.encoded_len();
                        if backlog > MAX_CLOSE_BACKLOG {
                            return Err(StreamError::Protocol(
                                ProtocolError::KeptSendingAfterClose,
                            ));
                        }
                        rest.push(msg);
                    }
                    Event::Closed | Event::Acked => {}
                    // A peer that acked and hung up (the Go client does, S8)
                    // or closed without acking (the Go defect) is done too.
                    Event::Eof if self.got_close || self.got_ack => break,
                    Event::Eof => return Err(StreamError::PeerGone),
                }
            }
            Ok::<(), StreamError>(())
        };
        tokio::time::timeout(limit, handshake)
            .await
            .map_err(|_| StreamError::CloseTimeout(limit))??;
        let _ = self.writer.get_mut().shutdown().await;
        Ok(rest)
    }

    async fn next_frame(&mut self) -> Result<Event<R>, StreamError> {
        let Some(frame) = self.reader.read_frame().await? else {
            return Ok(Event::Eof);
        };
        match frame.first() {
            Some(&TYPE_DATA) => {
                let msg = <Proto as Decode<R>>::decode(frame.slice(1..))?;
                if self.got_close {
                    return Err(StreamError::Protocol(ProtocolError::DataAfterClose));
                }
                Ok(Event::Data(msg))
            }
            Some(&TYPE_CLOSE) => {
                if !self.got_close {
                    // Ack first: the close counts as seen only once answered.
                    self.writer.write_frame(&[TYPE_CLOSE_ACK]).await?;
                    self.got_close = true;
                }
                Ok(Event::Closed)
            }
            Some(&TYPE_CLOSE_ACK) if self.sent_close => {
                self.got_ack = true;
                Ok(Event::Acked)
            }
            Some(&TYPE_CLOSE_ACK) => Err(StreamError::Protocol(ProtocolError::UnexpectedCloseAck)),
            Some(&other) => Err(StreamError::Protocol(ProtocolError::UnknownFrameType(
                other,
            ))),
            None => Err(StreamError::Protocol(ProtocolError::EmptyFrame)),
        }
    }
}

#[cfg(feature = "proto")]
enum Event<R> {
    Data(R),
    Closed,
    Acked,
    Eof,
}
