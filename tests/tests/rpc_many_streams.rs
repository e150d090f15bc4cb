//! 1,000 bidirectional streams at once on one connection, and what they
//! leave behind: descriptors and memory back to where they were. Alone in
//! its test binary so that nothing else moves those counts.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use uds::rpc::{CallOptions, Client, HandlerError, Server};
use uds_tests::{eventually, open_fds, rss_kib, trim_heap};

/// Opens `n` bidirectional streams on `client`, then sends three items on
/// each and checks the three echoes and the end.
async fn round(client: &Client, n: usize) {
    let mut streams = Vec::new();
    for i in 0..n {
        let (tx, rx) = client
            .call_bidi("/upper", Bytes::new(), CallOptions::default())
            .await
            .unwrap();
        streams.push((i, tx, rx));
    }
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|(i, mut tx, mut rx)| {
            tokio::spawn(async move {
                for j in 0..3 {
                    tx.send(format!("s{i} i{j}").into()).await.unwrap();
                    let got = rx.next().await.unwrap().unwrap();
                    assert_eq!(got, format!("S{i} I{j}"));
                }
                tx.finish().await.unwrap();
                assert!(rx.next().await.is_none());
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("a stream stalled")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bidirectional_streams_on_one_connection() {
    let fds_before = open_fds();
    let server = Server::builder()
        .max_calls_per_connection(1024)
        .max_calls_per_process(1024)
        .max_calls_per_user(1024)
        .max_calls(1024)
        .bidi_streaming("/upper", |_, _, items| async move {
            Ok(items.map(|b| Ok::<_, HandlerError>(Bytes::from(b.to_ascii_uppercase()))))
        })
        .build()
        .unwrap();
    let (a, b) = uds::net::pair().unwrap();
    let mut connection = server.serve_connection(b);
    let client = Client::new(a);
    round(&client, 10).await; // warm up: the runtime's and allocator's own
    trim_heap();
    let rss_before = rss_kib();
    round(&client, 1000).await;
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .unwrap();
    server.shutdown(Duration::from_secs(1)).await;
    eventually(
        "descriptors back to baseline",
        Duration::from_secs(5),
        || open_fds() <= fds_before,
    )
    .await;
    trim_heap();
    let grown = rss_kib().saturating_sub(rss_before);
    eprintln!("RSS grew {grown} KiB over 1000 streams");
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB and stayed");
}
