//! Hostile peers against a live `rpc::Server` on a real socket.
//!
//! Every attack runs while a well-behaved client ([`Steady`]) keeps calling
//! the same server. Each test asserts that the attack ends in a typed error
//! reply or a clean close, that nothing panicked (a counting panic hook sees
//! panics inside the server's tasks, which tokio would otherwise swallow),
//! that memory stays bounded, and that the well-behaved client was served
//! during the attack and still is after it. The malformed inputs are those
//! of `PROTOCOL.md` §6.6; the last two tests turn the tables and
//! attack the client from a hostile server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uds::frame::__wire::{MAX_HEADER_LEN, encode_header};
use uds::frame::FrameReader;
use uds::rpc::__wire::Envelope;
use uds::rpc::{CallOptions, Client, RpcError, Server, ServerBuilder};
use uds_tests::raw::RawPeer;
use uds_tests::{Steady, envelope_frame, hex, panics_so_far, rss_kib};

/// Tests that measure this process's memory run one at a time, so that one
/// does not count another's allocations.
static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 2100-01-01: a deadline that never passes during a test.
const FAR: i64 = 4_102_444_800_000_000_000;

fn header(len: usize) -> Vec<u8> {
    let mut h = [0u8; MAX_HEADER_LEN];
    let n = encode_header(len, &mut h);
    h[..n].to_vec()
}

fn request(id: u32, method: &[u8], data: &[u8]) -> Vec<u8> {
    let mut e = Envelope::default();
    e.id = id;
    e.exp_unix_nano = FAR;
    e.method = Bytes::copy_from_slice(method);
    e.data = Bytes::copy_from_slice(data);
    envelope_frame(&e)
}

/// A server on a real socket, with a well-behaved client calling it.
struct Live {
    server: Server,
    path: PathBuf,
    _dir: tempfile::TempDir,
    steady: Steady,
    /// Runs of `/echo`, the method the attacks name (the steady client
    /// calls `/good`).
    echo_runs: Arc<AtomicUsize>,
    panics: usize,
}

/// Starts a server with `/good` and `/echo` (both echo), configured by
/// `configure`, and a steady client that has already been served.
async fn live(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Live {
    let panics = panics_so_far();
    let echo_runs = Arc::new(AtomicUsize::new(0));
    let runs = echo_runs.clone();
    let builder = Server::builder()
        .handler("/good", |_, req| async move { Ok(req) })
        .handler("/echo", move |_, req| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move { Ok(req) }
        });
    let server = configure(builder).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.sock");
    server.serve(uds::net::Listener::bind(&path).unwrap());
    let steady = Steady::start(Client::connect(&path).await.unwrap(), "/good");
    steady.reach(0, 3).await;
    Live {
        server,
        path,
        _dir: dir,
        steady,
        echo_runs,
        panics,
    }
}

impl Live {
    async fn attacker(&self) -> RawPeer {
        RawPeer::connect(&self.path).await
    }

    /// The end of every test: the steady client is still served, a new
    /// client is served, nothing panicked, and the server shuts down cleanly.
    async fn finish(self) {
        let since = self.steady.calls();
        self.steady.reach(since, 3).await;
        let fresh = Client::connect(&self.path).await.unwrap();
        assert_eq!(fresh.call("/good", "after").await.unwrap(), "after");
        let total = self.steady.finish().await;
        assert_eq!(
            panics_so_far(),
            self.panics,
            "something panicked during the test"
        );
        drop(fresh);
        let report = self.server.shutdown(Duration::from_secs(10)).await;
        assert!(report.graceful, "{report:?}");
        eprintln!("the well-behaved client made {total} calls, all served");
    }
}

