//! The authenticated connection type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, Sleep};

use super::error::NetError;
use crate::cred::Cred;

/// A connected Unix stream whose peer's kernel credentials are known.
///
/// Returned by [`Listener::accept`](super::Listener::accept) (peer = the
/// client), [`connect`](super::connect) (peer = the server) and
/// [`pair`](super::pair). It is an [`AsyncRead`] + [`AsyncWrite`]; optional
/// read and write timeouts turn a stalled operation into an
/// [`io::ErrorKind::TimedOut`] error.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    peer: Cred,
    read: Timer,
    write: Timer,
}

/// An inactivity timer for one direction: armed when an operation first has
/// to wait, disarmed when it makes progress. The `Sleep` is allocated once and
/// reset afterwards.
#[derive(Debug, Default)]
struct Timer {
    limit: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Timer {
    fn new(limit: Option<Duration>) -> Self {
        Timer {
            limit,
            sleep: None,
            armed: false,
        }
    }

    /// Called when the operation returned `Pending`: arms the timer if it is
    /// not armed and reports whether it has expired.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        let deadline = Instant::now() + limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        ready!(sleep.as_mut().poll(cx));
        self.armed = false;
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no progress for {limit:?}; the peer stalled"),
        ))
    }

    fn progress(&mut self) {
        self.armed = false;
    }
}

use std::future::Future;

impl Conn {
    pub(crate) fn new(stream: UnixStream, peer: Cred) -> Self {
        Conn {
            stream,
            peer,
            read: Timer::default(),
            write: Timer::default(),
        }
    }

    /// Wraps a connected std socket (for example one inherited from a parent
    /// process), reading its peer's credentials from the kernel. Must be
    /// called inside a tokio runtime.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> Result<Self, NetError> {
        stream
            .set_nonblocking(true)
            .map_err(|e| NetError::io("set_nonblocking", "", e))?;
        let stream =
            UnixStream::from_std(stream).map_err(|e| NetError::io("register socket", "", e))?;
        let peer = Cred::of_peer(&stream)?;
        Ok(Conn::new(stream, peer))
    }

    /// The peer's credentials, read from the kernel when the connection was
    /// made.
    pub fn peer_cred(&self) -> &Cred {
        &self.peer
    }

    /// Fails a read that makes no progress for `timeout` with
    /// [`io::ErrorKind::TimedOut`]. `None` (the default) waits forever.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read = Timer::new(timeout);
    }

    /// Fails a write that makes no progress for `timeout` (the peer stopped
    /// reading) with [`io::ErrorKind::TimedOut`]. `None` (the default) waits
    /// forever.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write = Timer::new(timeout);
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read.limit
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write.limit
    }

    /// The underlying tokio stream and the peer credentials. Timeouts set on
    /// this `Conn` do not carry over.
    pub fn into_parts(self) -> (UnixStream, Cred) {
        (self.stream, self.peer)
    }

    /// The underlying tokio stream.
    pub fn get_ref(&self) -> &UnixStream {
        &self.stream
    }

    /// Turns the connection into a write-only one plus a [`PeerGone`] future
    /// that completes when the peer closes its end (or the connection
    /// breaks). Bytes the peer sends are read and discarded, so a chatty peer
    /// cannot stall detection.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::AsyncWriteExt;
    /// let (a, b) = uds::net::pair()?;
    /// let (mut out, gone) = a.into_write_only();
    /// out.write_all(b"log line\n").await?;
    /// drop(b); // the reader goes away
    /// gone.wait().await?; // we learn it at once, without writing
    /// # Ok(()) }
    /// ```
    pub fn into_write_only(self) -> (WriteOnly, PeerGone) {
        let (read, write) = self.stream.into_split();
        (
            WriteOnly {
                inner: write,
                peer: self.peer,
                write: self.write,
            },
            PeerGone { inner: read },
        )
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.read.poll_expired(cx).map(Err),
        }
    }
}

fn poll_write_timed<W: AsyncWrite + Unpin>(
    w: &mut W,
    timer: &mut Timer,
    cx: &mut Context<'_>,
    op: impl FnOnce(Pin<&mut W>, &mut Context<'_>) -> Poll<io::Result<usize>>,
) -> Poll<io::Result<usize>> {
    match op(Pin::new(w), cx) {
        Poll::Ready(r) => {
            timer.progress();
            Poll::Ready(r)
        }
        Poll::Pending => timer.poll_expired(cx).map(Err),
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_timed(&mut this.stream, &mut this.write, cx, |s, cx| {
            s.poll_write(cx, buf)
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_timed(&mut this.stream, &mut this.write, cx, |s, cx| {
            s.poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The writing side of a connection made write-only by
/// [`Conn::into_write_only`]. Keeps the connection's write timeout.
#[derive(Debug)]
pub struct WriteOnly {
    inner: OwnedWriteHalf,
    peer: Cred,
    write: Timer,
}

impl WriteOnly {
    /// The peer's credentials.
    pub fn peer_cred(&self) -> &Cred {
        &self.peer
    }
}

impl AsyncWrite for WriteOnly {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_timed(&mut this.inner, &mut this.write, cx, |s, cx| {
            s.poll_write(cx, buf)
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Completes when the peer of a write-only connection has gone; see
/// [`Conn::into_write_only`].
#[derive(Debug)]
pub struct PeerGone {
    inner: OwnedReadHalf,
}

impl PeerGone {
    /// Waits until the peer has closed its end (both directions) or the
    /// connection breaks. Returns `Ok(())` then; other errors are passed on.
    ///
    /// A peer that only shuts down its *writing* side (as tokio's
    /// `OwnedWriteHalf` does when dropped) while still reading is not gone:
    /// after end-of-input this waits for the hang-up of the whole socket,
    /// checking every 20 ms.
    pub async fn wait(mut self) -> io::Result<()> {
        let mut scratch = [0u8; 512];
        loop {
            match self.inner.read(&mut scratch).await {
                Ok(0) => break,
                Ok(_) => {} // a write-only peer's input is discarded
                Err(e) if is_gone(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let stream: &UnixStream = self.inner.as_ref();
        loop {
            match stream.ready(tokio::io::Interest::WRITABLE).await {
                Ok(ready) if ready.is_write_closed() => return Ok(()),
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) if is_gone(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}
