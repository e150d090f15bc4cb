//! RPC against the vectors of `PROTOCOL.md` §6.2–6.4 and §6.6: our encoder's
//! bytes, our decoder on the Go bytes, our server's replies to the Go
//! requests, and our client against Go-style replies.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use uds::frame::__wire::FrameDecoder;
use uds::frame::FrameReader;
use uds::rpc::__wire::Envelope;
use uds::rpc::{Client, HandlerError, RpcError, Server};

const EXP: i64 = 4_102_444_800_000_000_000; // 2100-01-01

/// Splits `header|body` hex into the body, checking the header.
fn body(frame_hex: &str) -> Bytes {
    let mut buf = BytesMut::from(&hex(frame_hex)[..]);
    let b = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "one frame in {frame_hex}");
    b
}

fn env(id: u32, method: &str, data: &[u8]) -> Envelope {
    let mut e = Envelope::default();
    e.id = id;
    e.exp_unix_nano = EXP;
    e.method = Bytes::copy_from_slice(method.as_bytes());
    e.data = Bytes::copy_from_slice(data);
    e
}

use uds_tests::envelope_frame as encode_frame;
use uds_tests::hex;
use uds_tests::raw::RawPeer;

const A1: &str = "34|080110808098b5f5f9b3f7381a052f6563686f220568656c6c6f";
const A6: &str = "26|080610808098b5f5f9b3f7381a052f6563686f";
const A7: &str = "2e|080710808098b5f5f9b3f7381a062f656d707479220178";
const A12_1: &str = "34|080a10808098b5f5f9b3f7381a062f736c656570220435306d73";
const A12_2: &str = "2c|080b10808098b5f5f9b3f7381a052f6563686f220162";
const A2: &str = "34|080210808098b5f5f9b3f7381a052f6e6f7065220568656c6c6f";
const A8: &str =
    "52|080110808098b5f5f9b3f7381a092f6d6174682f73756d22107b22496e7473223a5b312c322c335d7d";
const A10: &str = "38|080110808098b5f5f9b3f7381a052f6563686f22070a0568656c6c6f";
const A11: &str = "28|080210808098b5f5f9b3f7381a062f71756f7465";
const D6: &str = "22|0801100a1a052f6563686f22026869380f";

