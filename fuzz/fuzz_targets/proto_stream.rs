//! A `ProtoStream` reading arbitrary bytes from its peer.
//!
//! Input: byte 0 picks the frame limit ([`uds_fuzz::limit`], bits 1–7) and
//! whether to `close()` the stream once `recv` has ended (bit 0); the rest is
//! what the peer sends before shutting its writing side down.
//!
//! The stream runs over a real socket pair. A model of the protocol
//! (`PROTOCOL.md` §4.2) written from the spec, over the frames the reference
//! decoder finds, predicts every message `recv` returns, how `recv` ends,
//! what `close` returns and the exact bytes the stream writes back (acks and
//! its own close). The peer's EOF is always there, so `close` must never time
//! out.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uds::frame::FrameConfig;
use uds::stream::{ProtoStream, StreamError};
use uds_fuzz::{End, Item, frames_oneshot, ignore_sigpipe, limit, runtime};

/// How a call ended, as far as the model can tell.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// `recv`: `Ok(None)`; `close`: `Ok(rest)`.
    Done(Vec<Item>),
    /// `StreamError::Frame`.
    Frame,
    /// `StreamError::Codec`.
    Codec,
    /// `StreamError::Protocol`.
    Protocol,
    /// `StreamError::PeerGone`.
    PeerGone,
}

fn outcome_of<T>(r: &Result<T, StreamError>, done: impl FnOnce(&T) -> Vec<Item>) -> Outcome {
    match r {
        Ok(v) => Outcome::Done(done(v)),
        Err(StreamError::Frame(_)) => Outcome::Frame,
        Err(StreamError::Codec(_)) => Outcome::Codec,
        Err(StreamError::Protocol(_)) => Outcome::Protocol,
        Err(StreamError::PeerGone) => Outcome::PeerGone,
        Err(e) => panic!("unexpected stream error: {e:?}"),
    }
}

const CLOSE: [u8; 2] = [0x02, 0x02];
const ACK: [u8; 2] = [0x02, 0x03];

/// The spec's view of the stream's side of the conversation.
struct Model {
    frames: std::vec::IntoIter<bytes::Bytes>,
    end: End,
    sent_close: bool,
    got_close: bool,
    got_ack: bool,
    /// Bytes the stream writes, in order.
    written: Vec<u8>,
}

enum Ev {
    Data(Item),
    Closed,
    Acked,
    Eof,
}

impl Model {
    /// The next frame's event, or the error it is.
    fn next(&mut self) -> Result<Ev, Outcome> {
        let Some(f) = self.frames.next() else {
            return match self.end {
                End::Clean => Ok(Ev::Eof),
                End::Incomplete(_) | End::Error(_) => Err(Outcome::Frame),
            };
        };
        match f.first() {
            Some(1) => {
                let item = Item::decode(&f[1..]).map_err(|_| Outcome::Codec)?;
                if self.got_close {
                    return Err(Outcome::Protocol); // data after the peer's close
                }
                Ok(Ev::Data(item))
            }
            Some(2) => {
                if !self.got_close {
                    self.written.extend_from_slice(&ACK);
                    self.got_close = true;
                }
                Ok(Ev::Closed)
            }
            Some(3) if self.sent_close => {
                self.got_ack = true;
                Ok(Ev::Acked)
            }
            _ => Err(Outcome::Protocol), // stray ack, unknown type, empty frame
        }
    }

    /// `recv` until it returns something other than a message.
    fn recv_all(&mut self, items: &mut Vec<Item>) -> Outcome {
        loop {
            if self.got_close {
                return Outcome::Done(Vec::new());
            }
            match self.next() {
                Ok(Ev::Data(item)) => items.push(item),
                Ok(Ev::Closed) => return Outcome::Done(Vec::new()),
                Ok(Ev::Acked) => {}
                Ok(Ev::Eof) => return Outcome::PeerGone,
                Err(o) => return o,
            }
        }
    }

    fn close(&mut self) -> Outcome {
        if !self.sent_close {
            self.written.extend_from_slice(&CLOSE);
            self.sent_close = true;
        }
        let mut rest = Vec::new();
        while !(self.got_close && self.got_ack) {
            match self.next() {
                Ok(Ev::Data(item)) => rest.push(item),
                Ok(Ev::Closed | Ev::Acked) => {}
                Ok(Ev::Eof) if self.got_close || self.got_ack => break,
                Ok(Ev::Eof) => return Outcome::PeerGone,
                Err(o) => return o,
            }
        }
        Outcome::Done(rest)
    }
}

fuzz_target!(|data: &[u8]| {
    let [cfg, input @ ..] = data else {
        return;
    };
    ignore_sigpipe();
    let max = limit(cfg >> 1);
    let do_close = cfg & 1 == 1;

    let (frames, end) = frames_oneshot(input, max);
    let mut model = Model {
        frames: frames
            .into_iter()
            .map(|f| f.body)
            .collect::<Vec<_>>()
            .into_iter(),
        end,
        sent_close: false,
        got_close: false,
        got_ack: false,
        written: Vec::new(),
    };
    let mut want_items = Vec::new();
    let want_recv = model.recv_all(&mut want_items);
    let want_close = do_close.then(|| model.close());

    runtime().block_on(async {
        let (ours, peer) = uds::net::pair().expect("socket pair");
        let config = FrameConfig::default()
            .max_frame_len(max)
            .frame_timeout(Some(Duration::from_secs(5)));
        let mut stream: ProtoStream<Item, Item> =
            ProtoStream::with_config(ours, config).close_timeout(Duration::from_secs(5));
        let (peer, _) = peer.into_parts();
        let (mut peer_rd, mut peer_wr) = peer.into_split();
        // The input is a few KiB: it fits in the socket buffer at once.
        peer_wr.write_all(input).await.expect("write input");
        peer_wr.shutdown().await.expect("shutdown peer");

        let mut items = Vec::new();
        let got_recv = loop {
            let r = stream.recv().await;
            match r {
                Ok(Some(item)) => items.push(item),
                other => break outcome_of(&other, |_| Vec::new()),
            }
        };
        assert_eq!(items, want_items, "recv returned other messages");
        assert_eq!(got_recv, want_recv, "recv ended otherwise");
        if got_recv == Outcome::Done(Vec::new()) {
            assert!(
                matches!(stream.recv().await, Ok(None)),
                "recv after the peer's close is not None"
            );
        }
        if let Some(want_close) = want_close {
            let r = stream.close().await;
            if let Err(StreamError::CloseTimeout(_)) = r {
                panic!("close timed out although the peer is at EOF");
            }
            assert_eq!(
                outcome_of(&r, Clone::clone),
                want_close,
                "close ended otherwise"
            );
        } else {
            drop(stream);
        }
        let mut written = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), peer_rd.read_to_end(&mut written))
            .await
            .expect("the stream's side closes")
            .expect("read what the stream wrote");
        assert_eq!(written, model.written, "the stream wrote other bytes");
    });
});
