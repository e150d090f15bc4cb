//! A hostile server against the client: stream items sent beyond the credit
//! the client granted, and floods of replies the client can only log.
//!
//! The "server" here is hand-written: it speaks raw frames on one end of a
//! socket pair, so it can break the protocol in ways a `uds::rpc::Server`
//! never would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use uds::frame::FrameReader;
use uds::rpc::__wire::Envelope;
use uds::rpc::{CallOptions, Client, DEFAULT_STREAM_WINDOW, RpcError};
use uds_tests::envelope_frame;

/// What the hostile stream server saw from the client.
#[derive(Default)]
struct Seen {
    /// The credit the stream request carried.
    request_credit: AtomicU32,
    /// Credit granted by the client after the request, in all.
    granted: AtomicU32,
    /// The client cancelled the call.
    cancelled: AtomicBool,
    /// Every item was written (the client read them all off the socket).
    all_written: AtomicBool,
}

/// A client whose server answers its first request — a stream call — with
/// `items` stream items of `size` bytes each, all at once, whatever credit
/// it was granted; then sends nothing more (no end marker).
fn flooding_stream_server(items: usize, size: usize) -> (Client, Arc<Seen>) {
    let (a, b) = uds::net::pair().unwrap();
    let seen = Arc::new(Seen::default());
    let (rd, mut wr) = b.into_parts().0.into_split();
    let watch = seen.clone();
    tokio::spawn(async move {
        let mut rd = FrameReader::new(rd);
        let Ok(Some(body)) = rd.read_frame().await else {
            return;
        };
        let req = Envelope::decode(&body).unwrap();
        watch.request_credit.store(req.credit, Ordering::SeqCst);
        let id = req.id;
        // Read grants and the cancel while the flood goes out.
        let reading = tokio::spawn({
            let watch = watch.clone();
            async move {
                while let Ok(Some(body)) = rd.read_frame().await {
                    let e = Envelope::decode(&body).unwrap();
                    assert_eq!(e.id, id);
                    if e.cancel {
                        watch.cancelled.store(true, Ordering::SeqCst);
                    } else {
                        watch.granted.fetch_add(e.credit, Ordering::SeqCst);
                    }
                }
            }
        });
        let mut item = Envelope::default();
        item.id = id;
        item.stream_item = true;
        item.data = Bytes::from(vec![0x5a; size]);
        let frame = envelope_frame(&item);
        for _ in 0..items {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
        watch.all_written.store(true, Ordering::SeqCst);
        let _ = reading.await;
        drop(wr);
    });
    (Client::new(a), seen)
}

/// Waits up to 10 s for `flag`.
async fn until(flag: &AtomicBool, what: &str) {
    let start = std::time::Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads what is left of a stream: the items, then the error it ended with
/// (`None` if it ended cleanly), checking that nothing follows the end.
async fn drain(s: &mut uds::rpc::RpcStream) -> (usize, usize, Option<RpcError>) {
    let (mut items, mut bytes) = (0, 0);
    let end = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), s.next_item())
            .await
            .expect("the stream ends within 10 s");
        match next {
            Some(Ok(item)) => {
                items += 1;
                bytes += item.len();
            }
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    assert!(
        s.next_item().await.is_none(),
        "the stream went on after its end"
    );
    (items, bytes, end)
}

fn is_credit_error(e: Option<&RpcError>) -> bool {
    matches!(e, Some(RpcError::Protocol { reason }) if reason.contains("credit"))
}

const ITEMS: usize = 40;
const SIZE: usize = 256 * 1024;

/// A slow consumer with a window of `window` items (the default if `None`)
/// against a server that sends `ITEMS` at once.
async fn slow_consumer_of_a_flood(window: Option<u32>) {
    let (client, seen) = flooding_stream_server(ITEMS, SIZE);
    let opts = match window {
        Some(w) => CallOptions::default().with_stream_window(w),
        None => CallOptions::default(),
    };
    let mut s = client
        .call_stream("/flood", Bytes::new(), opts)
        .await
        .unwrap();
    // A slow consumer: it reads nothing until the whole flood has been sent
    // (and so read off the socket by the client).
    until(&seen.all_written, "the server could not write its flood").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let window = window.unwrap_or(DEFAULT_STREAM_WINDOW) as usize;
    assert_eq!(seen.request_credit.load(Ordering::SeqCst) as usize, window);
    let (items, bytes, end) = drain(&mut s).await;
    eprintln!(
        "slow consumer: {items} items ({} KiB) accepted of {ITEMS} sent, then {end:?}",
        bytes >> 10
    );
    // Nothing beyond the window was buffered for the caller...
    assert!(
        items <= window,
        "{items} items accepted with credit for {window}"
    );
    assert!(bytes <= window * SIZE, "{bytes} bytes buffered");
    // ...and the caller learns why the stream ended.
    assert!(
        is_credit_error(end.as_ref()),
        "the stream ended with {end:?}"
    );
    // The call is cancelled on the server, and the connection still works.
    until(&seen.cancelled, "the client never cancelled the call").await;
    assert!(!client.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_beyond_the_window_end_the_stream_with_a_protocol_error() {
    slow_consumer_of_a_flood(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_window_bounds_what_a_stream_buffers() {
    slow_consumer_of_a_flood(Some(4)).await;
    slow_consumer_of_a_flood(Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_granted_while_consuming_extends_the_window_and_no_further() {
    let (client, seen) = flooding_stream_server(ITEMS, SIZE);
    let mut s = client
        .call_stream("/flood", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    let window = DEFAULT_STREAM_WINDOW as usize;
    // Consume half the window at once (the client grants that much more),
    // then stop reading until the flood is over.
    let mut first = 0;
    for _ in 0..window / 2 {
        match s.next_item().await {
            Some(Ok(_)) => first += 1,
            other => panic!("item {first}: {other:?}"),
        }
    }
    until(&seen.all_written, "the server could not write its flood").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Credit granted while the flood arrived (draining grants more, later).
    let granted = seen.granted.load(Ordering::SeqCst) as usize;
    let (rest, _, end) = drain(&mut s).await;
    let items = first + rest;
    eprintln!(
        "consumer: {items} items accepted, {granted} credit granted after the first {window}, then {end:?}"
    );
    assert_eq!(granted, window / 2, "the client grants as it consumes");
    assert!(
        items <= window + granted,
        "{items} items accepted with credit for {}",
        window + granted
    );
    assert!(items >= window, "items within the credit were refused");
    assert!(
        is_credit_error(end.as_ref()),
        "the stream ended with {end:?}"
    );
    until(&seen.cancelled, "the client never cancelled the call").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_streams_whole_within_any_window() {
    use futures_util::StreamExt;
    let server = uds::rpc::Server::builder()
        .streaming("/count", |_, _| async move {
            Ok(futures_util::stream::iter(0..100u32)
                .map(|i| Ok::<_, uds::rpc::HandlerError>(Bytes::from(i.to_string()))))
        })
        .build()
        .unwrap();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let client = Client::new(a);
    for window in [1, 2, 3, 16, 4096, u32::MAX] {
        let opts = CallOptions::default().with_stream_window(window);
        let mut s = client
            .call_stream("/count", Bytes::new(), opts)
            .await
            .unwrap();
        for i in 0..100u32 {
            // A slow consumer now and then: the server must wait for credit.
            if i % 37 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let item = s.next().await.unwrap().unwrap();
            assert_eq!(item, i.to_string(), "window {window}");
        }
        assert!(s.next().await.is_none(), "window {window}");
    }
}
