//! `#[uds::service]` end to end: the issue's Calculator sketch, JSON and
//! proto codecs, application errors, context, wire names, streaming.

use std::time::Duration;

use futures_util::StreamExt;
use uds::rpc::{Client, RpcError};

/// The calculator's application error.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum MathError {
    /// Division by zero.
    DivideByZero,
}

impl std::fmt::Display for MathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("divide by zero")
    }
}

/// A calculator.
#[uds::service]
pub trait Calculator {
    /// Adds.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides, failing on zero.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Sums, under the wire name a Go server would use.
    #[uds(name = "/math/sum")]
    async fn sum(&self, ctx: &uds::Context, ints: Vec<i64>) -> i64;
    /// Counts up every `every_ms` milliseconds.
    async fn ticks(&self, every_ms: u64) -> uds::ServerStream<u64>;
    /// The caller's uid.
    async fn whoami(&self, ctx: &uds::Context) -> u32;
    /// Does nothing.
    async fn reset(&self);
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }
    async fn sum(&self, ctx: &uds::Context, ints: Vec<i64>) -> i64 {
        assert!(ctx.deadline().is_some());
        ints.iter().sum()
    }
    async fn ticks(&self, every_ms: u64) -> uds::ServerStream<u64> {
        let (tx, stream) = uds::ServerStream::channel(4);
        tokio::spawn(async move {
            for i in 0.. {
                tokio::time::sleep(Duration::from_millis(every_ms)).await;
                if tx.send(i).await.is_err() {
                    break; // the client went away
                }
            }
        });
        stream
    }
    async fn whoami(&self, ctx: &uds::Context) -> u32 {
        ctx.peer().uid
    }
    async fn reset(&self) {}
}

/// The server runs as long as its handle lives: keep it with the client.
fn start() -> (uds::rpc::Server, CalculatorClient) {
    let server = CalculatorServer::new(Calc).build().unwrap();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    (server, CalculatorClient::from_conn(a))
}

#[tokio::test]
async fn calculator_methods_work_end_to_end() {
    let (_server, calc) = start();
    assert_eq!(calc.add(2, 3).await.unwrap(), 5);
    assert_eq!(calc.div(7, 2).await.unwrap(), 3);
    assert_eq!(
        calc.div(1, 0).await,
        Err(uds::CallError::App(MathError::DivideByZero))
    );
    assert_eq!(calc.sum(vec![1, 2, 3]).await.unwrap(), 6);
    assert_eq!(
        calc.whoami().await.unwrap(),
        uds::Cred::current().unwrap().uid
    );
    calc.reset().await.unwrap();
    let ticks: Vec<u64> = calc
        .ticks(5)
        .await
        .unwrap()
        .take(3)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(ticks, vec![0, 1, 2]);
    assert_eq!(
        CalculatorServer::<Calc>::METHODS,
        [
            "/Calculator/add",
            "/Calculator/div",
            "/math/sum",
            "/Calculator/ticks",
            "/Calculator/whoami",
            "/Calculator/reset"
        ]
    );
}

