//! Property tests of the pure wire code: frames and envelopes round trip
//! through any split of their bytes, agree with prost where prost applies,
//! and no input makes a decoder panic. The cargo-fuzz targets in `fuzz/`
//! push the same properties much further; these run with the normal suite.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use tokio::io::{AsyncRead, ReadBuf};
use uds::codec::{Decode, Json, Proto};
use uds::frame::__wire::{FrameDecoder, MAX_HEADER_LEN, decode_header, encode_header, put_frame};
use uds::frame::{FrameConfig, FrameError, FrameReader, FrameWriter};
use uds::rpc::__wire::Envelope;

/// Cases per property: the whole file runs in about a second in debug.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// A reader that returns `data` in pieces of the given sizes (cycled), then
/// EOF.
struct PieceReader {
    data: VecDeque<u8>,
    sizes: Vec<usize>,
    next: usize,
}

impl PieceReader {
    fn new(data: &[u8], sizes: &[usize]) -> Self {
        PieceReader {
            data: data.iter().copied().collect(),
            sizes: if sizes.is_empty() {
                vec![usize::MAX]
            } else {
                sizes.to_vec()
            },
            next: 0,
        }
    }
}

impl AsyncRead for PieceReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let size = this.sizes[this.next % this.sizes.len()];
        this.next += 1;
        let n = size.min(buf.remaining()).min(this.data.len());
        for b in this.data.drain(..n) {
            buf.put_slice(&[b]);
        }
        Poll::Ready(Ok(()))
    }
}

/// Frame bodies: mostly small, some past the reader's 8 KiB read chunk and
/// the writer's 32 KiB direct-write threshold.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 1..64),
        2 => vec(any::<u8>(), 64..2_000),
        1 => vec(any::<u8>(), 30_000..40_000),
    ]
}

/// Feeds `wire` to a decoder in pieces of the given sizes; returns the
/// bodies and what is left, or the error.
fn decode_in_pieces(
    wire: &[u8],
    sizes: &[usize],
    max: usize,
) -> (Vec<Bytes>, Result<BytesMut, FrameError>) {
    let dec = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut rest = wire;
    let mut i = 0;
    loop {
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(body)) => got.push(body),
                Ok(None) => break,
                Err(e) => return (got, Err(e)),
            }
        }
        if rest.is_empty() {
            return (got, Ok(buf));
        }
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(rest.len());
        let (piece, tail) = rest.split_at(n.clamp(1, rest.len()));
        buf.extend_from_slice(piece);
        rest = tail;
        i += 1;
    }
}

/// Reads every frame of `reader` to the end (the reader never pends).
fn read_all(reader: &mut FrameReader<PieceReader>) -> Result<Vec<Bytes>, FrameError> {
    let mut got = Vec::new();
    while let Some(body) = reader.read_frame().now_or_never().expect("never pending")? {
        got.push(body);
    }
    Ok(got)
}

