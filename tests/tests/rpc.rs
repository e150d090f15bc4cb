//! RPC behaviour: every error path, cancellation, connection loss, bounds,
//! shutdown, concurrency and leaks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use uds::rpc::{BuildError, CallOptions, Client, HandlerError, RpcError, Server};
use uds_tests::DropFlag;
use uds_tests::raw::RawPeer;

fn pair_client(server: &Server) -> Client {
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    Client::new(a)
}

/// Waits up to 5 s for `f()` to hold.
async fn eventually(what: &str, f: impl FnMut() -> bool) {
    uds_tests::eventually(what, Duration::from_secs(5), f).await;
}

#[tokio::test]
async fn handler_errors_and_panics_are_server_errors_and_the_connection_goes_on() {
    let server = Server::builder()
        .handler("/fail", |_, _| async move {
            // Any Display error converts with `?`.
            std::fs::read("/nonexistent/uds-test")
                .map_err(|_| std::io::Error::other("disk on fire"))?;
            Ok(Bytes::new())
        })
        .handler("/panic", |_, req| async move {
            assert!(req.is_empty(), "handler bug");
            Ok(req)
        })
        .handler("/bad", |_, _| async move {
            Err(HandlerError::bad_data("wrong shape"))
        })
        .handler("/ok", |_, req| async move { Ok(req) })
        .build()
        .unwrap();
    let client = pair_client(&server);
    assert_eq!(
        client.call("/fail", "").await,
        Err(RpcError::Server {
            message: "disk on fire".into()
        })
    );
    let p = client.call("/panic", "boom").await.unwrap_err();
    assert!(
        matches!(&p, RpcError::Server { message } if message.contains("panicked")),
        "{p:?}"
    );
    assert_eq!(
        client.call("/bad", "").await,
        Err(RpcError::BadData {
            message: "wrong shape".into()
        })
    );
    assert_eq!(
        client.call("/ok", "still here").await.unwrap(),
        "still here"
    );
    assert!(!p.is_retryable());
}

fn request(id: u32, method: &str, exp_in: Option<Duration>) -> uds::rpc::__wire::Envelope {
    let mut e = uds::rpc::__wire::Envelope::default();
    e.id = id;
    e.method = Bytes::copy_from_slice(method.as_bytes());
    if let Some(d) = exp_in {
        let at = std::time::SystemTime::now() + d;
        e.exp_unix_nano =
            i64::try_from(at.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()).unwrap();
    }
    e
}

#[tokio::test]
async fn the_server_cuts_a_handler_at_its_deadline_and_fires_its_token() {
    // A raw client with no timer of its own: only the server enforces it.
    let dropped = Arc::new(AtomicBool::new(false));
    let token = Arc::new(std::sync::Mutex::new(None));
    let (d2, t2) = (dropped.clone(), token.clone());
    let server = Server::builder()
        .handler("/slow", move |ctx, _| {
            let flag = DropFlag(d2.clone());
            *t2.lock().unwrap() = Some(ctx.cancellation());
            async move {
                let _flag = flag;
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(Bytes::new())
            }
        })
        .build()
        .unwrap();
    let mut raw = RawPeer::serve_on(&server);
    let start = Instant::now();
    raw.send_envelope(&request(5, "/slow", Some(Duration::from_millis(150))))
        .await;
    let reply = raw.reply_within(Duration::from_secs(5)).await.1;
    assert_eq!(
        (reply.id, reply.err_type),
        (5, 2),
        "deadline exceeded, with the id"
    );
    assert!(start.elapsed() >= Duration::from_millis(140));
    eventually("handler dropped at its deadline", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    let token = token.lock().unwrap().clone().expect("handler ran");
    assert!(
        token.is_cancelled(),
        "the cancellation token fires at the deadline"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_frees_its_slots() {
    let server = Server::builder()
        .max_calls(2)
        .write_queue(64 * 1024)
        .write_stall_timeout(Duration::from_millis(300))
        .handler(
            "/big",
            |_, _| async move { Ok(Bytes::from(vec![1u8; 1 << 20])) },
        )
        .handler("/small", |_, req| async move { Ok(req) })
        .build()
        .unwrap();
    // The hog asks for megabytes of replies and never reads them.
    let mut hog = RawPeer::serve_on(&server);
    for id in 1..=8 {
        hog.send_envelope(&request(id, "/big", None)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A well-behaved client gets served once the hog is cut off.
    let client = pair_client(&server);
    let start = Instant::now();
    let r = client
        .call_with(
            "/small",
            "ok".into(),
            CallOptions::timeout(Duration::from_secs(5)),
        )
        .await;
    assert_eq!(r.unwrap(), "ok");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    drop(hog);
}

#[tokio::test]
async fn dropping_a_call_cancels_it_on_the_server() {
    let dropped = Arc::new(AtomicBool::new(false));
    let token_fired = Arc::new(AtomicBool::new(false));
    let (d2, t2) = (dropped.clone(), token_fired.clone());
    let server = Server::builder()
        .handler("/wait", move |ctx, _| {
            let flag = DropFlag(d2.clone());
            let token = ctx.cancellation();
            let t2 = t2.clone();
            // Work outside the future watches the token.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(token.cancelled());
                t2.store(true, Ordering::SeqCst);
            });
            async move {
                let _flag = flag;
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(Bytes::new())
            }
        })
        .build()
        .unwrap();
    let client = pair_client(&server);
    let call = client.call("/wait", "");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .is_err()
    );
    eventually("handler future dropped", || dropped.load(Ordering::SeqCst)).await;
    eventually("cancellation token fired", || {
        token_fired.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test]
async fn go_compatible_client_sends_no_cancellation() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d2 = dropped.clone();
    let server = Server::builder()
        .handler("/wait", move |_, _| {
            let flag = DropFlag(d2.clone());
            async move {
                let _flag = flag;
                // Never ends by itself: only a cancellation (or the server's
                // end) drops it, however slow the machine.
                std::future::pending::<()>().await;
                Ok(Bytes::new())
            }
        })
        .build()
        .unwrap();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let client = Client::builder().go_compatible(true).build(a);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), client.call("/wait", ""))
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!dropped.load(Ordering::SeqCst), "no cancel frame was sent");
}

