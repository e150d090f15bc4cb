//! An RPC server connection fed arbitrary bytes.
//!
//! One server (built once) with small limits, so that short inputs reach
//! queueing, backpressure and size checks: `/echo`, `/fail` (a server
//! error), `/app` (an application error), `/stream` (a server stream of
//! at most one item, so it never waits for credit the input may not grant),
//! `/upload` (a client stream) and `/bidi` (a bidirectional stream echoing
//! at most one item).
//! Each input is written to a fresh connection, whose writing side is then
//! shut down; the replies are read until the server closes.
//!
//! Checks: the server closes the connection within 10 s; what it sends is
//! whole frames (a cut last frame only where the input broke the framing)
//! of envelopes with `err_type` ≤ 4; a reply without an id is a bad-data
//! error; every id replied to was a request's; a successful `/echo` reply
//! carries data some request with that id sent. Every 32 inputs a fresh
//! connection must still get its echo (the server is healthy), and the
//! process's open file count must stay bounded (connections are not leaked).
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uds::frame::__wire::FrameDecoder;
use uds::rpc::{HandlerError, Server};
use uds::rpc::__wire::{Envelope};
use uds_fuzz::{End, frames_oneshot, ignore_sigpipe, runtime};

/// The server's frame limit: below the fuzzer's 4 KiB inputs, so over-limit
/// frames are reached too.
const MAX_FRAME: usize = 2048;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::builder()
            .handler("/echo", |_ctx, req| async move { Ok(req) })
            .handler("/fail", |_ctx, _req| async move {
                Err(HandlerError::server("no"))
            })
            .handler("/app", |_ctx, req| async move {
                Err(HandlerError::application(req, "app says no"))
            })
            .streaming("/stream", |_ctx, req: Bytes| async move {
                let items = (!req.is_empty()).then(|| Ok(req.slice(..1)));
                Ok(futures_util::stream::iter(items))
            })
            .client_streaming("/upload", |_ctx, _req, mut items| async move {
                let mut n = 0usize;
                while let Some(item) = items.next_item().await {
                    n += item.len();
                }
                Ok(Bytes::from(n.to_string()))
            })
            .bidi_streaming("/bidi", |_ctx, _req, items| async move {
                use futures_util::StreamExt;
                // At most one item back, so it never waits for credit.
                Ok(items.take(1).map(Ok::<_, HandlerError>))
            })
            .max_calls_per_connection(2)
            .max_calls(4)
            .max_frame_len(MAX_FRAME)
            .write_queue(256)
            .frame_timeout(Some(Duration::from_secs(2)))
            .write_stall_timeout(Duration::from_secs(5))
            .build()
            .expect("server")
    })
}

/// Writes `input` on a fresh connection, shuts the writing side down, and
/// returns everything the server sends until it closes.
async fn exchange(input: &[u8]) -> Vec<u8> {
    let (client, conn) = uds::net::pair().expect("socket pair");
    server().serve_connection(conn);
    let (client, _) = client.into_parts();
    let (mut rd, mut wr) = client.into_split();
    let write = async {
        // The server may close first (bad framing): a failed write is fine.
        let _ = wr.write_all(input).await;
        let _ = wr.shutdown().await;
    };
    let mut replies = Vec::new();
    let read = rd.read_to_end(&mut replies);
    let (_, read) =
        tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(write, read) })
            .await
            .expect("the server did not close the connection within 10 s");
    // A reset (the server closed with our bytes unread) ends the replies too.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    replies
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fuzz_target!(|input: &[u8]| {
    ignore_sigpipe();
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);

    // What the server reads: the frames before any framing error.
    let (frames, end) = frames_oneshot(input, MAX_FRAME);
    let framing_broken = !matches!(end, End::Clean);
    let mut requests: HashMap<u32, Vec<(Bytes, Bytes)>> = HashMap::new();
    for f in &frames {
        if let Ok(env) = Envelope::decode(&f.body) {
            requests
                .entry(env.id)
                .or_default()
                .push((env.method.clone(), env.data.clone()));
        }
    }

    let replies = runtime().block_on(exchange(input));

    let dec = FrameDecoder::new(MAX_FRAME);
    let mut buf = BytesMut::from(&replies[..]);
    while let Some(body) = dec.decode(&mut buf).expect("the server sends valid frames") {
        let env = Envelope::decode(&body).expect("the server sends valid envelopes");
        assert!(!body.is_empty(), "the server sent an empty frame");
        assert!(
            env.err_type <= 4,
            "err_type {} would panic a Go client",
            env.err_type
        );
        assert!(!env.cancel, "the server sent a cancel");
        if env.id == 0 {
            assert_eq!(
                env.err_type, 3,
                "a reply without id that is not bad data: {env:?}"
            );
            continue;
        }
        let Some(sent) = requests.get(&env.id) else {
            panic!("reply to id {} that no request had: {env:?}", env.id);
        };
        let plain_success = env.err_type == 0 && !env.stream_item && !env.stream_end;
        if plain_success {
            assert!(
                sent.iter()
                    .any(|(m, d)| &m[..] == b"/echo" && d == &env.data),
                "success reply for id {} matches no /echo request: {env:?}",
                env.id
            );
        }
    }
    assert!(
        buf.is_empty() || framing_broken,
        "the server left a cut frame ({} bytes) on a connection it had no reason to break",
        buf.len()
    );

    if run.is_multiple_of(32) {
        // Still healthy: vector A1, answered with the minimal reply.
        let a1 = b"\x34\x08\x01\x10\x80\x80\x98\xb5\xf5\xf9\xb3\xf7\x38\x1a\x05/echo\x22\x05hello";
        let reply = runtime().block_on(exchange(a1));
        assert_eq!(
            reply, b"\x12\x08\x01\x22\x05hello",
            "the server stopped answering"
        );
    }
    if run.is_multiple_of(1024) {
        let n = open_fds();
        assert!(n < 256, "{n} open files: connections leak");
    }
});