/// The connection is still served: a request gets its reply.
async fn still_served(raw: &mut RawPeer, id: u32) {
    raw.send(&request(id, b"/good", b"alive")).await;
    let (_, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type, &r.data[..]), (id, 0, &b"alive"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_input_of_vectors_section_6_on_a_live_server() {
    // A frame timeout far beyond the bounds below: a close seen here comes
    // from the framing checks, not from the timer.
    let live = live(|b| b.frame_timeout(Some(Duration::from_secs(60)))).await;
    let at_once = Duration::from_secs(5);

    // D1: a body that is not an envelope. Bad data with id 0 (there is no
    // id to echo), the raw bytes not echoed; the framing is intact, so the
    // connection goes on.
    let since = live.steady.calls();
    let mut raw = live.attacker().await;
    raw.send(&hex("06 ffffff")).await;
    let (body, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type), (0, 3), "D1");
    assert!(!body.windows(3).any(|w| w == [0xff; 3]), "D1 echoed");
    still_served(&mut raw, 101).await;
    live.steady.reach(since, 3).await;

    // D2 negative length, D3 varint overflow, D5 2^40 declared: protocol
    // errors; the server closes at once, without a reply.
    for (name, bytes) in [
        ("D2", hex("01")),
        ("D3", hex("ffffffffffffffffffffff")),
        ("D5", hex("808080808040 00000000000000000000")),
    ] {
        let since = live.steady.calls();
        let mut raw = live.attacker().await;
        raw.send(&bytes).await;
        raw.expect_close(at_once, name).await;
        live.steady.reach(since, 3).await;
    }

    // D4: a truncated body, then EOF: closed quietly, no handler runs.
    let since = live.steady.calls();
    let mut raw = live.attacker().await;
    raw.send(&hex("14 7878787878")).await;
    raw.wr.shutdown().await.unwrap();
    raw.expect_close(at_once, "D4").await;
    live.steady.reach(since, 3).await;

    // D6: an unknown field (ignored) and a 1970 deadline: deadline exceeded
    // with id 1, the handler not run.
    let since = live.steady.calls();
    let mut raw = live.attacker().await;
    raw.send(&hex("22 0801100a1a052f6563686f22026869380f"))
        .await;
    let (_, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type), (1, 2), "D6");
    still_served(&mut raw, 106).await;
    live.steady.reach(since, 3).await;

    // A5: an empty frame is not a valid request: bad data, id 0; served on.
    let since = live.steady.calls();
    let mut raw = live.attacker().await;
    raw.send(&hex("00")).await;
    let (_, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type), (0, 3), "A5");
    still_served(&mut raw, 105).await;
    live.steady.reach(since, 3).await;

    assert_eq!(
        live.echo_runs.load(Ordering::SeqCst),
        0,
        "no malformed request reached a handler"
    );
    live.finish().await;
}

