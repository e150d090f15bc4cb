//! Typed streams against `PROTOCOL.md` §6.5, and the proto close
//! handshake run to the end on both sides.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use uds::frame::__wire::put_frame;
use uds::frame::FrameReader;
use uds::stream::{JsonStream, ProtoStream, StreamError};

#[derive(Clone, PartialEq, prost::Message)]
struct Item {
    #[prost(int32, tag = "1")]
    id: i32,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[allow(non_snake_case)]
struct Text {
    Text: String,
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| *c != '|').collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// One of our streams against a raw peer reading and writing bytes.
fn raw_pair() -> (uds::net::Conn, tokio::net::UnixStream) {
    let (a, b) = uds::net::pair().unwrap();
    (a, b.into_parts().0)
}

async fn read_raw(r: &mut FrameReader<tokio::net::unix::OwnedReadHalf>) -> Vec<u8> {
    let body = tokio::time::timeout(Duration::from_secs(5), r.read_frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut out = BytesMut::new();
    put_frame(&body, &mut out).unwrap();
    out.to_vec()
}

#[tokio::test]
async fn proto_stream_bytes_match_s1_to_s8() {
    let (ours, raw) = raw_pair();
    let (rd, mut wr) = raw.into_split();
    let mut r = FrameReader::new(rd);
    let mut s: ProtoStream<Item> = ProtoStream::new(ours);

    // Our data frames are the Go client's (S1, S2).
    s.send(&Item {
        id: 0,
        data: b"hello".to_vec(),
    })
    .await
    .unwrap();
    assert_eq!(read_raw(&mut r).await, hex("10|01120568656c6c6f"));
    s.send(&Item {
        id: 1,
        data: b"hello".to_vec(),
    })
    .await
    .unwrap();
    assert_eq!(read_raw(&mut r).await, hex("14|010801120568656c6c6f"));

    // The Go server's data (S5) decodes.
    wr.write_all(&hex("14|010801120568656c6c6f")).await.unwrap();
    let got = s.recv().await.unwrap().unwrap();
    assert_eq!(
        got,
        Item {
            id: 1,
            data: b"hello".to_vec()
        }
    );

    // Closing: we send close (S3); the peer acks (S4), sends one more item,
    // then its own close (S7); we ack it (S8) and return the item.
    let closing = tokio::spawn(s.close());
    assert_eq!(read_raw(&mut r).await, hex("02|02"));
    wr.write_all(&hex("02|03")).await.unwrap();
    wr.write_all(&hex("14|010801120568656c6c6f")).await.unwrap();
    wr.write_all(&hex("02|02")).await.unwrap();
    assert_eq!(read_raw(&mut r).await, hex("02|03"));
    let rest = closing.await.unwrap().unwrap();
    assert_eq!(
        rest,
        vec![Item {
            id: 1,
            data: b"hello".to_vec()
        }]
    );
    // And our side shut the connection down.
    assert!(r.read_frame().await.unwrap().is_none());
}

#[tokio::test]
async fn ack_may_overtake_data_and_peer_may_hang_up_after_acking() {
    // S4's note: the Go server's ack may arrive before its earlier data.
    let (ours, raw) = raw_pair();
    let (rd, mut wr) = raw.into_split();
    let mut r = FrameReader::new(rd);
    let s: ProtoStream<Item> = ProtoStream::new(ours);
    let closing = tokio::spawn(s.close());
    assert_eq!(read_raw(&mut r).await, hex("02|02"));
    wr.write_all(&hex("02|03")).await.unwrap(); // ack first
    wr.write_all(&hex("10|01120568656c6c6f")).await.unwrap(); // then data
    drop(wr); // and it hangs up without its own close
    drop(r);
    let rest = closing.await.unwrap().unwrap();
    assert_eq!(
        rest,
        vec![Item {
            id: 0,
            data: b"hello".to_vec()
        }]
    );
}

#[tokio::test]
async fn both_sides_close_cleanly_whoever_starts() {
    for client_first in [true, false] {
        let (a, b) = uds::net::pair().unwrap();
        let mut client: ProtoStream<Item> = ProtoStream::new(a);
        let mut server: ProtoStream<Item> = ProtoStream::new(b);
        for i in 0..3 {
            client
                .send(&Item {
                    id: i,
                    data: vec![],
                })
                .await
                .unwrap();
        }
        let server_task = tokio::spawn(async move {
            let mut got = Vec::new();
            if client_first {
                while let Some(item) = server.recv().await.unwrap() {
                    got.push(item.id);
                    server
                        .send(&Item {
                            id: item.id * 10,
                            data: vec![],
                        })
                        .await
                        .unwrap();
                }
                let rest = server.close().await.unwrap();
                assert!(rest.is_empty());
            } else {
                for _ in 0..3 {
                    got.push(server.recv().await.unwrap().unwrap().id);
                }
                let rest = server.close().await.unwrap();
                assert!(rest.is_empty(), "{rest:?}");
            }
            got
        });
        let rest = tokio::time::timeout(Duration::from_secs(5), client.close())
            .await
            .expect("close completes: nothing hangs")
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), server_task)
            .await
            .expect("server side completes")
            .unwrap();
        assert_eq!(got, vec![0, 1, 2]);
        if client_first {
            let ids: Vec<i32> = rest.iter().map(|i| i.id).collect();
            assert_eq!(
                ids,
                vec![0, 10, 20],
                "replies sent before the server's close are kept"
            );
        }
    }
}

