//! Heap allocations per unary call, client and server together, in steady
//! state (issue target: at most 2), raw and as typed proto calls. Its own test binary: it installs a
//! counting global allocator.

use bytes::Bytes;
use uds::rpc::{Client, Server};

#[global_allocator]
static GLOBAL: uds_tests::alloc::Counting = uds_tests::alloc::Counting::new();

/// The echo request and reply of the proto case (as the benchmark's).
#[derive(Clone, PartialEq, prost::Message)]
struct EchoMsg {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

/// Allocations per call, averaged over up to 10 000 calls after a warm-up;
/// `proto` makes them typed proto calls rather than raw ones.
fn allocs_per_call(payload: usize, proto: bool) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Server::builder()
            .handler("/echo", |_, req| async move { Ok(req) })
            .proto("/proto", |_, req: EchoMsg| async move {
                Ok::<_, uds::rpc::HandlerError>(req)
            })
            .build()
            .unwrap();
        let (a, b) = uds::net::pair().unwrap();
        server.serve_connection(b);
        let client = Client::new(a);
        let data = Bytes::from(vec![1u8; payload]);
        let msg = EchoMsg { data: data.clone() };
        let call = || async {
            if proto {
                let reply: EchoMsg = client.call_proto("/proto", &msg).await.unwrap();
                assert_eq!(reply.data.len(), payload);
            } else {
                assert_eq!(
                    client.call("/echo", data.clone()).await.unwrap().len(),
                    payload
                );
            }
        };
        // 10 000 calls, fewer for large payloads (at most ~1 GB moved).
        let n = u32::try_from((1_000_000_000 / payload.max(1)).clamp(500, 10_000)).unwrap();
        for _ in 0..n / 5 {
            call().await;
        }
        let before = GLOBAL.allocs();
        for _ in 0..n {
            call().await;
        }
        let after = GLOBAL.allocs();
        f64::from(u32::try_from(after - before).unwrap()) / f64::from(n)
    })
}

#[test]
fn unary_call_allocates_at_most_twice() {
    for proto in [false, true] {
        for payload in [16usize, 1024, 10 * 1024, 100 * 1024, 1000 * 1024] {
            let per_call = allocs_per_call(payload, proto);
            let kind = if proto { "proto" } else { "raw" };
            eprintln!(
                "{kind} payload {payload} B: {per_call:.2} allocations per call (client + server)"
            );
            assert!(
                per_call <= 2.0,
                "{per_call:.2} allocations per {kind} call at {payload} B"
            );
        }
    }
}
