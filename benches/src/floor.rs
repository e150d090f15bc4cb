//! The floors: the fastest plain echo there is over a Unix socket, one
//! connection per user, a 4-byte little-endian length header, nothing
//! allocated per request. The client writes a frame built once (per payload
//! size) with one `write_all` and reads the reply into a reused buffer; the
//! server reads each whole frame into a reused buffer and echoes it with one
//! `write_all`. [`TokioFloor`] runs on the same tokio runtime as the other
//! rows; [`StdFloor`] is its blocking twin, a thread per connection on both
//! sides.

use std::io::{self, Read, Write};
use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// Bytes of the frame header.
const HEADER: usize = 4;
/// A reused buffer's first size.
const FIRST_BUFFER: usize = 64 * 1024;

/// One user's end: its connection, the request frame and the reply buffer.
#[derive(Debug)]
struct Conn<S> {
    stream: S,
    frame: Vec<u8>,
    buf: Vec<u8>,
}

impl<S> Conn<S> {
    fn new(stream: S) -> Self {
        Conn {
            stream,
            frame: Vec::new(),
            buf: vec![0; FIRST_BUFFER],
        }
    }

    /// The request frame for `payload`, built again only when its size
    /// changes (the harness sends one payload per size).
    fn frame_for(&mut self, payload: &[u8]) -> io::Result<&[u8]> {
        if self.frame.len() != HEADER + payload.len() {
            let len = u32::try_from(payload.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
            self.frame.clear();
            self.frame.extend_from_slice(&len.to_le_bytes());
            self.frame.extend_from_slice(payload);
        }
        Ok(&self.frame)
    }
}

/// The frame length that a buffer starting with a header announces.
fn frame_len(buf: &[u8]) -> usize {
    let mut h = [0u8; HEADER];
    h.copy_from_slice(&buf[..HEADER]);
    HEADER + u32::from_le_bytes(h) as usize
}

/// Reads one whole frame into `buf` (grown only when a frame does not fit),
/// returning its length; `None` at a clean end of stream.
async fn read_frame(
    s: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    let mut filled = 0;
    let mut need = HEADER;
    loop {
        while filled < need {
            let n = s.read(&mut buf[filled..]).await?;
            if n == 0 {
                return if filled == 0 {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            filled += n;
        }
        if need > HEADER || frame_len(buf) == HEADER {
            return Ok(Some(need));
        }
        need = frame_len(buf);
        if buf.len() < need {
            buf.resize(need, 0);
        }
    }
}

/// The blocking twin of [`read_frame`].
fn read_frame_std(s: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let mut filled = 0;
    let mut need = HEADER;
    loop {
        while filled < need {
            let n = s.read(&mut buf[filled..])?;
            if n == 0 {
                return if filled == 0 {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            filled += n;
        }
        if need > HEADER || frame_len(buf) == HEADER {
            return Ok(Some(need));
        }
        need = frame_len(buf);
        if buf.len() < need {
            buf.resize(need, 0);
        }
    }
}

/// The tokio floor: connections to a tokio echo server.
#[derive(Debug)]
pub struct TokioFloor {
    conns: Vec<tokio::sync::Mutex<Conn<UnixStream>>>,
    server: JoinHandle<()>,
}

impl TokioFloor {
    /// Starts the server at `path` and connects `users` users.
    ///
    /// # Errors
    /// If the socket cannot be bound or connected.
    pub async fn start(path: &Path, users: usize) -> io::Result<Self> {
        let listener = UnixListener::bind(path)?;
        let server = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0; FIRST_BUFFER];
                    while let Ok(Some(n)) = read_frame(&mut s, &mut buf).await {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut conns = Vec::with_capacity(users);
        for _ in 0..users {
            conns.push(tokio::sync::Mutex::new(Conn::new(
                UnixStream::connect(path).await?,
            )));
        }
        Ok(TokioFloor { conns, server })
    }

    /// Echoes `payload` on user `user`'s connection; returns the payload
    /// length echoed.
    ///
    /// # Errors
    /// If the connection fails.
    pub async fn echo(&self, user: usize, payload: &[u8]) -> io::Result<usize> {
        let mut guard = self.conns[user % self.conns.len()].lock().await;
        let conn = &mut *guard;
        conn.frame_for(payload)?;
        conn.stream.write_all(&conn.frame).await?;
        let n = read_frame(&mut conn.stream, &mut conn.buf)
            .await?
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        Ok(n - HEADER)
    }

    /// Stops the server.
    pub fn stop(&self) {
        self.server.abort();
    }
}

/// The blocking floor: std sockets, a thread per connection on both sides.
#[derive(Debug)]
pub struct StdFloor {
    conns: Vec<std::sync::Mutex<Conn<std::os::unix::net::UnixStream>>>,
}

impl StdFloor {
    /// Starts the server at `path` (a thread accepting, a thread per
    /// connection) and connects `users` users.
    ///
    /// # Errors
    /// If the socket cannot be bound or connected.
    pub fn start(path: &Path, users: usize) -> io::Result<Self> {
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        // The server threads end when their connections close (when this
        // floor is dropped); the accept thread with the process.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = vec![0; FIRST_BUFFER];
                    while let Ok(Some(n)) = read_frame_std(&mut s, &mut buf) {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut conns = Vec::with_capacity(users);
        for _ in 0..users {
            let stream = std::os::unix::net::UnixStream::connect(path)?;
            conns.push(std::sync::Mutex::new(Conn::new(stream)));
        }
        Ok(StdFloor { conns })
    }

    /// Echoes `payload` on user `user`'s connection, blocking; returns the
    /// payload length echoed.
    ///
    /// # Errors
    /// If the connection fails.
    pub fn echo(&self, user: usize, payload: &[u8]) -> io::Result<usize> {
        let mut guard = self.conns[user % self.conns.len()]
            .lock()
            .map_err(|_| io::Error::other("a user thread panicked"))?;
        let conn = &mut *guard;
        conn.frame_for(payload)?;
        conn.stream.write_all(&conn.frame)?;
        let n =
            read_frame_std(&mut conn.stream, &mut conn.buf)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        Ok(n - HEADER)
    }
}