#[tokio::test]
async fn protocol_violations_and_timeouts_are_typed() {
    let (ours, raw) = raw_pair();
    let (_rd, mut wr) = raw.into_split();
    let mut s: ProtoStream<Item> = ProtoStream::new(ours);
    wr.write_all(&hex("02|07")).await.unwrap();
    assert!(matches!(s.recv().await, Err(StreamError::Protocol(_))));

    let (ours, raw) = raw_pair();
    let (_rd, mut wr) = raw.into_split();
    let mut s: ProtoStream<Item> = ProtoStream::new(ours);
    wr.write_all(&hex("02|03")).await.unwrap(); // ack without close
    assert!(matches!(s.recv().await, Err(StreamError::Protocol(_))));

    let (ours, raw) = raw_pair();
    let s: ProtoStream<Item> = ProtoStream::new(ours).close_timeout(Duration::from_millis(100));
    match s.close().await {
        Err(StreamError::CloseTimeout(d)) => assert_eq!(d, Duration::from_millis(100)),
        other => panic!("expected CloseTimeout, got {other:?}"),
    }
    drop(raw);

    let (ours, raw) = raw_pair();
    let mut s: ProtoStream<Item> = ProtoStream::new(ours);
    drop(raw);
    assert!(matches!(s.recv().await, Err(StreamError::PeerGone)));
}

#[tokio::test]
async fn peer_initiated_close_ends_recv_and_our_close_completes() {
    let (a, b) = uds::net::pair().unwrap();
    let s: ProtoStream<Item> = ProtoStream::new(a);
    let mut peer: ProtoStream<Item> = ProtoStream::new(b);
    let peer_task = tokio::spawn(async move {
        assert!(
            peer.recv().await.unwrap().is_none(),
            "our close ends its recv"
        );
        assert!(peer.recv().await.unwrap().is_none(), "and keeps ending it");
        peer.close().await.unwrap()
    });
    assert!(s.close().await.unwrap().is_empty());
    assert!(peer_task.await.unwrap().is_empty());
}

#[tokio::test]
async fn json_stream_matches_j1_and_ends_at_eof() {
    let (ours, raw) = raw_pair();
    let (rd, mut wr) = raw.into_split();
    let mut r = FrameReader::new(rd);
    let mut s: JsonStream<Text> = JsonStream::new(ours);
    s.send(&Text {
        Text: "hello".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        read_raw(&mut r).await,
        hex("20|7b2254657874223a2268656c6c6f227d")
    );
    wr.write_all(&hex("20|7b2254657874223a2268656c6c6f227d"))
        .await
        .unwrap();
    assert_eq!(
        s.recv().await.unwrap(),
        Some(Text {
            Text: "hello".into()
        })
    );
    wr.write_all(&hex("06|7b7d7d")).await.unwrap(); // `{}}`: not JSON
    assert!(matches!(s.recv().await, Err(StreamError::Codec(_))));
    drop(wr);
    assert_eq!(s.recv().await.unwrap(), None);
    s.close().await.unwrap();
    assert!(r.read_frame().await.unwrap().is_none());
}
