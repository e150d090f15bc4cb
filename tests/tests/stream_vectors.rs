//! The client-stream and keep-alive vectors of `PROTOCOL.md` §6.7: the
//! bytes our server sends to a raw client streaming to it, the bytes our
//! client sends for a server stream, and what a Go-style unary request to
//! a client-streaming method gets.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use uds::frame::FrameReader;
use uds::rpc::{CallOptions, Client, HandlerError, Server};
use uds_tests::hex;
use uds_tests::raw::RawPeer;

const C1: &str = "2a|080110808098b5f5f9b3f7381a042f73756db00101";
const C1G: &str = "0a|0801a00110";
const C1A: &str = "12|080122026162900101";
const C1B: &str = "14|08012203636465900101";
const C1E: &str = "0a|0801980101";
const C1R: &str = "0e|08012203322035";
const K1: &str = "24|08011a062f7469636b73a00110b801a09c01";
const K1K: &str = "0a|0801c00101";

/// The body of a `header|body` vector.
fn body(frame: &str) -> Vec<u8> {
    hex(frame.split('|').nth(1).unwrap())
}

fn sum_server() -> Server {
    Server::builder()
        .client_streaming("/sum", |_, _, mut items| async move {
            let (mut n, mut len) = (0, 0);
            while let Some(item) = items.next_item().await {
                n += 1;
                len += item.len();
            }
            Ok(format!("{n} {len}").into())
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_raw_client_stream_gets_the_grant_and_the_reply_of_c1() {
    let server = sum_server();
    let mut raw = RawPeer::serve_on(&server);
    raw.send_hex(C1).await;
    let (grant, _) = raw.reply().await;
    assert_eq!(&grant[..], &body(C1G)[..], "the grant C1g");
    raw.send_hex(C1A).await;
    raw.send_hex(C1B).await;
    raw.send_hex(C1E).await;
    let (reply, _) = raw.reply().await;
    assert_eq!(&reply[..], &body(C1R)[..], "the reply C1r");
}

#[tokio::test]
async fn a_go_style_unary_request_to_a_client_stream_is_refused_at_once() {
    let server = sum_server();
    let mut raw = RawPeer::serve_on(&server);
    // C1 without its client_stream field: what a Go client sends.
    raw.send_hex("24|080110808098b5f5f9b3f7381a042f73756d")
        .await;
    let (_, env) = raw.reply_within(Duration::from_secs(2)).await;
    assert_eq!((env.id, env.err_type), (1, 3));
    let text = env.err_text();
    assert!(text.contains("client-streaming method"), "{text}");
    assert!(!text.contains('%'));
}

#[tokio::test]
async fn our_client_asks_for_keepalives_as_k1_and_takes_k1k() {
    let (a, b) = uds::net::pair().unwrap();
    let client = Client::new(a);
    let (rd, wr) = b.into_split();
    let mut rd = FrameReader::new(rd);
    let call = tokio::spawn(async move {
        let mut s = client
            .call_stream("/ticks", Bytes::new(), CallOptions::default())
            .await
            .unwrap();
        s.next().await
    });
    let request = rd.read_frame().await.unwrap().unwrap();
    assert_eq!(&request[..], &body(K1)[..], "the request K1");
    let mut wr = wr;
    wr.write_all(&hex(K1K)).await.unwrap();
    // A keep-alive is not an item: the stream still waits. Then it ends.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!call.is_finished());
    wr.write_all(&hex("0a|0801980101")).await.unwrap(); // stream_end
    let last = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .unwrap()
        .unwrap();
    assert!(last.is_none(), "{last:?}");
}

#[tokio::test]
async fn our_server_sends_k1k_keepalives_at_the_interval_asked() {
    let server = Server::builder()
        .streaming("/ticks", |_, _| async move {
            Ok(futures_util::stream::pending::<Result<Bytes, HandlerError>>())
        })
        .build()
        .unwrap();
    let mut raw = RawPeer::serve_on(&server);
    // K1 asking for a keep-alive every 100 ms (`b8 01 64`).
    raw.send_hex("20|08011a062f7469636b73a00110b80164").await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let (frame, _) = raw.reply_within(Duration::from_secs(2)).await;
        assert_eq!(&frame[..], &body(K1K)[..]);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "3 keep-alives in {took:?}"
    );
}

#[tokio::test]
async fn a_client_that_stops_writing_mid_stream_gets_an_error_not_a_hang() {
    let server = sum_server();
    let mut raw = RawPeer::serve_on(&server);
    raw.send_hex(C1).await;
    let (grant, _) = raw.reply().await;
    assert_eq!(&grant[..], &body(C1G)[..]);
    raw.send_hex(C1A).await;
    raw.wr.shutdown().await.unwrap(); // no end of the items will ever come
    let (_, env) = raw.reply_within(Duration::from_secs(2)).await;
    assert_eq!((env.id, env.err_type), (1, 4));
    let text = env.err_text();
    assert!(text.contains("stopped sending"), "{text}");
}