/// Waits for the server to close an attacker's connection while the
/// attacker sends one byte every 100 ms (nothing, if `trickle` is false);
/// returns how long the connection lasted.
async fn held_until_closed(mut raw: RawPeer, trickle: bool) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let limit = Duration::from_secs(15);
    loop {
        assert!(start.elapsed() < limit, "still open after {limit:?}");
        tokio::select! {
            r = raw.rd.get_mut().read(&mut buf) => match r {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(n) => panic!("the server sent {n} bytes to a slowloris peer"),
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if trickle && raw.wr.write_all(b"x").await.is_err() {
                    return start.elapsed();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_peers_are_cut_at_the_frame_timeout() {
    const FRAME_TIMEOUT: Duration = Duration::from_secs(1);
    const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
    let live = live(|b| {
        b.frame_timeout(Some(FRAME_TIMEOUT))
            .idle_timeout(Some(IDLE_TIMEOUT))
    })
    .await;
    let mut attacks = Vec::new();
    // 20 peers send half a frame (a header declaring 100 bytes, and 10 of
    // them) and stall.
    for _ in 0..20 {
        let mut raw = live.attacker().await;
        raw.send(&[header(100), vec![b'x'; 10]].concat()).await;
        attacks.push(("half a frame", tokio::spawn(held_until_closed(raw, false))));
    }
    // 5 peers trickle a frame declaring 1000 bytes, one byte every 100 ms:
    // they make progress, but the frame cannot complete within the timeout.
    for _ in 0..5 {
        let mut raw = live.attacker().await;
        raw.send(&header(1000)).await;
        attacks.push(("trickle", tokio::spawn(held_until_closed(raw, true))));
    }
    // One peer connects and never sends a byte: only the idle timeout
    // bounds it.
    let idle = tokio::spawn(held_until_closed(live.attacker().await, false));
    let since = live.steady.calls();
    let mut served_while_stalled = None;
    for (kind, attack) in attacks {
        let lasted = attack.await.unwrap();
        served_while_stalled.get_or_insert(live.steady.calls() - since);
        // Not before the frame timeout (measured by the server from the
        // first byte, which arrived after our clock started), and not
        // indefinitely.
        assert!(
            lasted >= FRAME_TIMEOUT * 9 / 10,
            "{kind}: cut after {lasted:?}"
        );
        assert!(
            lasted < Duration::from_secs(10),
            "{kind}: lasted {lasted:?}"
        );
    }
    let lasted = idle.await.unwrap();
    assert!(
        lasted >= IDLE_TIMEOUT * 9 / 10,
        "idle peer cut after {lasted:?}"
    );
    // The well-behaved client went on being served while 25 peers stalled
    // (the first of them was cut after a full second).
    let served = served_while_stalled.unwrap();
    assert!(served >= 10, "only {served} calls served during the stall");
    live.finish().await;
}

/// The highest RSS seen until `stop` is set, sampled every 10 ms.
fn sample_peak_rss(stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = rss_kib();
        while !stop.load(Ordering::SeqCst) {
            peak = peak.max(rss_kib());
            std::thread::sleep(Duration::from_millis(10));
        }
        peak.max(rss_kib())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_without_reading_is_cut_off_with_memory_bounded() {
    const STALL: Duration = Duration::from_millis(500);
    let _memory = MEMORY.lock().await;
    let live = live(|b| {
        b.max_calls_per_connection(16)
            .write_queue(256 * 1024)
            .write_stall_timeout(STALL)
    })
    .await;
    let rss_before = rss_kib();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peak_rss(stop.clone());

    // The attacker sends 16 KiB echo requests as fast as it can and never
    // reads a reply.
    let mut raw = live.attacker().await;
    let data = vec![0x5a; 16 * 1024];
    let mut batch = Vec::new();
    let mut next_id = 1u32;
    let since = live.steady.calls();
    let start = Instant::now();
    let cap: u64 = 256 << 20;
    let mut written: u64 = 0;
    let cut = loop {
        batch.clear();
        for _ in 0..16 {
            batch.extend_from_slice(&request(next_id, b"/echo", &data));
            next_id = next_id.checked_add(1).unwrap();
        }
        let sent = tokio::time::timeout(Duration::from_secs(30), raw.wr.write_all(&batch)).await;
        let Ok(sent) = sent else {
            panic!("a write blocked for 30 s: the server neither read nor closed");
        };
        match sent {
            Ok(()) => written += batch.len() as u64,
            Err(e) => break e,
        }
        assert!(
            written < cap,
            "the server read {} MiB of requests from a peer that never reads \
             replies, and did not cut it off",
            written >> 20
        );
    };
    let lasted = start.elapsed();
    let served_during = live.steady.calls() - since;
    stop.store(true, Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    assert!(
        matches!(
            cut.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{cut:?}"
    );
    eprintln!(
        "flood: {} KiB written before the server cut the connection after {lasted:?}; \
         RSS {rss_before} KiB before, peak {peak} KiB; {served_during} good calls meanwhile",
        written >> 10
    );
    // The server stopped reading once its queues were full (a few hundred
    // requests of 16 KiB), then cut the peer at its write-stall timeout.
    assert!(
        written < 64 << 20,
        "{} MiB read before the cut",
        written >> 20
    );
    assert!(
        lasted >= STALL,
        "cut after {lasted:?}, before the stall timeout"
    );
    let grown = peak.saturating_sub(rss_before);
    assert!(
        grown < 64 * 1024,
        "RSS grew by {grown} KiB during the flood"
    );
    assert!(
        served_during >= 5,
        "only {served_during} good calls during the flood"
    );
    live.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_length_headers_close_at_once_before_reading_or_allocating() {
    let _memory = MEMORY.lock().await;
    // A frame timeout far beyond the bound below: the close must come from
    // the header check alone.
    let live = live(|b| b.frame_timeout(Some(Duration::from_secs(60)))).await;
    let rss_before = rss_kib();
    let limit = uds::frame::DEFAULT_MAX_FRAME_LEN;
    for declared in [1usize << 40, limit + 1, 1 << 62, (1 << 63) - 1] {
        let since = live.steady.calls();
        let mut raw = live.attacker().await;
        // Only the header: the body never comes, and the connection stays
        // open on our side.
        raw.send(&header(declared)).await;
        raw.expect_close(Duration::from_secs(5), &format!("{declared} declared"))
            .await;
        live.steady.reach(since, 3).await;
    }
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
    live.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_name_that_is_not_utf8_gets_bad_data_with_its_id() {
    let live = live(|b| b).await;
    let mut raw = live.attacker().await;
    let since = live.steady.calls();
    let bad: [&[u8]; 4] = [
        b"/\xff\xfe",     // bytes that are never UTF-8
        b"/echo\xc3\x28", // a broken two-byte sequence
        b"/\xc0\xaf",     // an overlong encoding of '/'
        b"/\xed\xa0\x80", // a UTF-16 surrogate
    ];
    for (id, method) in (1..).zip(bad) {
        raw.send(&request(id, method, b"x")).await;
        let (body, r) = raw.reply_within(Duration::from_secs(5)).await;
        assert_eq!((r.id, r.err_type), (id, 3), "{method:x?}");
        let text = std::str::from_utf8(&r.err).expect("the error text is UTF-8");
        assert!(text.contains("UTF-8"), "{text}");
        assert!(
            !body.windows(method.len()).any(|w| w == method),
            "the raw method was echoed"
        );
    }
    // A cancellation naming a junk method is still just a cancellation of
    // an unknown id: ignored, no reply.
    let mut cancel = Envelope::default();
    cancel.id = 77;
    cancel.cancel = true;
    cancel.method = Bytes::from_static(b"\xff\xff");
    raw.send(&envelope_frame(&cancel)).await;
    // A 1 MiB method name that is not registered: method not found with the
    // id, and the reply quotes only a bounded piece of it.
    let long = [b"/".as_slice(), &vec![b'a'; 1 << 20]].concat();
    raw.send(&request(9, &long, b"")).await;
    let (body, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type), (9, 1));
    assert!(
        body.len() < 1024,
        "a {} byte reply to a long name",
        body.len()
    );
    still_served(&mut raw, 10).await;
    live.steady.reach(since, 3).await;
    assert_eq!(live.echo_runs.load(Ordering::SeqCst), 0);
    live.finish().await;
}

/// A hostile server on a real socket: answers each request with whatever
/// `respond` returns (raw bytes), and nothing for cancellations.
fn fake_server(
    path: &Path,
    respond: impl Fn(&Envelope) -> Vec<u8> + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let listener = uds::net::Listener::bind(path).unwrap();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap().into_parts();
            let respond = respond.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut rd = FrameReader::new(rd);
                while let Ok(Some(body)) = rd.read_frame().await {
                    let req = Envelope::decode(&body).unwrap();
                    if req.cancel {
                        continue;
                    }
                    if wr.write_all(&respond(&req)).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_err_types_from_a_hostile_server_are_typed_errors() {
    let panics = panics_so_far();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile-server.sock");
    // `/echo` works; `/weird` answers with the err_type its request names,
    // an error text that is not UTF-8, stray data and the app_error flag.
    let server = fake_server(&path, |req| {
        let mut reply = Envelope::default();
        reply.id = req.id;
        if req.method_str() == Some("/echo") {
            reply.data = req.data.clone();
        } else {
            reply.err_type = std::str::from_utf8(&req.data).unwrap().parse().unwrap();
            reply.err = Bytes::from_static(b"odd \xff\xfe text");
            reply.data = Bytes::from_static(b"\x00\x01");
            reply.app_error = true;
        }
        envelope_frame(&reply)
    });
    let client = Client::connect(&path).await.unwrap();
    let steady = Steady::start(client.clone(), "/echo");
    steady.reach(0, 3).await;
    for code in [5u32, 6, 99, 1000, u32::MAX] {
        let since = steady.calls();
        let e = client
            .call_with("/weird", code.to_string().into(), CallOptions::default())
            .await
            .unwrap_err();
        assert_eq!(
            e,
            RpcError::Unknown {
                code,
                message: "odd \u{fffd}\u{fffd} text".into()
            }
        );
        assert!(!e.is_retryable(), "{e:?}");
        assert_eq!(e.code(), None);
        // The other calls on this client go on.
        assert!(!client.is_closed());
        steady.reach(since, 3).await;
    }
    assert_eq!(client.call("/echo", "after").await.unwrap(), "after");
    steady.finish().await;
    assert_eq!(panics_so_far(), panics, "something panicked");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_server_declaring_a_huge_reply_fails_the_calls_at_once() {
    let _memory = MEMORY.lock().await;
    let panics = panics_so_far();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile-server.sock");
    let requests = Arc::new(AtomicU64::new(0));
    let seen = requests.clone();
    // Reads requests and answers none until the fourth, which gets a frame
    // header declaring 2^40 bytes (vector D5, server to client).
    let server = fake_server(&path, move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 3 {
            hex("808080808040")
        } else {
            Vec::new()
        }
    });
    // One connection: the fake server counts requests, and a second
    // connection's probe would be one of them.
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .max_connections(1)
        .connect(&path)
        .await
        .unwrap();
    let rss_before = rss_kib();
    let mut calls = Vec::new();
    for _ in 0..4 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            let r = c.call("/x", "y").await;
            (r, Instant::now())
        }));
        // In order, so that the fourth request is the last one sent.
        while requests.load(Ordering::SeqCst) < calls.len() as u64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let poisoned_at = Instant::now();
    for call in calls {
        let (r, at) = call.await.unwrap();
        assert!(
            matches!(&r, Err(RpcError::Protocol { reason }) if reason.contains("exceeds")),
            "{r:?}"
        );
        assert!(
            at.duration_since(poisoned_at) < Duration::from_secs(5),
            "failed at once, not at the 60 s deadline"
        );
    }
    assert!(client.is_closed());
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
    assert_eq!(panics_so_far(), panics, "something panicked");
    server.abort();
}
