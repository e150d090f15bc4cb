//! Memory an idle RPC connection keeps after a large call (issue 10, item 5):
//! its frame readers' buffers and spare bodies, and its outboxes' recycled
//! batches, on both the client's and the server's side. Its own test binary:
//! it installs a global allocator that counts live heap bytes.

use std::time::Duration;

use bytes::Bytes;
use uds::rpc::{Client, Server};

#[global_allocator]
static GLOBAL: uds_tests::alloc::Counting = uds_tests::alloc::Counting::new();

fn live_kib() -> i64 {
    GLOBAL.live_bytes() / 1024
}

/// Connections measured at once.
const CONNECTIONS: usize = 100;
/// Well over the time an idle connection takes to give its buffers back
/// (`uds::frame::DEFAULT_IDLE_RELEASE` to twice that), on a loaded machine.
const IDLE: Duration = Duration::from_millis(2500);
/// The documented bound on what an idle connection keeps, both ends.
const IDLE_BOUND_KIB: i64 = 64;

/// Starts a server, opens `CONNECTIONS` connections to it, makes each do
/// `work`, waits `idle`, and returns the live heap per connection in KiB
/// beyond what the process held before the connections were opened (both
/// ends: client and server). Everything is closed again before it returns.
async fn kib_per_idle_connection<F, Fut>(work: F, idle: Duration) -> i64
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Client>,
{
    let server = echo_server();
    let before = live_kib();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let (a, b) = uds::net::pair().unwrap();
        server.serve_connection(b);
        clients.push(work(Client::new(a)).await);
    }
    tokio::time::sleep(idle).await;
    let after = live_kib();
    let per = (after - before) / i64::try_from(CONNECTIONS).unwrap();
    // The connections are still open (and so still counted) until here,
    // and serve calls, small and large, as before.
    let big = Bytes::from(vec![3u8; 1 << 20]);
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c.call("/echo", "again").await.unwrap(), "again");
        if i % 10 == 0 {
            assert_eq!(c.call("/echo", big.clone()).await.unwrap(), big);
        }
    }
    drop(clients);
    let report = server.shutdown(Duration::from_secs(5)).await;
    assert!(report.graceful, "{report:?}");
    drop(server);
    // Let the connections' tasks end and free what they hold.
    tokio::time::sleep(Duration::from_millis(200)).await;
    per
}

fn echo_server() -> Server {
    Server::builder()
        .handler("/echo", |_, req| async move { Ok(req) })
        .build()
        .unwrap()
}

/// One 1 MiB echo call, then a burst of 256 concurrent 7 KiB ones (frames
/// small enough to be copied into the outboxes' batches rather than written
/// in place: the batches grow to hold what is queued).
async fn large_then_burst(client: Client) -> Client {
    let big = Bytes::from(vec![7u8; 1 << 20]);
    assert_eq!(client.call("/echo", big).await.unwrap().len(), 1 << 20);
    let small = Bytes::from(vec![9u8; 7 * 1024]);
    let burst: Vec<_> = (0..256)
        .map(|_| {
            let (c, d) = (client.clone(), small.clone());
            tokio::spawn(async move { c.call("/echo", d).await.map(|r| r.len()) })
        })
        .collect();
    for call in burst {
        assert_eq!(call.await.unwrap().unwrap(), 7 * 1024);
    }
    client
}

#[test]
fn an_idle_connection_releases_its_buffers_after_a_large_call() {
    uds_tests::one_at_a_time(async {
        // A connection that has made one tiny call, idle for well over the
        // release period: what any idle connection costs.
        let tiny = kib_per_idle_connection(
            |c| async move {
                assert_eq!(c.call("/echo", "x").await.unwrap(), "x");
                c
            },
            IDLE,
        )
        .await;
        // Right after large calls: the buffers are there (and reused while
        // the connection is busy).
        let busy = kib_per_idle_connection(large_then_burst, Duration::from_millis(0)).await;
        // Idle for well over the release period.
        let idle = kib_per_idle_connection(large_then_burst, IDLE).await;
        eprintln!(
            "live heap per connection (client + server): {tiny} KiB idle after one tiny call, \
             {busy} KiB right after a 1 MiB call and a burst, {idle} KiB once idle 2.5 s"
        );
        assert!(
            idle <= IDLE_BOUND_KIB,
            "an idle connection keeps {idle} KiB after a large call (bound {IDLE_BOUND_KIB} KiB)"
        );
        assert!(
            tiny <= IDLE_BOUND_KIB,
            "an idle connection keeps {tiny} KiB after a tiny call"
        );
    });
}