#[test]
fn encoder_produces_the_go_request_bytes() {
    assert_eq!(encode_frame(&env(1, "/echo", b"hello")), hex(A1));
    assert_eq!(encode_frame(&env(6, "/echo", b"")), hex(A6));
    assert_eq!(encode_frame(&env(7, "/empty", b"x")), hex(A7));
    assert_eq!(encode_frame(&env(10, "/sleep", b"50ms")), hex(A12_1));
    assert_eq!(encode_frame(&env(11, "/echo", b"b")), hex(A12_2));
    assert_eq!(encode_frame(&env(2, "/nope", b"hello")), hex(A2));
    assert_eq!(
        encode_frame(&env(1, "/math/sum", br#"{"Ints":[1,2,3]}"#)),
        hex(A8)
    );
    assert_eq!(
        encode_frame(&env(1, "/echo", &hex("0a0568656c6c6f"))),
        hex(A10)
    );
    assert_eq!(encode_frame(&env(2, "/quote", b"")), hex(A11));
    // The minimal reply form of the vectors.
    let mut reply = Envelope::default();
    reply.id = 1;
    reply.data = Bytes::from_static(b"hello");
    assert_eq!(encode_frame(&reply), hex("12|0801220568656c6c6f"));
    // E4: an error reply with id.
    let mut e4 = Envelope::default();
    e4.id = 1;
    e4.err_type = 4;
    e4.err = Bytes::from_static(b"server says no");
    assert_eq!(
        encode_frame(&e4),
        hex("28|08012804320e7365727665722073617973206e6f")
    );
}

#[test]
fn decoder_reads_every_go_frame() {
    let a1r = Envelope::decode(&body(A1)).unwrap();
    assert_eq!((a1r.id, a1r.exp_unix_nano), (1, EXP));
    assert_eq!(a1r.method_str(), Some("/echo"));
    assert_eq!(&a1r.data[..], b"hello");

    let a7r = Envelope::decode(&body("28|080710808098b5f5f9b3f7381a062f656d707479")).unwrap();
    assert_eq!((a7r.id, a7r.data.len()), (7, 0));

    let sleep_reply = Envelope::decode(&body(
        "40|080a10808098b5f5f9b3f7381a062f736c656570220a736c6570742035306d73",
    ))
    .unwrap();
    assert_eq!(
        (sleep_reply.id, &sleep_reply.data[..]),
        (10, &b"slept 50ms"[..])
    );

    // The Go server's id-less errors.
    let a2r = Envelope::decode(&body(
        "38|280132186d6574686f64282f6e6f7065293a206e6f7420666f756e64",
    ))
    .unwrap();
    assert_eq!((a2r.id, a2r.err_type), (0, 1));
    assert_eq!(a2r.err_text(), "method(/nope): not found");
    let a3r = Envelope::decode(&body("2e|2801321368616e646c6572206572726f723a20626f6f6d")).unwrap();
    assert_eq!(
        (a3r.id, a3r.err_type, a3r.err_text().as_str()),
        (0, 1, "handler error: boom")
    );

    let e1 = Envelope::decode(&body("14|08012805320466697665")).unwrap();
    assert_eq!((e1.id, e1.err_type, e1.err_text().as_str()), (1, 5, "five"));
    let e3 = Envelope::decode(&body("24|08012801320c313030252073757265202564")).unwrap();
    assert_eq!(e3.err_text(), "100% sure %d");

    let a8r = Envelope::decode(&body(
        "66|080110808098b5f5f9b3f7381a092f6d6174682f73756d221a7b2253756d223a362c22457272223a7b224d7367223a22227d7d",
    ))
    .unwrap();
    assert_eq!(&a8r.data[..], br#"{"Sum":6,"Err":{"Msg":""}}"#);
    let quote_reply = Envelope::decode(&body(
        "46|080210808098b5f5f9b3f7381a062f71756f7465220d0a0b68656c6c6f2071756f7465",
    ))
    .unwrap();
    assert_eq!(
        &quote_reply.data[..],
        &hex("0a0b68656c6c6f2071756f7465")[..]
    );

    // D6: unknown field 7 is skipped; the 1970 deadline is read.
    let d6 = Envelope::decode(&body(D6)).unwrap();
    assert_eq!((d6.id, d6.exp_unix_nano, &d6.data[..]), (1, 10, &b"hi"[..]));
    // D1 and A5.
    assert!(Envelope::decode(&Bytes::from_static(&[0xff, 0xff, 0xff])).is_err());
    assert_eq!(Envelope::decode(&Bytes::new()).unwrap().id, 0);
}

/// Protobuf messages of vectors §4 and §5, derived in Rust.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoMsg {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct QuoteReq {}

#[derive(Clone, PartialEq, prost::Message)]
struct QuoteResp {
    #[prost(string, tag = "1")]
    quote: String,
}

#[derive(serde::Deserialize)]
#[allow(non_snake_case)]
struct SumReq {
    Ints: Vec<i64>,
}

#[derive(serde::Serialize)]
#[allow(non_snake_case)]
struct SumResp {
    Sum: i64,
    Err: SumErr,
}

#[derive(serde::Serialize)]
#[allow(non_snake_case)]
struct SumErr {
    Msg: String,
}

fn go_like_server() -> Server {
    Server::builder()
        .handler("/echo", |_, req| async move { Ok(req) })
        .handler("/empty", |_, _| async move { Ok(Bytes::new()) })
        .handler("/sleep", |_, req| async move {
            let ms: u64 = std::str::from_utf8(&req)
                .ok()
                .and_then(|s| s.strip_suffix("ms"))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| HandlerError::bad_data("want e.g. 50ms"))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(format!("slept {ms}ms").into())
        })
        .json("/math/sum", |_, req: SumReq| async move {
            Ok::<_, HandlerError>(SumResp {
                Sum: req.Ints.iter().sum(),
                Err: SumErr { Msg: String::new() },
            })
        })
        .proto("/quote", |_, _req: QuoteReq| async move {
            Ok::<_, HandlerError>(QuoteResp {
                quote: "hello quote".into(),
            })
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn server_answers_go_requests_with_minimal_replies() {
    let server = go_like_server();
    let mut raw = RawPeer::serve_on(&server);
    raw.send_hex(A1).await;
    let (body1, r1) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!(
        &body1[..],
        &hex("0801220568656c6c6f")[..],
        "A1 → minimal reply"
    );
    assert_eq!((r1.id, &r1.data[..]), (1, &b"hello"[..]));

    raw.send_hex(A6).await;
    let (_, r6) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r6.id, r6.data.len(), r6.err_type), (6, 0, 0));

    raw.send_hex(A7).await;
    let (body7, r7) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r7.id, r7.data.len()), (7, 0));
    assert_eq!(&body7[..], &[0x08, 0x07], "empty result: data omitted");

    raw.send_hex(A8).await;
    let (_, r8) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!(r8.id, 1);
    assert_eq!(&r8.data[..], br#"{"Sum":6,"Err":{"Msg":""}}"#);

    raw.send_hex(A10).await;
    let (_, r10) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!(&r10.data[..], &hex("0a0568656c6c6f")[..]);

    raw.send_hex(A11).await;
    let (_, r11) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!(
        (r11.id, &r11.data[..]),
        (2, &hex("0a0b68656c6c6f2071756f7465")[..])
    );
}

#[tokio::test]
async fn typed_proto_and_json_calls_match_a8_a10_a11() {
    let server = go_like_server();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let client = Client::new(a);
    let echoed: EchoMsg = client
        .call_proto(
            "/echo",
            &EchoMsg {
                data: b"hello".to_vec(),
            },
        )
        .await
        .unwrap();
    assert_eq!(echoed.data, b"hello");
    let quote: QuoteResp = client.call_proto("/quote", &QuoteReq {}).await.unwrap();
    assert_eq!(quote.quote, "hello quote");
    let sum: serde_json::Value = client
        .call_json("/math/sum", &serde_json::json!({"Ints": [1, 2, 3]}))
        .await
        .unwrap();
    assert_eq!(sum, serde_json::json!({"Sum": 6, "Err": {"Msg": ""}}));
    // A JSON request that does not decode: bad data, handler not run.
    let e = client
        .call_json::<_, serde_json::Value>("/math/sum", &"nope")
        .await;
    assert!(matches!(e, Err(RpcError::BadData { .. })), "{e:?}");
}

#[tokio::test]
async fn pipelined_calls_complete_out_of_order_a12() {
    let server = go_like_server();
    let mut raw = RawPeer::serve_on(&server);
    raw.send_hex(A12_1).await;
    raw.send_hex(A12_2).await;
    let (_, first) = raw.reply_within(Duration::from_secs(5)).await;
    let (_, second) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((first.id, &first.data[..]), (11, &b"b"[..]));
    assert_eq!((second.id, &second.data[..]), (10, &b"slept 50ms"[..]));
}

#[tokio::test]
async fn errors_carry_the_id_and_the_right_code() {
    let server = Server::builder()
        .handler("/boom", |_, _| async move {
            Err::<Bytes, _>(HandlerError::server("boom"))
        })
        .build()
        .unwrap();
    let mut raw = RawPeer::serve_on(&server);
    raw.send_hex(A2).await; // unknown method /nope, id 2
    let (_, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type), (2, 1));
    assert_eq!(r.err_text(), "method /nope not found");
    assert!(r.data.is_empty());

    let mut req = env(3, "/boom", b"x");
    req.exp_unix_nano = EXP;
    raw.wr.write_all(&encode_frame(&req)).await.unwrap();
    let (_, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type, r.err_text().as_str()), (3, 4, "boom"));
}

