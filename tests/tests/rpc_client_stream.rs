//! Client streaming and bidirectional streaming over the RPC connection, at
//! the `rpc` layer: order, credit both ways (bounded memory), half-close,
//! cancellation from each side, deadlines, idle bounds with keep-alives,
//! connection loss, unary clients (as Go's) calling streaming methods, and
//! many streams at once on one connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use uds::rpc::{CallOptions, Client, HandlerError, RpcError, RpcItems, Server};
use uds_tests::{DropFlag, eventually};

fn pair_client(server: &Server) -> Client {
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    Client::new(a)
}

/// The sum of the items' lengths, and how many there were.
async fn sum(mut items: RpcItems) -> Result<Bytes, HandlerError> {
    let (mut n, mut total) = (0usize, 0usize);
    while let Some(item) = items.next_item().await {
        n += 1;
        total += item.len();
    }
    Ok(format!("{n} {total}").into())
}

fn server() -> Server {
    Server::builder()
        .client_streaming("/sum", |_, _, items| sum(items))
        .client_streaming("/concat", |_, args, mut items| async move {
            let mut out = args.to_vec();
            while let Some(item) = items.next_item().await {
                out.extend_from_slice(&item);
            }
            Ok(out.into())
        })
        .client_streaming("/first-two", |_, _, mut items| async move {
            let a = items.next_item().await.unwrap_or_default();
            let b = items.next_item().await.unwrap_or_default();
            Ok([a, b].concat().into())
        })
        .client_streaming("/fail-at-3", |_, _, mut items| async move {
            let mut n = 0;
            while items.next_item().await.is_some() {
                n += 1;
                if n == 3 {
                    return Err(HandlerError::server("item 3 is bad"));
                }
            }
            Ok(Bytes::new())
        })
        .bidi_streaming("/echo", |_, _, items| async move {
            Ok(items.map(Ok::<_, HandlerError>))
        })
        .bidi_streaming("/upper", |_, _, items| async move {
            Ok(items.map(|b| Ok::<_, HandlerError>(Bytes::from(b.to_ascii_uppercase()))))
        })
        .build()
        .unwrap()
}

