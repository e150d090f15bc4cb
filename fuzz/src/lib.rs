//! Helpers shared by the fuzz targets: a reference frame splitter, a
//! deterministic piece splitter, a runtime built once, and the protobuf
//! message of the stream vectors.

use std::sync::{Once, OnceLock};

use bytes::{Bytes, BytesMut};
use uds::frame::DEFAULT_MAX_FRAME_LEN;
use uds::frame::__wire::{FrameDecoder, MAX_HEADER_LEN, decode_header};

/// Frame limits a target picks from with one input byte: small ones so that
/// short inputs reach the over-limit paths, and the default.
pub const LIMITS: [usize; 12] = [
    0,
    1,
    2,
    5,
    16,
    63,
    64,
    127,
    300,
    1024,
    4096,
    DEFAULT_MAX_FRAME_LEN,
];

/// The frame limit selected by `byte`.
pub fn limit(byte: u8) -> usize {
    LIMITS[usize::from(byte) % LIMITS.len()]
}

/// One frame found by [`frames_oneshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Offset of its header in the input.
    pub start: usize,
    /// Length of its header.
    pub header_len: usize,
    /// Its body.
    pub body: Bytes,
}

/// How a byte stream ends once every complete frame is taken off it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Nothing left over.
    Clean,
    /// This many bytes of an incomplete frame are left over.
    Incomplete(usize),
    /// A framing error (its `Debug` text) at the first frame that is not
    /// taken.
    Error(String),
}

/// The frames of `input` decoded from one buffer holding all of it: the
/// reference every other way of reading the same bytes is compared with.
/// Checks on the way that each frame is exactly its header and body.
pub fn frames_oneshot(input: &[u8], max: usize) -> (Vec<Found>, End) {
    let dec = FrameDecoder::new(max);
    let mut buf = BytesMut::from(input);
    let mut found = Vec::new();
    let mut pos = 0;
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(body)) => {
                assert!(
                    body.len() <= max,
                    "frame of {} over limit {max}",
                    body.len()
                );
                let consumed = input.len() - buf.len();
                let header_len = consumed - pos - body.len();
                assert!((1..=MAX_HEADER_LEN).contains(&header_len));
                let header = &input[pos..pos + header_len];
                assert_eq!(
                    decode_header(header, usize::MAX).expect("a taken header is valid"),
                    Some((header_len, body.len())),
                    "the consumed header declares the body's length"
                );
                assert_eq!(&input[pos + header_len..consumed], &body[..]);
                found.push(Found {
                    start: pos,
                    header_len,
                    body,
                });
                pos = consumed;
            }
            Ok(None) => {
                let left = input.len() - pos;
                assert_eq!(left, buf.len(), "an incomplete frame consumes nothing");
                if left == 0 {
                    return (found, End::Clean);
                }
                if let Some((h, b)) = decode_header(&input[pos..], max).expect("no error now") {
                    assert!(h + b > left, "a complete frame was left in the buffer");
                }
                return (found, End::Incomplete(left));
            }
            Err(e) => {
                assert_eq!(input.len() - pos, buf.len(), "an error consumes nothing");
                return (found, End::Error(format!("{e:?}")));
            }
        }
    }
}

/// Splits `data` into pieces whose sizes follow from `seed`: the low three
/// bits pick the largest piece (1 byte to 4 KiB), the rest seed a xorshift.
pub fn pieces(data: &[u8], seed: u8) -> Vec<&[u8]> {
    const LARGEST: [usize; 8] = [1, 2, 3, 5, 8, 17, 64, 4096];
    let largest = LARGEST[usize::from(seed & 7)];
    let mut x = u32::from(seed) | 0x9e37_7900;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (1 + x as usize % largest).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

/// A current-thread runtime with I/O and timers, built once per process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Ignores `SIGPIPE`, as every Rust program does before `main` (libFuzzer's
/// `main` is not Rust's, so without this a write to a closed socket would
/// kill the fuzzer instead of failing with `EPIPE`).
pub fn ignore_sigpipe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: setting a signal's disposition to SIG_IGN has no
        // preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    });
}

/// The message of the stream vectors (`PROTOCOL.md` §6.5).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    /// Field 1.
    #[prost(int32, tag = "1")]
    pub id: i32,
    /// Field 2.
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// The envelope's fields as prost sees them (strings as `bytes`, since the
/// envelope keeps them raw): an independent decoder and encoder to compare
/// the hand-written ones with.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProstEnvelope {
    /// Field 1.
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// Field 2.
    #[prost(int64, tag = "2")]
    pub exp_unix_nano: i64,
    /// Field 3.
    #[prost(bytes = "vec", tag = "3")]
    pub method: Vec<u8>,
    /// Field 4.
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
    /// Field 5.
    #[prost(uint32, tag = "5")]
    pub err_type: u32,
    /// Field 6.
    #[prost(bytes = "vec", tag = "6")]
    pub err: Vec<u8>,
    /// Field 16.
    #[prost(bool, tag = "16")]
    pub cancel: bool,
    /// Field 17.
    #[prost(bool, tag = "17")]
    pub app_error: bool,
    /// Field 18.
    #[prost(bool, tag = "18")]
    pub stream_item: bool,
    /// Field 19.
    #[prost(bool, tag = "19")]
    pub stream_end: bool,
    /// Field 20.
    #[prost(uint32, tag = "20")]
    pub credit: u32,
}

impl ProstEnvelope {
    /// The same fields as `env`.
    pub fn from_envelope(env: &uds::rpc::__wire::Envelope) -> Self {
        ProstEnvelope {
            id: env.id,
            exp_unix_nano: env.exp_unix_nano,
            method: env.method.to_vec(),
            data: env.data.to_vec(),
            err_type: env.err_type,
            err: env.err.to_vec(),
            cancel: env.cancel,
            app_error: env.app_error,
            stream_item: env.stream_item,
            stream_end: env.stream_end,
            credit: env.credit,
        }
    }
}