#[tokio::test]
async fn wire_format_is_the_documented_json() {
    // One argument: its JSON itself (a Go JSON server can be called);
    // several: an object keyed by parameter name.
    let (_server, calc) = start();
    let rpc: &Client = calc.rpc();
    assert_eq!(rpc.call("/math/sum", "[4,5]").await.unwrap(), "9");
    assert_eq!(
        rpc.call("/Calculator/add", r#"{"a":1,"b":2}"#)
            .await
            .unwrap(),
        "3"
    );
    match rpc.call("/Calculator/div", r#"{"a":1,"b":0}"#).await {
        Err(RpcError::Application { data, message }) => {
            assert_eq!(&data[..], br#""DivideByZero""#);
            assert_eq!(message, r#""DivideByZero""#);
        }
        other => panic!("{other:?}"),
    }
    // A wrong argument is bad data, not a crash.
    assert!(matches!(
        rpc.call("/Calculator/add", r#"{"a":"x"}"#).await,
        Err(RpcError::BadData { .. })
    ));
}

/// A proto service (vectors A10, A11).
pub mod proto {
    /// Echo request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoRequest {
        /// Payload.
        #[prost(bytes = "bytes", tag = "1")]
        pub data: bytes::Bytes,
    }

    /// Echo reply.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoReply {
        /// Payload.
        #[prost(bytes = "bytes", tag = "1")]
        pub data: bytes::Bytes,
    }

    /// Echo service.
    #[uds::service(codec = "proto")]
    pub trait Echo {
        /// Echoes.
        #[uds(name = "/echo")]
        async fn echo(&self, req: EchoRequest) -> EchoReply;
        /// Pongs.
        async fn ping(&self) -> EchoReply;
    }

    /// The implementation.
    #[derive(Debug)]
    pub struct Imp;

    impl Echo for Imp {
        async fn echo(&self, req: EchoRequest) -> EchoReply {
            EchoReply { data: req.data }
        }
        async fn ping(&self) -> EchoReply {
            EchoReply {
                data: "pong".into(),
            }
        }
    }
}

#[tokio::test]
async fn proto_service_speaks_the_go_proto_format() {
    let server = proto::EchoServer::new(proto::Imp).build().unwrap();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let client = proto::EchoClient::from_conn(a);
    let reply = client
        .echo(proto::EchoRequest {
            data: "hello".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.data, "hello");
    assert_eq!(client.ping().await.unwrap().data, "pong");
    // Vector A10: data = message {bytes data = 1: "hello"} = 0a0568656c6c6f.
    let raw = client
        .rpc()
        .call("/echo", &b"\x0a\x05hello"[..])
        .await
        .unwrap();
    assert_eq!(&raw[..], b"\x0a\x05hello");
}

/// A raw-identifier parameter is keyed by its name without `r#` on the
/// wire (PROTOCOL.md §3.1), as a Go peer would name it.
#[tokio::test]
async fn raw_identifier_parameters_are_keyed_without_r_hash() {
    #[uds::service]
    trait Typed {
        async fn pick(&self, r#type: String, count: u32) -> String;
    }
    struct Impl;
    impl Typed for Impl {
        async fn pick(&self, r#type: String, count: u32) -> String {
            let kind = r#type;
            format!("{count} of {kind}")
        }
    }
    let server = TypedServer::new(Impl).build().unwrap();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let client = TypedClient::from_conn(a);
    assert_eq!(client.pick("apple".into(), 3).await.unwrap(), "3 of apple");
    // What a Go peer sends: the key "type".
    let raw = client
        .rpc()
        .call("/Typed/pick", r#"{"type":"pear","count":2}"#)
        .await
        .unwrap();
    assert_eq!(&raw[..], br#""2 of pear""#);
}

/// What a Go JSON peer needs (issue 13, measured against the Go package):
/// a method with no result replies `null`, not empty data, which the Go
/// json-rpc client cannot unmarshal; a call with no arguments sends `null`,
/// which Go JSON handlers decode, and our server still accepts empty data
/// from older peers.
#[tokio::test]
async fn json_no_result_and_no_arguments_are_null_on_the_wire() {
    #[uds::service]
    #[allow(dead_code)] // only its client is used: the server here is raw
    trait Probe {
        async fn hello(&self) -> String;
    }
    let (_server, calc) = start();
    assert_eq!(
        &calc.rpc().call("/Calculator/reset", "null").await.unwrap()[..],
        b"null"
    );
    assert_eq!(
        &calc.rpc().call("/Calculator/reset", "").await.unwrap()[..],
        b"null"
    );
    // The client side: a no-argument call's request is `null`.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let server = uds::rpc::Server::builder()
        .handler("/Probe/hello", {
            let seen = seen.clone();
            move |_ctx, data: bytes::Bytes| {
                *seen.lock().unwrap() = Some(data);
                async { Ok(bytes::Bytes::from_static(br#""hi""#)) }
            }
        })
        .build()
        .unwrap();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    assert_eq!(ProbeClient::from_conn(a).hello().await.unwrap(), "hi");
    assert_eq!(seen.lock().unwrap().as_deref(), Some(&b"null"[..]));
}
