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
    ///
    /// # Errors
    /// [`NetError::NoRuntime`] outside a tokio runtime; [`NetError::Io`] if
    /// the socket cannot be made non-blocking or
    /// registered with tokio; [`NetError::Cred`] if its peer's credentials
    /// cannot be read (e.g. it is not connected).
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> Result<Self, NetError> {
        super::require_runtime()?;
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

    /// Splits the connection into a read half and a write half that can be
    /// used from different tasks. Unlike [`into_parts`](Self::into_parts),
    /// each half keeps this connection's timeout for its direction and the
    /// peer's credentials, and offers the socket operations a protocol on
    /// top needs ([`WriteHalf::set_send_buffer`],
    /// [`WriteHalf::shutdown_write`], [`ReadHalf::peer_hung_up`]).
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let (read, write) = self.stream.into_split();
        (
            ReadHalf {
                inner: read,
                peer: self.peer.clone(),
                read: self.read,
            },
            WriteHalf {
                inner: write,
                peer: self.peer,
                write: self.write,
            },
        )
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
    ///
    /// # Errors
    /// A read error other than the peer's reset or hang-up.
    ///
    /// # Cancel safety
    /// Cancel safe; what the peer sent meanwhile is discarded either way.
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

/// The reading side of a [`Conn`] split by [`Conn::into_split`]: an
/// [`AsyncRead`] that keeps the connection's read timeout.
#[derive(Debug)]
pub struct ReadHalf {
    inner: OwnedReadHalf,
    peer: Cred,
    read: Timer,
}

impl ReadHalf {
    /// The peer's credentials.
    pub fn peer_cred(&self) -> &Cred {
        &self.peer
    }

    /// The read timeout kept from the connection.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read.limit
    }

    /// Whether the peer has closed its end entirely (both directions, not
    /// just its writing side), waiting up to `within` for the socket to
    /// say so. A broken connection counts as closed; no answer within the
    /// time, as open.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits for readiness.
    pub async fn peer_hung_up(&self, within: Duration) -> bool {
        let stream: &UnixStream = self.inner.as_ref();
        match tokio::time::timeout(within, stream.ready(tokio::io::Interest::WRITABLE)).await {
            Ok(Ok(ready)) => ready.is_write_closed(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.read.poll_expired(cx).map(Err),
        }
    }
}

/// The writing side of a [`Conn`] split by [`Conn::into_split`]: an
/// [`AsyncWrite`] that keeps the connection's write timeout, plus
/// non-blocking vectored writes for a writer that batches frames itself.
#[derive(Debug)]
pub struct WriteHalf {
    inner: OwnedWriteHalf,
    peer: Cred,
    write: Timer,
}

impl WriteHalf {
    /// The peer's credentials.
    pub fn peer_cred(&self) -> &Cred {
        &self.peer
    }

    /// The write timeout kept from the connection: how long a write may
    /// make no progress. A writer using
    /// [`try_write_vectored`](Self::try_write_vectored) and
    /// [`writable`](Self::writable) applies it itself.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write.limit
    }

    /// Writes what the socket takes now, without waiting.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] if the socket takes nothing now, or
    /// the write's error.
    pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.inner.try_write_vectored(bufs)
    }

    /// Waits until the socket may take more bytes.
    ///
    /// # Errors
    ///
    /// The socket's error, if it has one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits for readiness.
    pub async fn writable(&self) -> io::Result<()> {
        self.inner.writable().await
    }

    /// Asks the kernel for a send buffer of `bytes` (`SO_SNDBUF`; Linux
    /// doubles the value and caps it at `net.core.wmem_max`). It bounds the
    /// bytes in flight to the peer.
    ///
    /// # Errors
    ///
    /// The `setsockopt` error.
    pub fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        use std::os::fd::AsFd;
        let stream: &UnixStream = self.inner.as_ref();
        crate::sys::set_send_buffer(stream.as_fd(), bytes)
    }

    /// Shuts the socket's writing side down (`shutdown(SHUT_WR)`): the peer
    /// reads end-of-stream once it has read everything written before. The
    /// read half goes on working.
    ///
    /// # Errors
    ///
    /// The `shutdown` error (e.g. the peer is already gone).
    pub fn shutdown_write(&self) -> io::Result<()> {
        use std::os::fd::AsFd;
        let stream: &UnixStream = self.inner.as_ref();
        crate::sys::shutdown_write(stream.as_fd())
    }
}

impl AsyncWrite for WriteHalf {
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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_timed(&mut this.inner, &mut this.write, cx, |s, cx| {
            s.poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod split_tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_halves_keep_the_connection_s_timeouts() {
        let (mut a, _b) = super::super::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_millis(20)));
        a.set_write_timeout(Some(Duration::from_secs(7)));
        let (mut rd, wr) = a.into_split();
        assert_eq!(rd.read_timeout(), Some(Duration::from_millis(20)));
        assert_eq!(wr.write_timeout(), Some(Duration::from_secs(7)));
        let mut buf = [0u8; 1];
        let err = rd.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn shutdown_write_ends_the_peer_s_input_and_keeps_reading() {
        let (a, b) = super::super::pair().unwrap();
        let (mut ard, awr) = a.into_split();
        let (mut brd, mut bwr) = b.into_split();
        awr.set_send_buffer(64 * 1024).unwrap();
        assert_eq!(
            awr.try_write_vectored(&[std::io::IoSlice::new(b"hi")])
                .unwrap(),
            2
        );
        awr.shutdown_write().unwrap();
        let mut got = Vec::new();
        brd.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi");
        assert!(
            !ard.peer_hung_up(Duration::from_millis(10)).await,
            "b still reads"
        );
        bwr.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        ard.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }

    #[tokio::test]
    async fn a_peer_that_closed_its_end_has_hung_up() {
        let (a, b) = super::super::pair().unwrap();
        let (mut rd, _wr) = a.into_split();
        drop(b);
        let mut buf = [0u8; 1];
        assert_eq!(rd.read(&mut buf).await.unwrap(), 0);
        assert!(rd.peer_hung_up(Duration::from_secs(5)).await);
    }
}