proptest! {
    #![proptest_config(config())]

    /// Any sequence of bodies, encoded and cut at any points, decodes to the
    /// same bodies, both with the decoder and through `FrameWriter` and
    /// `FrameReader`.
    #[test]
    fn frames_round_trip_through_any_split(
        bodies in vec(body(), 0..12),
        sizes in vec(1usize..100, 0..20),
        queue_mask in any::<u32>(),
    ) {
        let mut wire = BytesMut::new();
        for b in &bodies {
            put_frame(b, &mut wire).unwrap();
        }
        let (got, left) = decode_in_pieces(&wire, &sizes, 64 * 1024);
        prop_assert_eq!(&got, &bodies);
        prop_assert!(left.unwrap().is_empty());

        // The writer, queueing some frames and writing others, produces the
        // same bytes.
        let mut writer = FrameWriter::new(Vec::new());
        for (i, b) in bodies.iter().enumerate() {
            if (queue_mask >> (i % 32)) & 1 == 1 {
                writer.queue(b).unwrap();
            } else {
                writer.write_frame(b).now_or_never().unwrap().unwrap();
            }
        }
        writer.flush().now_or_never().unwrap().unwrap();
        prop_assert_eq!(&writer.get_ref()[..], &wire[..]);

        let config = FrameConfig::default().max_frame_len(64 * 1024).frame_timeout(None);
        let mut reader = FrameReader::with_config(PieceReader::new(&wire, &sizes), config);
        prop_assert_eq!(read_all(&mut reader).unwrap(), bodies);
    }

    /// A limit below one body's length: the frames before it arrive, then a
    /// `TooLarge` naming it, whatever the split.
    #[test]
    fn the_first_frame_over_the_limit_stops_decoding(
        bodies in vec(vec(any::<u8>(), 1..200), 1..10),
        sizes in vec(1usize..50, 0..10),
        pick in any::<prop::sample::Index>(),
    ) {
        let over = pick.get(&bodies).len();
        let max = over - 1;
        let first_bad = bodies.iter().position(|b| b.len() > max).unwrap();
        let mut wire = BytesMut::new();
        for b in &bodies {
            put_frame(b, &mut wire).unwrap();
        }
        let (got, end) = decode_in_pieces(&wire, &sizes, max);
        prop_assert_eq!(&got[..], &bodies[..first_bad]);
        let bad_len = bodies[first_bad].len() as u64;
        prop_assert!(
            matches!(end, Err(FrameError::TooLarge { declared, max: m }) if declared == bad_len && m == max),
            "{:?}", end
        );
    }

    /// Every length's header decodes back to it, and no strict prefix of it
    /// is complete.
    #[test]
    fn any_length_header_round_trips(len in 0u64..(1 << 62)) {
        let len = usize::try_from(len).unwrap();
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = encode_header(len, &mut hdr);
        prop_assert_eq!(decode_header(&hdr[..n], usize::MAX).unwrap(), Some((n, len)));
        for cut in 0..n {
            prop_assert_eq!(decode_header(&hdr[..cut], usize::MAX).unwrap(), None);
        }
    }

    /// Any envelope round trips, and is encoded byte for byte as prost
    /// encodes the same fields (so a Go peer reads it as we meant it).
    #[test]
    fn envelopes_round_trip_and_match_prost(fields in envelope_fields()) {
        let env = fields.envelope();
        let mut out = Vec::new();
        env.encode(&mut out);
        prop_assert_eq!(out.len(), env.encoded_len());
        prop_assert_eq!(&out, &fields.encode_to_vec());
        prop_assert_eq!(ProstEnvelope::decode(&out[..]).unwrap(), fields);
        prop_assert_eq!(Envelope::decode(&Bytes::from(out)).unwrap(), env);
    }

    /// Unknown fields of every wire type between the known ones are skipped.
    #[test]
    fn unknown_fields_are_skipped(
        fields in envelope_fields(),
        number in 7u32..16,
        wire_type in prop_oneof![Just(0u32), Just(1), Just(2), Just(5)],
        payload in vec(any::<u8>(), 0..20),
    ) {
        let env = fields.envelope();
        let mut out = Vec::new();
        env.encode(&mut out);
        let mut unknown = Vec::new();
        put_varint(&mut unknown, u64::from((number << 3) | wire_type));
        match wire_type {
            0 => put_varint(&mut unknown, u64::from_le_bytes(pad(&payload))),
            1 => unknown.extend_from_slice(&pad::<8>(&payload)),
            5 => unknown.extend_from_slice(&pad::<4>(&payload)),
            _ => {
                put_varint(&mut unknown, payload.len() as u64);
                unknown.extend_from_slice(&payload);
            }
        }
        out.splice(0..0, unknown);
        prop_assert_eq!(Envelope::decode(&Bytes::from(out)).unwrap(), env);
    }

    /// No byte string panics the frame decoder or its header parser; what
    /// it takes is exactly header and body, within the limit.
    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(
        data in vec(any::<u8>(), 0..300),
        max in prop_oneof![Just(0usize), 1usize..300, Just(usize::MAX)],
    ) {
        let _ = decode_header(&data, max);
        let dec = FrameDecoder::new(max);
        let mut buf = BytesMut::from(&data[..]);
        let mut pos = 0;
        while let Ok(Some(body)) = dec.decode(&mut buf) {
            prop_assert!(body.len() <= max);
            let end = data.len() - buf.len();
            prop_assert_eq!(&data[end - body.len()..end], &body[..]);
            let (h, b) = decode_header(&data[pos..], max).unwrap().unwrap();
            prop_assert_eq!((pos + h + b, b), (end, body.len()));
            pos = end;
        }
    }

    /// Any bytes, in any pieces, through `FrameReader` give exactly the
    /// frames the decoder finds in them at once, and end as it does: clean
    /// if nothing is left, `Truncated` with what is left, or the decoder's
    /// error. The reader parses with the decoder's code; this checks the
    /// paths around it (large bodies, buffer growth, refills).
    #[test]
    fn arbitrary_bytes_read_in_pieces_end_as_the_decoder_does(
        data in prop_oneof![
            vec(any::<u8>(), 0..300),
            // Valid large frames followed by noise: the large-body path.
            (vec(body(), 0..4), vec(any::<u8>(), 0..40)).prop_map(|(bodies, tail)| {
                let mut wire = BytesMut::new();
                for b in &bodies {
                    put_frame(b, &mut wire).unwrap();
                }
                wire.extend_from_slice(&tail);
                wire.to_vec()
            }),
        ],
        sizes in vec(1usize..9000, 0..10),
        max in prop_oneof![Just(0usize), 1usize..300, Just(64 * 1024), Just(usize::MAX)],
    ) {
        let (want, end) = decode_in_pieces(&data, &[], max);
        let config = FrameConfig::default().max_frame_len(max).frame_timeout(None);
        let mut reader = FrameReader::with_config(PieceReader::new(&data, &sizes), config);
        let mut got = Vec::new();
        let got_end = loop {
            match reader.read_frame().now_or_never().expect("never pending") {
                Ok(Some(body)) => got.push(body),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        prop_assert_eq!(&got, &want);
        match (end, got_end) {
            (Ok(rest), Ok(())) => prop_assert!(rest.is_empty(), "{} bytes left", rest.len()),
            (Ok(rest), Err(FrameError::Truncated { received, .. })) => {
                prop_assert!(!rest.is_empty());
                prop_assert_eq!(received, rest.len());
            }
            (Err(want), Err(got)) => prop_assert_eq!(format!("{want:?}"), format!("{got:?}")),
            (want, got) => prop_assert!(false, "decoder ended {:?}, reader {:?}", want, got),
        }
    }

    /// No byte string panics the envelope decoder; whatever decodes
    /// re-encodes to at most its size and decodes the same again.
    #[test]
    fn arbitrary_bytes_never_panic_the_envelope_decoder(data in vec(any::<u8>(), 0..200)) {
        if let Ok(env) = Envelope::decode(&Bytes::from(data.clone())) {
            let _ = (env.method_str(), env.err_text());
            let mut out = Vec::new();
            env.encode(&mut out);
            prop_assert!(out.len() <= data.len());
            prop_assert_eq!(Envelope::decode(&Bytes::from(out)).unwrap(), env);
        }
    }

    /// Valid envelopes with bytes flipped or cut off never panic it either
    /// (random bytes rarely get past the first tag; these do).
    #[test]
    fn damaged_envelopes_never_panic_the_envelope_decoder(
        fields in envelope_fields(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut out = fields.encode_to_vec();
        if out.is_empty() {
            return Ok(());
        }
        for (at, byte) in flips {
            let i = at.index(out.len());
            out[i] ^= byte;
        }
        out.truncate(cut.index(out.len() + 1));
        let _ = Envelope::decode(&Bytes::from(out));
    }

    /// The value codecs reject rather than panic on any bytes.
    #[test]
    fn arbitrary_bytes_never_panic_the_codecs(data in vec(any::<u8>(), 0..200)) {
        let data = Bytes::from(data);
        let _ = <Json as Decode<serde_json::Value>>::decode(data.clone());
        let _ = <Json as Decode<Vec<String>>>::decode(data.clone());
        let _ = <Proto as Decode<ProstEnvelope>>::decode(data);
    }
}

/// The envelope's fields as prost declares them (strings as `bytes`: the
/// envelope keeps them raw).
// The booleans mirror the wire's proto3 `bool` fields one to one.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, PartialEq, prost::Message)]
struct ProstEnvelope {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(int64, tag = "2")]
    exp_unix_nano: i64,
    #[prost(bytes = "vec", tag = "3")]
    method: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    data: Vec<u8>,
    #[prost(uint32, tag = "5")]
    err_type: u32,
    #[prost(bytes = "vec", tag = "6")]
    err: Vec<u8>,
    #[prost(bool, tag = "16")]
    cancel: bool,
    #[prost(bool, tag = "17")]
    app_error: bool,
    #[prost(bool, tag = "18")]
    stream_item: bool,
    #[prost(bool, tag = "19")]
    stream_end: bool,
    #[prost(uint32, tag = "20")]
    credit: u32,
}

impl ProstEnvelope {
    fn envelope(&self) -> Envelope {
        let mut e = Envelope::default();
        e.id = self.id;
        e.exp_unix_nano = self.exp_unix_nano;
        e.method = Bytes::from(self.method.clone());
        e.data = Bytes::from(self.data.clone());
        e.err_type = self.err_type;
        e.err = Bytes::from(self.err.clone());
        e.cancel = self.cancel;
        e.app_error = self.app_error;
        e.stream_item = self.stream_item;
        e.stream_end = self.stream_end;
        e.credit = self.credit;
        e
    }
}

/// Any envelope: each field absent (the default) half the time, so that
/// omitted and present fields mix.
fn envelope_fields() -> impl Strategy<Value = ProstEnvelope> {
    fn maybe<T: std::fmt::Debug + Clone + Default>(
        s: impl Strategy<Value = T>,
    ) -> impl Strategy<Value = T> {
        prop_oneof![Just(T::default()), s]
    }
    (
        (
            maybe(any::<u32>()),
            maybe(any::<i64>()),
            maybe(vec(any::<u8>(), 0..40)),
            maybe(vec(any::<u8>(), 0..300)),
            maybe(any::<u32>()),
            maybe(vec(any::<u8>(), 0..40)),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            maybe(any::<u32>()),
        ),
    )
        .prop_map(
            |(
                (id, exp_unix_nano, method, data, err_type, err),
                (cancel, app_error, stream_item, stream_end, credit),
            )| ProstEnvelope {
                id,
                exp_unix_nano,
                method,
                data,
                err_type,
                err,
                cancel,
                app_error,
                stream_item,
                stream_end,
                credit,
            },
        )
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn pad<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = b.len().min(N);
    out[..n].copy_from_slice(&b[..n]);
    out
}
