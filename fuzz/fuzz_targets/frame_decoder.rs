//! Arbitrary bytes, split into arbitrary pieces, through the frame decoder.
//!
//! Input: byte 0 picks the frame limit ([`uds_fuzz::LIMITS`]), byte 1 the
//! piece sizes ([`uds_fuzz::pieces`]); the rest is the byte stream.
//!
//! Checks that [`FrameDecoder`] fed piece by piece and [`FrameReader`] over
//! a reader returning the pieces (with a cancelled read before each piece)
//! both find exactly the frames, and end exactly as, a decoder given the
//! whole input at once; that every frame is its header and body, within the
//! limit, and re-encodes to a header that decodes the same; that an error
//! consumes nothing and repeats; and that no declared length makes the
//! reader allocate.
#![no_main]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use uds::frame::__wire::{FrameDecoder, MAX_HEADER_LEN, decode_header, encode_header, put_frame};
use uds::frame::{FrameConfig, FrameError, FrameReader};
use uds_fuzz::{End, frames_oneshot, limit, pieces};

/// Largest read buffer the reader may hold for an input of at most a few
/// KiB, whatever lengths its headers declare (far below the 16 MiB default
/// limit, so allocating from a declared length fails this).
const MAX_CAPACITY: usize = 4 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let [limit_byte, seed, input @ ..] = data else {
        return;
    };
    let max = limit(*limit_byte);
    let (want, end) = frames_oneshot(input, max);
    let want_bodies: Vec<Bytes> = want.iter().map(|f| f.body.clone()).collect();

    // Canonical re-encoding of each frame decodes to the same body.
    for f in &want {
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = encode_header(f.body.len(), &mut hdr);
        assert!(
            n <= f.header_len,
            "canonical header longer than the one read"
        );
        assert_eq!(
            decode_header(&hdr[..n], max).unwrap(),
            Some((n, f.body.len()))
        );
        if n == f.header_len {
            assert_eq!(&hdr[..n], &input[f.start..f.start + n]);
        }
        if !f.body.is_empty() {
            let mut buf = BytesMut::new();
            put_frame(&f.body, &mut buf).unwrap();
            assert_eq!(
                FrameDecoder::new(max).decode(&mut buf).unwrap(),
                Some(f.body.clone())
            );
            assert!(buf.is_empty());
        }
    }

    let parts = pieces(input, *seed);
    let (got, got_end) = decode_in_pieces(&parts, max);
    assert_eq!(got, want_bodies, "piecewise decoding found other frames");
    assert_eq!(got_end, end, "piecewise decoding ended otherwise");

    let (got, got_end) = read_in_pieces(&parts, max, &want, &end);
    assert_eq!(got, want_bodies, "FrameReader found other frames");
    assert_eq!(got_end, end, "FrameReader ended otherwise");
});

fn decode_in_pieces(parts: &[&[u8]], max: usize) -> (Vec<Bytes>, End) {
    let dec = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for p in parts {
        buf.extend_from_slice(p);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(body)) => {
                    assert!(body.len() <= max);
                    got.push(body);
                }
                Ok(None) => break,
                Err(e) => {
                    // Sticky: the buffer is untouched and decoding again
                    // fails the same way.
                    let before = buf.clone();
                    let again = dec.decode(&mut buf).expect_err("error is sticky");
                    assert_eq!(format!("{again:?}"), format!("{e:?}"));
                    assert_eq!(buf, before);
                    return (got, End::Error(format!("{e:?}")));
                }
            }
        }
    }
    let end = if buf.is_empty() {
        End::Clean
    } else {
        End::Incomplete(buf.len())
    };
    (got, end)
}

/// An in-memory reader that returns the pieces one by one, each after one
/// `Pending` (so every read is cancelled once), then EOF.
struct PieceReader {
    pieces: VecDeque<Vec<u8>>,
    pend: bool,
}

impl AsyncRead for PieceReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pend && !this.pieces.is_empty() {
            this.pend = false;
            return Poll::Pending;
        }
        this.pend = true;
        if let Some(mut piece) = this.pieces.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                piece.drain(..n);
                this.pieces.push_front(piece);
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn read_in_pieces(
    parts: &[&[u8]],
    max: usize,
    want: &[uds_fuzz::Found],
    end: &End,
) -> (Vec<Bytes>, End) {
    let reader = PieceReader {
        pieces: parts.iter().map(|p| p.to_vec()).collect(),
        pend: true,
    };
    let config = FrameConfig::default()
        .max_frame_len(max)
        .frame_timeout(None);
    let mut reader = FrameReader::with_config(reader, config);
    let mut got = Vec::new();
    let got_end = loop {
        let r = read_once(&mut reader);
        assert!(
            reader.buffer_capacity() <= MAX_CAPACITY,
            "read buffer grew to {} bytes",
            reader.buffer_capacity()
        );
        match r {
            Ok(Some(body)) => got.push(body),
            Ok(None) => break End::Clean,
            Err(FrameError::Truncated { expected, received }) => {
                assert!(expected > received, "truncated: {expected} <= {received}");
                // Once the header is complete, `expected` is the frame's size.
                if let End::Incomplete(left) = end {
                    let consumed = want
                        .last()
                        .map_or(0, |f| f.start + f.header_len + f.body.len());
                    let tail = &parts.concat()[consumed..];
                    assert_eq!(tail.len(), *left);
                    if let Ok(Some((h, b))) = decode_header(tail, max) {
                        assert_eq!(expected, h + b);
                    }
                }
                break End::Incomplete(received);
            }
            Err(FrameError::Io(e)) => panic!("in-memory reader cannot fail: {e}"),
            Err(e) => break End::Error(format!("{e:?}")),
        }
    };
    // The end is sticky too.
    let again = read_once(&mut reader);
    let again_end = match again {
        Ok(None) => End::Clean,
        Err(FrameError::Truncated { received, .. }) => End::Incomplete(received),
        Err(e) => End::Error(format!("{e:?}")),
        Ok(Some(b)) => panic!("a frame of {} bytes after the end", b.len()),
    };
    assert_eq!(again_end, got_end, "the reader's end is not sticky");
    (got, got_end)
}

/// One `read_frame`, dropping (cancelling) it whenever it is pending.
fn read_once(reader: &mut FrameReader<PieceReader>) -> Result<Option<Bytes>, FrameError> {
    for _ in 0..1_000_000 {
        if let Some(r) = reader.read_frame().now_or_never() {
            return r;
        }
    }
    panic!("read_frame made no progress");
}