#[tokio::test]
async fn expired_request_is_refused_unrun_d6() {
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ran2 = ran.clone();
    let server = Server::builder()
        .handler("/echo", move |_, req| {
            ran2.store(true, std::sync::atomic::Ordering::SeqCst);
            async move { Ok(req) }
        })
        .build()
        .unwrap();
    let mut raw = RawPeer::serve_on(&server);
    raw.send_hex(D6).await;
    let (_, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type), (1, 2));
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "handler must not run"
    );
}

#[tokio::test]
async fn undecodable_and_empty_requests_get_bad_data_without_echo_d1_a5() {
    let server = go_like_server();
    let mut raw = RawPeer::serve_on(&server);
    raw.send_hex("06|ffffff").await;
    let (body, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type), (0, 3));
    assert!(
        !body.windows(3).any(|w| w == [0xff, 0xff, 0xff]),
        "raw bytes echoed"
    );
    raw.send_hex("00").await; // A5
    let (_, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type), (0, 3));
    // Non-UTF-8 method name: bad data with the id.
    let mut bad = Envelope::default();
    bad.id = 9;
    bad.method = Bytes::from_static(&[0x2f, 0xff, 0xfe]);
    raw.wr.write_all(&encode_frame(&bad)).await.unwrap();
    let (_, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, r.err_type), (9, 3));
    // The connection is still served.
    raw.send_hex(A1).await;
    let (_, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, &r.data[..]), (1, &b"hello"[..]));
}