#[tokio::test]
async fn connection_loss_fails_every_pending_call_at_once() {
    // A server that reads requests and never answers, then goes away.
    let (a, b) = uds::net::pair().unwrap();
    let client = Client::builder().timeout(Duration::from_secs(30)).build(a);
    let mut calls = Vec::new();
    for i in 0..8 {
        let c = client.clone();
        calls.push(tokio::spawn(
            async move { c.call("/x", format!("{i}")).await },
        ));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let closed_at = Instant::now();
    drop(b);
    for call in calls {
        let r = call.await.unwrap();
        assert!(matches!(r, Err(RpcError::ConnectionClosed { .. })), "{r:?}");
    }
    assert!(
        closed_at.elapsed() < Duration::from_millis(100),
        "failed at once, not at the deadline"
    );
    assert!(client.is_closed());
    assert!(matches!(
        client.call("/x", "").await,
        Err(RpcError::ConnectionClosed { .. })
    ));
}

#[tokio::test]
async fn per_connection_limit_bounds_concurrency_and_queues_the_rest() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r2, p2) = (running.clone(), peak.clone());
    let server = Server::builder()
        .max_calls_per_connection(2)
        .handler("/work", move |_, req| {
            let (running, peak) = (r2.clone(), p2.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(req)
            }
        })
        .build()
        .unwrap();
    let client = pair_client(&server);
    let mut calls = Vec::new();
    for i in 0..10 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            c.call("/work", format!("{i}")).await
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), format!("{i}"));
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn server_wide_limit_spans_connections() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r2, p2) = (running.clone(), peak.clone());
    let server = Server::builder()
        .max_calls(3)
        .handler("/work", move |_, req| {
            let (running, peak) = (r2.clone(), p2.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(req)
            }
        })
        .build()
        .unwrap();
    let mut calls = Vec::new();
    for _ in 0..4 {
        let client = pair_client(&server);
        for _ in 0..4 {
            let c = client.clone();
            calls.push(tokio::spawn(async move { c.call("/work", "x").await }));
        }
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn frame_limits_are_enforced_on_both_sides() {
    let server = Server::builder()
        .max_frame_len(1024)
        .handler("/echo", |_, req| async move { Ok(req) })
        .handler(
            "/big",
            |_, _| async move { Ok(Bytes::from(vec![7u8; 4096])) },
        )
        .build()
        .unwrap();
    // Client-side limit: refused locally, nothing sent.
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let small = Client::builder().max_frame_len(100).build(a);
    assert!(matches!(
        small.call("/echo", vec![0u8; 200]).await,
        Err(RpcError::FrameTooLarge { max: 100, .. })
    ));
    assert_eq!(small.call("/echo", "fits").await.unwrap(), "fits");
    // A reply over the server's limit becomes a server error.
    let e = small.call("/big", "").await.unwrap_err();
    assert!(
        matches!(&e, RpcError::Server { message } if message.contains("exceeds the frame limit")),
        "{e:?}"
    );
    // A request over the server's limit closes that connection only.
    let client = pair_client(&server);
    let e = client.call("/echo", vec![1u8; 2000]).await.unwrap_err();
    assert!(matches!(e, RpcError::ConnectionClosed { .. }), "{e:?}");
    assert_eq!(
        small.call("/echo", "other connection fine").await.unwrap(),
        "other connection fine"
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = Server::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .handler("/echo", |_, req| async move { Ok(req) })
        .build()
        .unwrap();
    let client = pair_client(&server);
    assert_eq!(client.call("/echo", "a").await.unwrap(), "a");
    eventually("idle connection closed", || client.is_closed()).await;
}

#[tokio::test]
async fn graceful_shutdown_delivers_in_flight_replies_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let server = Server::builder()
        .handler("/slow", |_, req| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(req)
        })
        .build()
        .unwrap();
    server.serve(uds::net::Listener::bind(&path).unwrap());
    let client = Client::connect(&path).await.unwrap();
    let c2 = client.clone();
    let call = tokio::spawn(async move { c2.call("/slow", "finished").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = server.shutdown(Duration::from_secs(2)).await;
    assert!(report.graceful, "{report:?}");
    assert_eq!(report.aborted_calls, 0);
    assert_eq!(call.await.unwrap().unwrap(), "finished");
    assert!(!path.exists(), "socket file removed");
    eventually("client sees the close", || client.is_closed()).await;
}

#[tokio::test]
async fn shutdown_past_its_grace_period_cancels_what_is_left() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d2 = dropped.clone();
    let server = Server::builder()
        .handler("/forever", move |_, _| {
            let flag = DropFlag(d2.clone());
            async move {
                let _flag = flag;
                std::future::pending::<()>().await;
                Ok(Bytes::new())
            }
        })
        .build()
        .unwrap();
    let client = pair_client(&server);
    let c2 = client.clone();
    let call = tokio::spawn(async move { c2.call("/forever", "").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = server.shutdown(Duration::from_millis(100)).await;
    assert!(!report.graceful);
    assert_eq!(report.aborted_calls, 1);
    assert!(dropped.load(Ordering::SeqCst));
    assert!(matches!(
        call.await.unwrap(),
        Err(RpcError::ConnectionClosed { .. })
    ));
}

#[tokio::test]
async fn duplicate_method_registration_is_a_build_error() {
    let err = Server::builder()
        .handler("/a", |_, r| async move { Ok(r) })
        .handler("/a", |_, r| async move { Ok(r) })
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::DuplicateMethods { methods } if methods.iter().any(|m| m == "/a")),
        "{err:?}"
    );
}

#[tokio::test]
async fn context_carries_peer_creds_and_deadline() {
    let server = Server::builder()
        .handler("/who", |ctx, _| async move {
            let left = ctx.remaining().ok_or("no deadline")?;
            Ok(format!(
                "{} {} {}",
                ctx.peer().uid,
                ctx.peer().pid,
                left.as_millis() <= 5000
            )
            .into())
        })
        .build()
        .unwrap();
    let client = pair_client(&server);
    let reply = client
        .call_with(
            "/who",
            Bytes::new(),
            CallOptions::timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let me = uds::Cred::current().unwrap();
    assert_eq!(reply, format!("{} {} true", me.uid, me.pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_calling_at_once_complete_out_of_order() {
    let server = Server::builder()
        .handler("/echo-after", |_, req| async move {
            // Later requests finish sooner: replies come back out of order.
            let n: u64 = std::str::from_utf8(&req).unwrap().parse().unwrap();
            tokio::time::sleep(Duration::from_millis(20 - n % 20)).await;
            Ok(req)
        })
        .build()
        .unwrap();
    let client = pair_client(&server);
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                let n = t * 100 + i;
                let r = c.call("/echo-after", n.to_string()).await.unwrap();
                assert_eq!(r, n.to_string());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_leak_no_tasks_or_memory() {
    let server = Server::builder()
        .handler("/echo", |_, req| async move { Ok(req) })
        .build()
        .unwrap();
    let client = pair_client(&server);
    let payload = Bytes::from(vec![5u8; 512]);
    let metrics = tokio::runtime::Handle::current().metrics();
    // Warm up buffers and maps.
    for _ in 0..1000 {
        client.call("/echo", payload.clone()).await.unwrap();
    }
    let tasks_before = metrics.num_alive_tasks();
    let rss_before = uds_tests::rss_kib();
    let mut joins = Vec::new();
    for _ in 0..10 {
        let c = client.clone();
        let p = payload.clone();
        joins.push(tokio::spawn(async move {
            for _ in 0..1000 {
                assert_eq!(c.call("/echo", p.clone()).await.unwrap().len(), 512);
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    eventually("handler tasks finished", || {
        metrics.num_alive_tasks() <= tasks_before
    })
    .await;
    let grown = uds_tests::rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 8 * 1024,
        "RSS grew by {grown} KiB over 10 000 calls"
    );
}

/// Contexts a handler leaked (see the test below).
static KEPT: std::sync::Mutex<Vec<uds::rpc::Context>> = std::sync::Mutex::new(Vec::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_stop_ends_the_stream_even_if_a_handler_kept_its_context() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The handler parks its Context somewhere that outlives the server (as
    // a user might, in a thread or a detached task) and answers 8 MiB that
    // the client does not read, so the connection's writer is stuck.
    let server = Server::builder()
        .handler("/big", |ctx, _| async move {
            KEPT.lock().unwrap().push(ctx);
            Ok(Bytes::from(vec![7u8; 8 << 20]))
        })
        .build()
        .unwrap();
    let (mut raw, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let mut req = uds::rpc::__wire::Envelope::default();
    req.id = 1;
    req.method = Bytes::from_static(b"/big");
    raw.write_all(&uds_tests::envelope_frame(&req))
        .await
        .unwrap();
    eventually("the handler ran", || !KEPT.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Past the grace period the server aborts the stuck writer...
    let report = server.shutdown(Duration::from_millis(100)).await;
    assert!(
        !report.graceful,
        "the stuck reply should force a hard stop: {report:?}"
    );
    // ...and the peer must see the end of the stream, not wait forever.
    let mut sink = vec![0u8; 1 << 20];
    let reached_eof = tokio::time::timeout(Duration::from_secs(10), async {
        while raw.read(&mut sink).await.unwrap_or(0) > 0 {}
    })
    .await;
    assert!(reached_eof.is_ok(), "no end-of-stream after a hard stop");
    KEPT.lock().unwrap().clear();
}

/// The README once had `Server::builder()…build()?.serve(listener);`: the
/// temporary `Server` was dropped at the end of the statement, which stopped
/// it, and the server served nothing. Serving now keeps it alive.
#[tokio::test]
async fn a_server_serving_a_listener_outlives_its_last_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    Server::builder()
        .handler("/echo", |_ctx, data| async move { Ok(data) })
        .build()
        .unwrap()
        .serve(uds::net::Listener::bind(&path).unwrap());
    let client = Client::connect(&path).await.unwrap();
    assert_eq!(
        client.call("/echo", "still here").await.unwrap(),
        "still here"
    );
}

/// A handler that computes without awaiting holds its connection's reading
/// once at most. Alone on its connection, its first call runs on the spot
/// (in the connection's reader); its first poll is long, so its later calls
/// get tasks of their own and another call on the same connection is
/// answered while one runs. With calls on the spot turned off, not even the
/// first holds the reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_computes_without_awaiting_holds_its_connection_once_at_most() {
    for on_the_spot in [true, false] {
        let server = Server::builder()
            .calls_on_the_spot(on_the_spot)
            .handler("/spin", |_, req| async move {
                // Blocks without awaiting; `block_in_place` hands the
                // worker's other tasks on, so that only the connection's
                // reading could be held up (if the call ran in the reader).
                tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(400)));
                Ok(req)
            })
            .handler("/ping", |_, req| async move { Ok(req) })
            .build()
            .unwrap();
        let client = pair_client(&server);
        if on_the_spot {
            client.call("/spin", "first").await.unwrap();
        }
        let spin = tokio::spawn({
            let client = client.clone();
            async move {
                client.call("/spin", "second").await.unwrap();
                Instant::now()
            }
        });
        // The spin's request is read first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.call("/ping", "").await.unwrap();
        let pinged = Instant::now();
        let spin_done = spin.await.unwrap();
        assert!(
            pinged < spin_done,
            "on the spot {on_the_spot}: the ping waited for the spinning handler"
        );
    }
}
