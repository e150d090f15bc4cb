//! Server streaming over the RPC connection: order, backpressure,
//! cancellation, whole-stream deadline, application errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use uds::rpc::__wire::Envelope;
use uds::rpc::{CallOptions, Client, HandlerError, RpcError, Server};

fn pair_client(server: &Server) -> Client {
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    Client::new(a)
}

/// Sets its flag when dropped.
struct Flag(Arc<AtomicBool>);

impl Drop for Flag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Counts items produced; sets a flag when the producer is dropped.
fn counting_server(produced: Arc<AtomicUsize>, dropped: Arc<AtomicBool>) -> Server {
    Server::builder()
        .streaming("/count", move |_, req| {
            let produced = produced.clone();
            let dropped = dropped.clone();
            async move {
                let limit: usize = std::str::from_utf8(&req).unwrap().parse().unwrap();
                let flag = Flag(dropped);
                Ok(futures_util::stream::iter(0..limit).map(move |i| {
                    let _keep = &flag;
                    produced.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, HandlerError>(Bytes::from(i.to_string()))
                }))
            }
        })
        .streaming("/fail-after-2", |_, _| async move {
            Ok(futures_util::stream::iter(vec![
                Ok(Bytes::from_static(b"0")),
                Ok(Bytes::from_static(b"1")),
                Err(HandlerError::server("ran out")),
            ]))
        })
        .streaming("/slow", |_, _| async move {
            Ok(futures_util::stream::unfold(0u32, |n| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Ok::<_, HandlerError>(Bytes::from(n.to_string())), n + 1))
            }))
        })
        .handler("/app-error", |_, _| async move {
            Err::<Bytes, _>(HandlerError::application(
                Bytes::from_static(br#"{"DivideByZero":null}"#),
                "divide by zero",
            ))
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn all_items_arrive_in_order_then_the_end() {
    let produced = Arc::new(AtomicUsize::new(0));
    let server = counting_server(produced.clone(), Arc::new(AtomicBool::new(false)));
    let client = pair_client(&server);
    let mut s = client
        .call_stream("/count", "100".into(), CallOptions::default())
        .await
        .unwrap();
    for i in 0..100 {
        assert_eq!(s.next().await.unwrap().unwrap(), i.to_string());
    }
    assert!(s.next().await.is_none());
    assert_eq!(produced.load(Ordering::SeqCst), 100);
    // The connection still serves unary calls.
    assert!(matches!(
        client.call("/app-error", "").await,
        Err(RpcError::Application { .. })
    ));
}

#[tokio::test]
async fn a_slow_consumer_slows_the_producer() {
    let produced = Arc::new(AtomicUsize::new(0));
    let server = counting_server(produced.clone(), Arc::new(AtomicBool::new(false)));
    let client = pair_client(&server);
    let mut s = client
        .call_stream("/count", "100000".into(), CallOptions::default())
        .await
        .unwrap();
    for _ in 0..5 {
        s.next().await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let window = uds::rpc::DEFAULT_STREAM_WINDOW as usize;
    let p = produced.load(Ordering::SeqCst);
    assert!(
        p <= 5 + 2 * window,
        "produced {p} items while 5 were consumed"
    );
}

#[tokio::test]
async fn dropping_the_stream_stops_the_producer() {
    let dropped = Arc::new(AtomicBool::new(false));
    let server = counting_server(Arc::new(AtomicUsize::new(0)), dropped.clone());
    let client = pair_client(&server);
    let mut s = client
        .call_stream("/count", "1000000".into(), CallOptions::default())
        .await
        .unwrap();
    s.next().await.unwrap().unwrap();
    drop(s);
    let start = Instant::now();
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "producer never dropped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_deadline_bounds_the_whole_stream() {
    let server = counting_server(
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let client = pair_client(&server);
    let mut s = client
        .call_stream(
            "/slow",
            Bytes::new(),
            CallOptions::timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let start = Instant::now();
    let mut items = 0;
    let err = loop {
        match s.next().await {
            Some(Ok(_)) => items += 1,
            Some(Err(e)) => break e,
            None => panic!("stream ended without the deadline error"),
        }
    };
    assert!(matches!(err, RpcError::DeadlineExceeded { .. }), "{err:?}");
    assert!(
        (2..=6).contains(&items),
        "{items} items in 300 ms at 50 ms each"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn a_failing_stream_ends_with_the_error() {
    let server = counting_server(
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let client = pair_client(&server);
    let items: Vec<_> = client
        .call_stream("/fail-after-2", Bytes::new(), CallOptions::default())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items.len(), 3);
    assert_eq!(items[1].as_ref().unwrap(), "1");
    assert_eq!(
        items[2],
        Err(RpcError::Server {
            message: "ran out".into()
        })
    );
    // A unary call to a streaming method is a typed error, not a hang.
    let e = client.call("/count", "3").await.unwrap_err();
    assert!(matches!(e, RpcError::Protocol { .. }), "{e:?}");
}

#[tokio::test]
async fn application_errors_carry_their_value() {
    let server = counting_server(
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let client = pair_client(&server);
    match client.call("/app-error", "").await {
        Err(RpcError::Application { message, data }) => {
            assert_eq!(message, "divide by zero");
            assert_eq!(&data[..], br#"{"DivideByZero":null}"#);
        }
        other => panic!("expected Application, got {other:?}"),
    }
}

#[tokio::test]
async fn hostile_credit_grants_do_not_hurt_the_server() {
    use tokio::io::AsyncWriteExt;
    let server = counting_server(
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let (stream, _) = a.into_parts();
    let (rd, mut wr) = stream.into_split();
    let mut reader = uds::frame::FrameReader::new(rd);
    let frame = uds_tests::envelope_frame;
    let mut req = Envelope::default();
    req.id = 1;
    req.method = Bytes::from_static(b"/count");
    req.data = Bytes::from_static(b"10");
    req.credit = 1;
    wr.write_all(&frame(&req)).await.unwrap();
    // Grants far beyond any sane window, many times over, for live and
    // unknown ids: capped, never a panic.
    for id in [1u32, 77] {
        let mut grant = Envelope::default();
        grant.id = id;
        grant.credit = u32::MAX;
        for _ in 0..10 {
            wr.write_all(&frame(&grant)).await.unwrap();
        }
    }
    let mut items = 0;
    loop {
        let body = reader.read_frame().await.unwrap().unwrap();
        let e = Envelope::decode(&body).unwrap();
        assert_eq!(e.id, 1);
        if e.stream_end {
            assert_eq!(e.err_type, 0);
            break;
        }
        assert!(e.stream_item);
        items += 1;
    }
    assert_eq!(items, 10);
}

#[tokio::test]
async fn a_consumer_reset_while_the_stream_waits_for_credit_stops_the_producer() {
    use tokio::io::AsyncWriteExt;
    let dropped = Arc::new(AtomicBool::new(false));
    let server = counting_server(Arc::new(AtomicUsize::new(0)), dropped.clone());
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let (rd, mut wr) = a.into_parts().0.into_split();
    let mut req = Envelope::default();
    req.id = 1;
    req.method = Bytes::from_static(b"/count");
    req.data = Bytes::from_static(b"1000000");
    req.credit = 1;
    wr.write_all(&uds_tests::envelope_frame(&req))
        .await
        .unwrap();
    // One item arrives (the socket turns readable) and is left unread; the
    // stream now waits for credit.
    tokio::time::timeout(Duration::from_secs(5), rd.readable())
        .await
        .expect("the first item within 5 s")
        .unwrap();
    assert!(!dropped.load(Ordering::SeqCst));
    drop((rd, wr)); // close with unread data: the server sees a reset
    let start = Instant::now();
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "producer left waiting for credit"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn at_the_call_limit_credit_and_cancels_still_get_through() {
    let produced = Arc::new(AtomicUsize::new(0));
    let server = Server::builder()
        .max_calls_per_connection(2)
        .streaming("/count", {
            let produced = produced.clone();
            move |_, req| {
                let produced = produced.clone();
                async move {
                    let n: usize = std::str::from_utf8(&req).unwrap().parse().unwrap();
                    Ok(futures_util::stream::iter(0..n).map(move |i| {
                        produced.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, HandlerError>(Bytes::from(i.to_string()))
                    }))
                }
            }
        })
        .handler("/echo", |_, req| async move { Ok(req) })
        .build()
        .unwrap();
    let client = pair_client(&server);
    // Two streams take both slots and stall on credit.
    let s1 = client
        .call_stream("/count", "100".into(), CallOptions::default())
        .await
        .unwrap();
    let s2 = client
        .call_stream("/count", "100".into(), CallOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A third call waits for a slot; a fourth is abandoned while waiting.
    let c = client.clone();
    let third = tokio::spawn(async move { c.call("/echo", "third").await });
    let abandoned =
        tokio::time::timeout(Duration::from_millis(50), client.call("/echo", "gone")).await;
    assert!(abandoned.is_err(), "no slot yet");
    // Consuming the streams grants credit: the server must still read it.
    let drain = |mut s: uds::rpc::RpcStream| async move {
        let mut n = 0;
        while let Some(item) = s.next().await {
            item.unwrap();
            n += 1;
        }
        n
    };
    let (n1, n2) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(drain(s1), drain(s2))
    })
    .await
    .expect("streams finish: credit is read while calls wait for slots");
    assert_eq!((n1, n2), (100, 100));
    assert_eq!(third.await.unwrap().unwrap(), "third");
}

/// Found by the `server_conn` fuzz target: a stream of exactly as many items
/// as the credit granted waited for one more grant before sending its end, so
/// a client that had no reason to grant more (here: one that has finished
/// sending) never saw the stream end and the connection was held forever.
#[tokio::test]
async fn a_stream_of_exactly_its_credit_ends_without_another_grant() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = counting_server(
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let (mut rd, mut wr) = a.into_parts().0.into_split();
    let mut req = Envelope::default();
    req.id = 3;
    req.method = Bytes::from_static(b"/count");
    req.data = Bytes::from_static(b"2");
    req.credit = 2;
    wr.write_all(&uds_tests::envelope_frame(&req))
        .await
        .unwrap();
    wr.shutdown().await.unwrap(); // no grant will ever follow
    let mut replies = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), rd.read_to_end(&mut replies))
        .await
        .expect("the stream ends and the server closes without another grant")
        .unwrap();
    let mut buf = bytes::BytesMut::from(&replies[..]);
    let dec = uds::frame::__wire::FrameDecoder::default();
    let mut got = Vec::new();
    while let Some(body) = dec.decode(&mut buf).unwrap() {
        got.push(Envelope::decode(&body).unwrap());
    }
    assert!(buf.is_empty());
    let items: Vec<&[u8]> = got
        .iter()
        .filter(|e| e.stream_item)
        .map(|e| &e.data[..])
        .collect();
    assert_eq!(items, [&b"0"[..], b"1"]);
    let last = got.last().unwrap();
    assert!(
        last.stream_end && last.err_type == 0 && last.id == 3,
        "{last:?}"
    );
}

#[tokio::test]
async fn an_oversized_stream_request_is_refused_before_anything_is_sent() {
    // A raw peer sees every frame the client writes.
    let (a, b) = uds::net::pair().unwrap();
    let client = Client::builder().max_frame_len(1024).build(a);
    let err = client
        .call_stream("/s", Bytes::from(vec![0u8; 4096]), CallOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::FrameTooLarge { max: 1024, .. }),
        "{err:?}"
    );
    // The next frame on the wire is the next call's request, not a
    // cancellation of a call the server never heard of.
    let next = tokio::spawn({
        let client = client.clone();
        async move { client.call("/next", "x").await }
    });
    let mut raw = uds::frame::FrameReader::new(b);
    let body = raw.read_frame().await.unwrap().unwrap();
    let env = Envelope::decode(&body).unwrap();
    assert!(!env.cancel, "a spurious cancellation was sent: {env:?}");
    assert_eq!(&env.method[..], b"/next");
    next.abort();
}