#[tokio::test]
async fn framing_violations_close_the_connection_d2_d3_d5() {
    for bad in [
        "01",
        "ffffffffffffffffffffff",
        "80808080804000000000000000000000",
    ] {
        let server = go_like_server();
        let mut raw = RawPeer::serve_on(&server);
        raw.send_hex(bad).await;
        let got = tokio::time::timeout(Duration::from_secs(5), raw.rd.read_frame())
            .await
            .expect("closed within 5s");
        assert!(
            matches!(got, Ok(None)),
            "{bad}: expected close, got {got:?}"
        );
    }
}

/// A fake Go server: answers each request with the given reply builder.
fn fake_server(
    replies: impl Fn(Envelope) -> Vec<Vec<u8>> + Send + 'static,
) -> (Client, tokio::task::JoinHandle<()>) {
    let (a, b) = uds::net::pair().unwrap();
    let client = Client::builder()
        .timeout(Duration::from_millis(500))
        .build(a);
    let (stream, _) = b.into_parts();
    let task = tokio::spawn(async move {
        let (rd, mut wr) = stream.into_split();
        let mut r = FrameReader::new(rd);
        while let Ok(Some(b)) = r.read_frame().await {
            let req = Envelope::decode(&b).unwrap();
            if req.cancel {
                continue;
            }
            for frame in replies(req) {
                wr.write_all(&frame).await.unwrap();
            }
        }
    });
    (client, task)
}

fn go_echo(req: &Envelope) -> Vec<u8> {
    // The Go server echoes id, exp and method; data = result.
    encode_frame(&req.clone())
}

