//! `cargo bench -p uds-benches`: the frame codec and the RPC envelope,
//! encode and decode, in nanoseconds per operation.

// Reported figures: float conversions of counts and times lose nothing that matters.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use uds::frame::__wire::{FrameDecoder, put_frame};
use uds::rpc::__wire::Envelope;

fn bench(name: &str, iters: u32, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(iters);
    println!("{name:<40} {ns:>10.1} ns/op");
}

fn main() {
    for size in [16usize, 1024, 102_400] {
        let body = vec![7u8; size];
        let mut out = BytesMut::with_capacity(size + 16);
        bench(&format!("frame encode {size} B"), 200_000, || {
            out.clear();
            put_frame(black_box(&body), &mut out).unwrap_or_default();
        });
        let mut wire = BytesMut::new();
        put_frame(&body, &mut wire).unwrap_or_default();
        let wire = wire.freeze();
        let dec = FrameDecoder::default();
        bench(&format!("frame decode {size} B"), 200_000, || {
            let mut b = BytesMut::from(&wire[..]);
            black_box(dec.decode(&mut b).ok());
        });
        let mut env = Envelope::default();
        env.id = 7;
        env.exp_unix_nano = 4_102_444_800_000_000_000;
        env.method = Bytes::from_static(b"/bench.Echo/Echo");
        env.data = Bytes::from(body.clone());
        let mut buf = Vec::with_capacity(size + 64);
        bench(&format!("envelope encode {size} B"), 200_000, || {
            buf.clear();
            black_box(&env).encode(&mut buf);
        });
        let encoded = Bytes::from(buf.clone());
        bench(&format!("envelope decode {size} B"), 200_000, || {
            black_box(Envelope::decode(black_box(&encoded)).ok());
        });
    }
}
