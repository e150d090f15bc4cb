//! A raw peer for the tests that speak bytes to a server: frames out as
//! they are given, replies in as decoded envelopes.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use uds::frame::{FrameError, FrameReader};
use uds::rpc::__wire::Envelope;
use uds::rpc::Server;

/// An attacker's (or a Go client's) raw connection to a server.
#[derive(Debug)]
pub struct RawPeer {
    /// Frames from the server.
    pub rd: FrameReader<OwnedReadHalf>,
    /// Bytes to the server.
    pub wr: OwnedWriteHalf,
}

impl RawPeer {
    /// Connects to the server at `path` (with the default client checks).
    pub async fn connect(path: &Path) -> RawPeer {
        let conn = uds::net::connect(path).await.expect("connect");
        RawPeer::from_conn(conn)
    }

    /// A connection to `server` over a socket pair.
    pub fn serve_on(server: &Server) -> RawPeer {
        let (a, b) = uds::net::pair().expect("socket pair");
        server.serve_connection(b);
        RawPeer::from_conn(a)
    }

    fn from_conn(conn: uds::net::Conn) -> RawPeer {
        let (stream, _) = conn.into_parts();
        let (rd, wr) = stream.into_split();
        RawPeer {
            rd: FrameReader::new(rd),
            wr,
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("write to the server");
    }

    /// Writes the bytes a hex string spells (see [`crate::hex`]).
    pub async fn send_hex(&mut self, frame_hex: &str) {
        self.send(&crate::hex(frame_hex)).await;
    }

    /// Writes one frame carrying `e`.
    pub async fn send_envelope(&mut self, e: &Envelope) {
        self.send(&crate::envelope_frame(e)).await;
    }

    /// The next reply within `within`: a valid envelope, never with an
    /// `err_type` a Go client would choke on. Panics on a close.
    pub async fn reply_within(&mut self, within: Duration) -> (Bytes, Envelope) {
        let body = tokio::time::timeout(within, self.rd.read_frame())
            .await
            .unwrap_or_else(|_| panic!("a reply within {within:?}"))
            .expect("a readable frame")
            .expect("a reply, not a close");
        let env = Envelope::decode(&body).expect("a decodable reply");
        assert!(env.err_type <= 4, "err_type {} sent", env.err_type);
        (body, env)
    }

    /// The next reply within 10 s; see [`RawPeer::reply_within`].
    pub async fn reply(&mut self) -> (Bytes, Envelope) {
        self.reply_within(Duration::from_secs(10)).await
    }

    /// The server closes the connection within `within`, sending nothing
    /// first.
    pub async fn expect_close(&mut self, within: Duration, what: &str) {
        let Ok(got) = tokio::time::timeout(within, self.rd.read_frame()).await else {
            panic!("{what}: not closed within {within:?}");
        };
        match got {
            Ok(None) => {}
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{what}: expected a close, got {other:?}"),
        }
    }
}
