//! Heap allocations per unary call, client and server together, in steady
//! state (issue target: at most 3), raw and as typed proto calls. Its own test binary: it installs a
//! counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use uds::rpc::{Client, Server};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..n {
            call().await;
        }
        let after = ALLOCS.load(Ordering::Relaxed);
        f64::from(u32::try_from(after - before).unwrap()) / f64::from(n)
    })
}

#[test]
fn unary_call_allocates_at_most_three_times() {
    for proto in [false, true] {
        for payload in [16usize, 1024, 10 * 1024, 100 * 1024, 1000 * 1024] {
            let per_call = allocs_per_call(payload, proto);
            let kind = if proto { "proto" } else { "raw" };
            eprintln!(
                "{kind} payload {payload} B: {per_call:.2} allocations per call (client + server)"
            );
            assert!(
                per_call <= 3.0,
                "{per_call:.2} allocations per {kind} call at {payload} B"
            );
        }
    }
}