#[tokio::test]
async fn client_reads_go_replies_and_error_codes() {
    let (client, _task) = fake_server(|req| {
        let method = req.method_str().unwrap().to_owned();
        let mut reply = Envelope::default();
        reply.id = req.id;
        match method.as_str() {
            "/echo" => return vec![go_echo(&req)],
            "/e4" => {
                reply.err_type = 4;
                reply.err = Bytes::from_static(b"server says no");
            }
            "/e3" => {
                reply.err_type = 1;
                reply.err = Bytes::from_static(b"100% sure %d");
            }
            "/e1" => {
                reply.err_type = 5;
                reply.err = Bytes::from_static(b"five");
            }
            "/dup" => {
                reply.data = Bytes::from_static(b"once");
                let f = encode_frame(&reply);
                return vec![f.clone(), f];
            }
            "/stray" => {
                // A reply for an id nobody waits for, then the real one.
                let mut stray = reply.clone();
                stray.id = req.id.wrapping_add(1000);
                reply.data = Bytes::from_static(b"real");
                return vec![encode_frame(&stray), encode_frame(&reply)];
            }
            _ => {
                // The Go server's id-less error (A2r).
                return vec![hex(
                    "38|280132186d6574686f64282f6e6f7065293a206e6f7420666f756e64",
                )];
            }
        }
        vec![encode_frame(&reply)]
    });
    assert_eq!(client.call("/echo", "hello").await.unwrap(), "hello");
    assert_eq!(
        client.call("/e4", "").await,
        Err(RpcError::Server {
            message: "server says no".into()
        })
    );
    assert_eq!(
        client.call("/e3", "").await,
        Err(RpcError::MethodNotFound {
            message: "100% sure %d".into()
        })
    );
    let e1 = client.call("/e1", "").await.unwrap_err();
    assert_eq!(
        e1,
        RpcError::Unknown {
            code: 5,
            message: "five".into()
        }
    );
    assert!(!e1.is_retryable());
    // Duplicate replies are dropped; the reader is not wedged.
    assert_eq!(client.call("/dup", "").await.unwrap(), "once");
    assert_eq!(client.call("/stray", "").await.unwrap(), "real");
    assert_eq!(client.call("/echo", "again").await.unwrap(), "again");
    // An id-less error cannot be matched: the call ends at its deadline.
    let e = client.call("/nope", "").await.unwrap_err();
    assert!(matches!(e, RpcError::DeadlineExceeded { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(client.call("/echo", "still").await.unwrap(), "still");
}

#[tokio::test]
async fn client_request_bytes_match_the_go_layout() {
    let (a, b) = uds::net::pair().unwrap();
    let client = Client::new(a);
    let call = tokio::spawn(async move { client.call("/echo", "hello").await });
    let (stream, _) = b.into_parts();
    let mut r = FrameReader::new(stream);
    let body = r.read_frame().await.unwrap().unwrap();
    let e = Envelope::decode(&body).unwrap();
    // Same fields in the same order as A1, with our own deadline.
    let mut expect = env(e.id, "/echo", b"hello");
    expect.exp_unix_nano = e.exp_unix_nano;
    let mut want = Vec::new();
    expect.encode(&mut want);
    assert_eq!(&body[..], &want[..]);
    assert_ne!(e.id, 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let exp = u128::try_from(e.exp_unix_nano).unwrap();
    assert!(
        exp > now && exp <= now + 31_000_000_000,
        "deadline = now + 30 s"
    );
    drop(r);
    assert!(matches!(
        call.await.unwrap(),
        Err(RpcError::ConnectionClosed { .. })
    ));
}

#[tokio::test]
async fn server_reply_is_readable_after_a_go_style_request_split_everywhere() {
    // The Go writer sends header and body in two writes; any split works.
    let server = go_like_server();
    let mut raw = RawPeer::serve_on(&server);
    let bytes = hex(A1);
    for b in &bytes {
        raw.wr.write_all(&[*b]).await.unwrap();
        raw.wr.flush().await.unwrap();
    }
    let (_, r) = raw.reply_within(Duration::from_secs(5)).await;
    assert_eq!((r.id, &r.data[..]), (1, &b"hello"[..]));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), raw.rd.read_frame())
            .await
            .is_err(),
        "nothing more is sent"
    );
}

/// §6.3 R1: the frame a uds server writes to a peer its accept policy
/// denies, before closing: id 0, `err_type` 4, err `uds: permission denied`,
/// reason (field 21) 1.
const R1: &str = "3a|280432167564733a207065726d697373696f6e2064656e696564a80101";
/// §6.3 R2: the reply to call 1 sent to a draining server: `err_type` 4, err
/// `uds: server shutting down`, reason 2.
const R2: &str = "44|0801280432197564733a20736572766572207368757474696e6720646f776ea80102";

#[test]
fn reason_field_21_vectors_decode_and_encode_r1_r2() {
    let r1 = Envelope::decode(&body(R1)).unwrap();
    assert_eq!((r1.id, r1.err_type, r1.reason), (0, 4, 1));
    assert_eq!(r1.err_text(), "uds: permission denied");
    let r2 = Envelope::decode(&body(R2)).unwrap();
    assert_eq!((r2.id, r2.err_type, r2.reason), (1, 4, 2));
    assert_eq!(r2.err_text(), "uds: server shutting down");
    for (v, e) in [(R1, &r1), (R2, &r2)] {
        assert_eq!(encode_frame(e), hex(v), "our encoder writes {v}");
    }
}

#[tokio::test]
async fn client_maps_code_4_with_a_reason_to_typed_errors_r1_r2() {
    let (client, _task) = fake_server(|req| {
        let mut reply = Envelope::default();
        reply.id = req.id;
        reply.err_type = 4;
        match req.method_str().unwrap() {
            "/draining" => {
                let mut r = Envelope::decode(&body(R2)).unwrap();
                r.id = req.id;
                return vec![encode_frame(&r)];
            }
            "/denied" => {
                reply.reason = 1;
                reply.err = Bytes::from_static(b"uds: permission denied");
            }
            "/future" => {
                // A reason this client does not know: the code's meaning.
                reply.reason = 9;
                reply.err = Bytes::from_static(b"later");
            }
            _ => {
                // A reason on another code is ignored.
                reply.err_type = 3;
                reply.reason = 1;
                reply.err = Bytes::from_static(b"bad");
            }
        }
        vec![encode_frame(&reply)]
    });
    let e = client.call("/draining", "").await.unwrap_err();
    assert_eq!(
        e,
        RpcError::ShuttingDown {
            message: "uds: server shutting down".into()
        }
    );
    assert!(e.is_retryable());
    assert_eq!(
        client.call("/denied", "").await,
        Err(RpcError::PermissionDenied {
            message: "uds: permission denied".into()
        })
    );
    assert_eq!(
        client.call("/future", "").await,
        Err(RpcError::Server {
            message: "later".into()
        })
    );
    assert_eq!(
        client.call("/other", "").await,
        Err(RpcError::BadData {
            message: "bad".into()
        })
    );
}

#[tokio::test]
async fn a_client_that_reads_r1_before_the_close_fails_with_permission_denied() {
    let (a, b) = uds::net::pair().unwrap();
    let client = Client::new(a);
    let (mut stream, _) = b.into_parts();
    stream.write_all(&hex(R1)).await.unwrap();
    drop(stream);
    let e = client.call("/any", "x").await.unwrap_err();
    assert_eq!(
        e,
        RpcError::PermissionDenied {
            message: "uds: permission denied".into()
        }
    );
}