/// `builder` with `/wait`: a client stream whose handler takes nothing until
/// `go` is notified, then answers as [`sum`] does.
fn wait_then_sum(builder: uds::rpc::ServerBuilder, go: &Arc<tokio::sync::Notify>) -> Server {
    let go = go.clone();
    builder
        .client_streaming("/wait", move |_, _, items| {
            let go = go.clone();
            async move {
                go.notified().await;
                sum(items).await
            }
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_client_stream_delivers_every_item_in_order_then_the_reply() {
    let server = server();
    let client = pair_client(&server);
    let (mut tx, reply) = client
        .call_client_stream("/concat", "<".into(), CallOptions::default())
        .await
        .unwrap();
    for i in 0..200 {
        tx.send(format!("{i},").into()).await.unwrap();
    }
    tx.finish().await.unwrap();
    let want: String = std::iter::once("<".to_owned())
        .chain((0..200).map(|i| format!("{i},")))
        .collect();
    assert_eq!(reply.await.unwrap(), want);
}

#[tokio::test]
async fn dropping_the_sender_ends_the_items() {
    let server = server();
    let client = pair_client(&server);
    let (mut tx, reply) = client
        .call_client_stream("/sum", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    tx.send("abc".into()).await.unwrap();
    drop(tx);
    assert_eq!(reply.await.unwrap(), "1 3");
}

#[tokio::test]
async fn a_handler_that_answers_early_stops_the_producer() {
    let server = server();
    let client = pair_client(&server);
    let (mut tx, reply) = client
        .call_client_stream("/first-two", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    tx.send("a".into()).await.unwrap();
    tx.send("b".into()).await.unwrap();
    assert_eq!(reply.await.unwrap(), "ab");
    // The call is over: sending fails at once, however much credit was left.
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(e) = tx.send("more".into()).await {
                break e;
            }
        }
    })
    .await
    .expect("the sender kept accepting items after the reply");
    assert!(matches!(err, RpcError::StreamClosed { .. }), "{err:?}");
    assert!(tx.is_closed());
}

#[tokio::test]
async fn a_handler_error_ends_the_call_and_the_sender() {
    let server = server();
    let client = pair_client(&server);
    let (mut tx, reply) = client
        .call_client_stream("/fail-at-3", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    let producer = tokio::spawn(async move {
        let mut sent = 0;
        while tx.send("x".into()).await.is_ok() {
            sent += 1;
        }
        sent
    });
    match reply.await {
        Err(RpcError::Server { message }) => assert_eq!(message, "item 3 is bad"),
        other => panic!("{other:?}"),
    }
    let sent = tokio::time::timeout(Duration::from_secs(5), producer)
        .await
        .expect("the producer did not stop")
        .unwrap();
    assert!(sent >= 3, "{sent}");
}

#[tokio::test]
async fn a_slow_handler_holds_the_producer_to_the_window() {
    let taken = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(tokio::sync::Notify::new());
    let server = Server::builder()
        .client_streaming("/slow", {
            let (taken, go) = (taken.clone(), go.clone());
            move |_, _, mut items| {
                let (taken, go) = (taken.clone(), go.clone());
                async move {
                    go.notified().await;
                    while items.next_item().await.is_some() {
                        taken.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(taken.load(Ordering::SeqCst).to_string().into())
                }
            }
        })
        .handler("/echo", |_, req| async move { Ok(req) })
        .build()
        .unwrap();
    let client = pair_client(&server);
    let (mut tx, reply) = client
        .call_client_stream("/slow", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = tokio::spawn({
        let sent = sent.clone();
        async move {
            let item = Bytes::from(vec![7u8; 64 * 1024]);
            for _ in 0..1000 {
                tx.send(item.clone()).await.unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
            tx.finish().await.unwrap();
        }
    });
    // The handler takes nothing yet: the producer, far faster, stops at the
    // server's window (16 items of 64 KiB), not at 1000.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ahead = sent.load(Ordering::SeqCst);
    assert!(
        ahead <= 16,
        "the producer ran {ahead} items ahead of a handler that took none"
    );
    // Other calls on the connection are not held up.
    let echoed = tokio::time::timeout(Duration::from_secs(5), client.call("/echo", "hi"))
        .await
        .expect("a unary call waited behind the stream")
        .unwrap();
    assert_eq!(echoed, "hi");
    go.notify_one();
    assert_eq!(reply.await.unwrap(), "1000");
    producer.await.unwrap();
}

#[tokio::test]
async fn dropping_the_reply_cancels_the_handler_within_100ms() {
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Arc::new(tokio::sync::Notify::new());
    let server = Server::builder()
        .client_streaming("/hang", {
            let (dropped, started) = (dropped.clone(), started.clone());
            move |_, _, _items| {
                let flag = DropFlag(dropped.clone());
                let started = started.clone();
                async move {
                    let _flag = flag;
                    started.notify_one();
                    std::future::pending::<()>().await;
                    Ok(Bytes::new())
                }
            }
        })
        .build()
        .unwrap();
    let client = pair_client(&server);
    let (mut tx, reply) = client
        .call_client_stream("/hang", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    started.notified().await;
    tx.send("x".into()).await.unwrap();
    drop(reply);
    handler_gone_and_sender_closed(&dropped, &mut tx).await;
}

#[tokio::test]
async fn a_deadline_ends_a_client_stream_mid_way() {
    let server = server();
    let client = pair_client(&server);
    let opts = CallOptions::timeout(Duration::from_millis(200));
    let (mut tx, reply) = client
        .call_client_stream("/sum", Bytes::new(), opts)
        .await
        .unwrap();
    tx.send("x".into()).await.unwrap();
    let started = std::time::Instant::now();
    match reply.await {
        Err(RpcError::DeadlineExceeded { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        tx.send("y".into()).await,
        Err(RpcError::StreamClosed { .. })
    ));
}

#[tokio::test]
async fn bidirectional_items_flow_both_ways_at_once() {
    let server = server();
    let client = pair_client(&server);
    // A window of 4 both ways: 1000 items only get through if sending and
    // receiving overlap.
    let opts = CallOptions::default().with_stream_window(4);
    let (mut tx, mut rx) = client
        .call_bidi("/upper", Bytes::new(), opts)
        .await
        .unwrap();
    let producer = tokio::spawn(async move {
        for i in 0..1000 {
            tx.send(format!("item {i}").into()).await.unwrap();
        }
        tx.finish().await.unwrap();
    });
    for i in 0..1000 {
        let item = rx.next().await.unwrap().unwrap();
        assert_eq!(item, format!("ITEM {i}"));
    }
    assert!(
        rx.next().await.is_none(),
        "the stream ends after the client's items do"
    );
    producer.await.unwrap();
}

/// Within 100 ms the handler is dropped, and then the sender says the
/// call is over.
async fn handler_gone_and_sender_closed(dropped: &AtomicBool, tx: &mut uds::rpc::RpcSender) {
    eventually(
        "the handler was dropped",
        Duration::from_millis(100),
        || dropped.load(Ordering::SeqCst),
    )
    .await;
    let sent = tx.send("more".into()).await;
    assert!(
        matches!(sent, Err(RpcError::StreamClosed { .. })),
        "{sent:?}"
    );
}

/// A server whose `/hold` echoes its items back, setting `dropped` when
/// the handler's stream is dropped.
fn echo_until_dropped(dropped: Arc<AtomicBool>) -> Server {
    Server::builder()
        .bidi_streaming("/hold", move |_, _, items| {
            let flag = DropFlag(dropped.clone());
            async move {
                Ok(items.map(move |b| {
                    let _keep = &flag;
                    Ok::<_, HandlerError>(b)
                }))
            }
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn dropping_a_bidirectional_stream_cancels_the_handler_within_100ms() {
    let dropped = Arc::new(AtomicBool::new(false));
    let server = echo_until_dropped(dropped.clone());
    let client = pair_client(&server);
    let (mut tx, mut rx) = client
        .call_bidi("/hold", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    tx.send("one".into()).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "one");
    drop(rx);
    handler_gone_and_sender_closed(&dropped, &mut tx).await;
}

#[tokio::test]
async fn a_unary_call_to_a_streaming_method_fails_at_once_with_bad_data() {
    // What a Go client does: a plain request, no stream.
    let server = server();
    let client = pair_client(&server);
    for method in ["/sum", "/echo"] {
        let got = tokio::time::timeout(Duration::from_secs(2), client.call(method, "x"))
            .await
            .expect("a unary call to a streaming method hung");
        match got {
            Err(RpcError::BadData { message }) => {
                assert!(message.contains("streaming method"), "{message}");
                assert!(
                    !message.contains('%'),
                    "Go clients format the text: {message}"
                );
            }
            other => panic!("{method}: {other:?}"),
        }
    }
    // And a client stream to a unary method is refused the same way.
    let unary = Server::builder()
        .handler("/echo", |_, req| async move { Ok(req) })
        .build()
        .unwrap();
    let client = pair_client(&unary);
    let (_tx, reply) = client
        .call_client_stream("/echo", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    assert!(matches!(reply.await, Err(RpcError::BadData { .. })));
}

#[tokio::test]
async fn losing_the_connection_mid_stream_fails_the_call_and_the_sender() {
    use tokio::io::AsyncWriteExt;
    let (a, b) = uds::net::pair().unwrap();
    let client = Client::new(a);
    let (rd, mut wr) = b.into_split();
    let mut rd = uds::frame::FrameReader::new(rd);
    let (mut tx, reply) = client
        .call_client_stream("/sum", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    // Play the server: read the request, grant credit, take one item.
    let _request = rd.read_frame().await.unwrap().unwrap();
    wr.write_all(&uds_tests::hex("0a|0801a00110"))
        .await
        .unwrap();
    tx.send("x".into()).await.unwrap();
    let _item = rd.read_frame().await.unwrap().unwrap();
    // Then the server's end of the connection goes.
    drop((rd, wr));
    let got = tokio::time::timeout(Duration::from_secs(5), reply)
        .await
        .expect("the reply never came");
    assert!(
        matches!(got, Err(RpcError::ConnectionClosed { .. })),
        "{got:?}"
    );
    assert!(matches!(
        tx.send("y".into()).await,
        Err(RpcError::StreamClosed { .. })
    ));
}

#[tokio::test]
async fn a_server_shutting_down_lets_a_client_stream_finish_and_refuses_new_ones() {
    let server = server();
    let (a, b) = uds::net::pair().unwrap();
    let mut connection = server.serve_connection(b);
    let client = Client::new(a);
    let (mut tx, reply) = client
        .call_client_stream("/sum", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    tx.send("x".into()).await.unwrap();
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Draining: a new call is refused at once, typed and retryable...
    let (_tx2, refused) = client
        .call_client_stream("/sum", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(2), refused)
        .await
        .expect("a new call during drain waited");
    assert!(
        matches!(refused, Err(RpcError::ShuttingDown { .. })),
        "{refused:?}"
    );
    // ...while the running stream still takes its items and answers.
    tx.send("yz".into()).await.unwrap();
    tx.finish().await.unwrap();
    assert_eq!(reply.await.unwrap(), "2 3");
    let report = shutdown.await.unwrap();
    assert!(report.graceful);
    tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_client_going_away_cancels_the_handler() {
    let dropped = Arc::new(AtomicBool::new(false));
    let server = echo_until_dropped(dropped.clone());
    let client = pair_client(&server);
    let (mut tx, mut rx) = client
        .call_bidi("/hold", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    tx.send("x".into()).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "x");
    std::mem::forget(rx); // no cancel frame: only the connection's end says it
    drop(tx);
    drop(client);
    eventually("the handler was dropped", Duration::from_secs(2), || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
}

/// A subscription that lives for an hour, with an item every ten minutes:
/// keep-alives keep it from being taken for a dead one. Under paused time.
#[tokio::test(start_paused = true)]
async fn an_hour_long_subscription_lives_on_keepalives() {
    let server = Server::builder()
        .streaming("/ticks", |_, _| async move {
            Ok(futures_util::stream::unfold(0u32, |n| async move {
                if n == 6 {
                    return None;
                }
                tokio::time::sleep(Duration::from_secs(600)).await;
                Some((Ok::<_, HandlerError>(Bytes::from(n.to_string())), n + 1))
            }))
        })
        .build()
        .unwrap();
    let client = pair_client(&server);
    let start = tokio::time::Instant::now();
    let mut s = client
        .call_stream("/ticks", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    for n in 0..6 {
        let item = s.next().await.unwrap();
        assert_eq!(item.unwrap(), n.to_string());
    }
    assert!(s.next().await.is_none());
    assert!(start.elapsed() >= Duration::from_secs(3600));
}

/// A server that reads the request and then says nothing: the stream ends
/// with `StreamIdle` after the idle timeout, and the call is cancelled.
#[tokio::test(start_paused = true)]
async fn a_silent_server_ends_the_stream_as_idle() {
    use tokio::io::AsyncReadExt;
    let (a, mut b) = uds::net::pair().unwrap();
    let client = Client::new(a);
    let opts = CallOptions::default().with_idle_timeout(Duration::from_secs(5));
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        // Keep reading (the request, then the cancel), never answer.
        while b.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let start = tokio::time::Instant::now();
    let mut s = client
        .call_stream("/ticks", Bytes::new(), opts)
        .await
        .unwrap();
    match s.next().await {
        Some(Err(RpcError::StreamIdle { after })) => assert_eq!(after, Duration::from_secs(5)),
        other => panic!("{other:?}"),
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(RpcError::StreamIdle { after: took }.is_retryable());
    drop(client);
    reader.abort();
}

#[tokio::test]
async fn a_bidirectional_handler_that_ends_stops_the_producer_within_100ms() {
    let server = Server::builder()
        .bidi_streaming("/first", |_, _, items| async move {
            Ok(items.take(1).map(Ok::<_, HandlerError>))
        })
        .build()
        .unwrap();
    let client = pair_client(&server);
    let (mut tx, mut rx) = client
        .call_bidi("/first", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    tx.send("a".into()).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "a");
    assert!(rx.next().await.is_none(), "the handler's stream ended");
    let ended = std::time::Instant::now();
    let err = loop {
        match tx.send("more".into()).await {
            Ok(()) => assert!(ended.elapsed() < Duration::from_millis(100)),
            Err(e) => break e,
        }
    };
    assert!(
        ended.elapsed() < Duration::from_millis(100),
        "{:?}",
        ended.elapsed()
    );
    assert!(matches!(err, RpcError::StreamClosed { .. }), "{err:?}");
}

#[tokio::test]
async fn the_server_sets_the_client_stream_window() {
    let go = Arc::new(tokio::sync::Notify::new());
    let server = wait_then_sum(Server::builder().client_stream_window(4), &go);
    let client = pair_client(&server);
    let (mut tx, reply) = client
        .call_client_stream("/wait", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = tokio::spawn({
        let sent = sent.clone();
        async move {
            for _ in 0..100 {
                tx.send("x".into()).await.unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sent.load(Ordering::SeqCst), 4, "the window of 4 items");
    go.notify_one();
    assert_eq!(reply.await.unwrap(), "100 100");
    producer.await.unwrap();
}

/// A server with one call slot, held by `/hold` until `release` is notified.
fn one_slot_server(release: Arc<tokio::sync::Notify>) -> Server {
    Server::builder()
        .max_calls_per_connection(1)
        .handler("/hold", move |_, _| {
            let release = release.clone();
            async move {
                release.notified().await;
                Ok(Bytes::new())
            }
        })
        .handler("/noop", |_, _| async move { Ok(Bytes::new()) })
        .client_streaming("/sum", |_, _, items| sum(items))
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_empty_stream_may_end_while_its_call_waits_for_a_slot() {
    let release = Arc::new(tokio::sync::Notify::new());
    let server = one_slot_server(release.clone());
    let client = pair_client(&server);
    let hold = tokio::spawn({
        let client = client.clone();
        async move { client.call("/hold", "").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (tx, reply) = client
        .call_client_stream("/sum", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    tx.finish().await.unwrap(); // before any credit: the call waits
    release.notify_one();
    assert_eq!(reply.await.unwrap(), "0 0");
    hold.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_full_queue_does_not_stall_a_running_upload() {
    let server = Server::builder()
        .max_calls_per_connection(1)
        .handler("/noop", |_, _| async move { Ok(Bytes::new()) })
        .client_streaming("/sum", |_, _, items| sum(items))
        .build()
        .unwrap();
    let client = pair_client(&server);
    let (mut tx, reply) = client
        .call_client_stream("/sum", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    tx.send("a".into()).await.unwrap();
    // The upload holds the only slot; these fill the queue (64) and more.
    let noops: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call("/noop", "").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The upload's items and end still get through.
    tx.send("bc".into()).await.unwrap();
    tx.finish().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), reply)
        .await
        .expect("the upload stalled behind a full queue");
    assert_eq!(got.unwrap(), "2 3");
    let mut refused = 0;
    for n in noops {
        match n.await.unwrap() {
            Ok(_) => {}
            Err(RpcError::Server { message }) if message == uds::rpc::TOO_MANY_CALLS => {
                refused += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        refused > 0,
        "some calls beyond the queue were refused at once"
    );
}

#[tokio::test]
async fn send_waiting_for_credit_keeps_to_the_deadline() {
    // Nobody serves the other end: no credit will ever come.
    let (a, _b) = uds::net::pair().unwrap();
    let client = Client::new(a);
    let opts = CallOptions::timeout(Duration::from_millis(300));
    let (mut tx, reply) = client
        .call_client_stream("/sum", Bytes::new(), opts)
        .await
        .unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(3), tx.send("x".into()))
        .await
        .expect("send ignored the call's deadline");
    assert!(
        matches!(sent, Err(RpcError::DeadlineExceeded { .. })),
        "{sent:?}"
    );
    assert!(matches!(
        reply.await,
        Err(RpcError::DeadlineExceeded { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_stream_waiting_for_a_slot_hears_keepalives() {
    let release = Arc::new(tokio::sync::Notify::new());
    let server = one_slot_server(release.clone());
    let client = pair_client(&server);
    let hold = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call_with(
                    "/hold",
                    Bytes::new(),
                    CallOptions::timeout(Duration::from_secs(60)),
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let opts = CallOptions::default().with_idle_timeout(Duration::from_secs(1));
    let (tx, reply) = client
        .call_client_stream("/sum", Bytes::new(), opts)
        .await
        .unwrap();
    // Queued for 10 s, ten times the idle bound: keep-alives say it lives.
    let reply = tokio::spawn(reply);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!reply.is_finished(), "the queued call was taken for dead");
    tx.finish().await.unwrap();
    release.notify_one();
    assert_eq!(reply.await.unwrap().unwrap(), "0 0");
    hold.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_handlers_have_not_taken_are_bounded_in_bytes_per_connection() {
    // Four uploads whose handlers take nothing yet, each with credit for 16
    // items of 1 MiB: 64 MiB if credit alone bounded them.
    let go = Arc::new(tokio::sync::Notify::new());
    let server = wait_then_sum(Server::builder(), &go);
    let client = pair_client(&server);
    let sent = Arc::new(AtomicUsize::new(0));
    let mut uploads = Vec::new();
    for _ in 0..4 {
        let (mut tx, reply) = client
            .call_client_stream("/wait", Bytes::new(), CallOptions::default())
            .await
            .unwrap();
        let sent = sent.clone();
        uploads.push((
            tokio::spawn(async move {
                let item = Bytes::from(vec![1u8; 1024 * 1024]);
                for _ in 0..16 {
                    tx.send(item.clone()).await.unwrap();
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                tx.finish().await.unwrap();
            }),
            reply,
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The server holds at most 16 MiB (and one frame) for its handlers; the
    // rest waits in the client's write queue (4 MiB) and the socket.
    let ahead = sent.load(Ordering::SeqCst);
    assert!(
        ahead <= 26,
        "{ahead} items of 1 MiB sent to handlers that took none"
    );
    // Once the handlers take their items, everything flows.
    for _ in 0..4 {
        go.notify_one();
    }
    for (producer, reply) in uploads {
        let got = tokio::time::timeout(Duration::from_secs(30), reply)
            .await
            .expect("an upload stalled after its handler started taking")
            .unwrap();
        assert_eq!(got, format!("16 {}", 16 * 1024 * 1024));
        producer.await.unwrap();
    }
}
