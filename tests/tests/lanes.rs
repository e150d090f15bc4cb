//! A client made by `connect(path)` opens more connections ("lanes") to
//! its server under load, spreads calls over them, loses no call when the
//! server will not take another connection, and closes what it opened once
//! idle or dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use uds::rpc::{CallOptions, Client, Server, ServerBuilder};

/// A server whose connections the test can count and watch.
struct Counted {
    server: Server,
    conns: Arc<Mutex<Vec<uds::rpc::ServedConnection>>>,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Counted {
    fn start(builder: ServerBuilder) -> Counted {
        Counted::start_with(builder, false)
    }

    /// `silent`: connections after the first are accepted but never read
    /// (a server that is stuck, or not the one the first connection found).
    fn start_with(builder: ServerBuilder, silent: bool) -> Counted {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanes.sock");
        let listener = uds::net::Listener::bind(&path).unwrap();
        let server = builder
            .handler("/slow", |_, req| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(req)
            })
            .streaming("/forever", |_, _| async move {
                Ok(futures_util::stream::pending::<
                    Result<Bytes, uds::rpc::HandlerError>,
                >())
            })
            .streaming("/count", |_, _| async move {
                Ok(futures_util::stream::iter(
                    (0..3u8).map(|i| Ok(Bytes::from(vec![i]))),
                ))
            })
            .build()
            .unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let (server, conns) = (server.clone(), conns.clone());
            async move {
                let mut unread = Vec::new();
                while let Ok(conn) = listener.accept().await {
                    let mut conns = conns.lock().unwrap();
                    if silent && !conns.is_empty() {
                        unread.push(conn);
                        continue;
                    }
                    conns.push(server.serve_connection(conn));
                }
            }
        });
        Counted {
            server,
            conns,
            _dir: dir,
            path,
        }
    }

    fn accepted(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    fn open(&self) -> usize {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.is_closed())
            .count()
    }
}

/// `n` tasks making `calls` calls each (unary and streaming), all checked.
async fn load(client: &Client, tasks: usize, calls: usize) {
    let mut joins = Vec::new();
    for t in 0..tasks {
        let client = client.clone();
        joins.push(tokio::spawn(async move {
            for i in 0..calls {
                let data = Bytes::from(format!("{t}/{i}"));
                assert_eq!(client.call("/slow", data.clone()).await.unwrap(), data);
                if i % 8 == 0 {
                    let mut items = client
                        .call_stream("/count", Bytes::new(), CallOptions::default())
                        .await
                        .unwrap();
                    let mut got = Vec::new();
                    while let Some(item) = items.next_item().await {
                        got.push(item.unwrap()[0]);
                    }
                    assert_eq!(got, [0, 1, 2]);
                }
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
}

async fn eventually(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    uds_tests::eventually(what, limit, f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_a_client_opens_a_second_connection_and_closes_it_when_idle() {
    let s = Counted::start(Server::builder());
    let client = Client::connect(&s.path).await.unwrap();
    // The accept loop may not have counted it yet when connect returns.
    eventually(
        "the first connection accepted",
        Duration::from_secs(10),
        || s.accepted() == 1,
    )
    .await;
    load(&client, 16, 40).await;
    assert_eq!(s.accepted(), 2, "one more connection, for two workers");
    // Idle: the extra connection goes, the first stays and serves.
    eventually(
        "the extra connection closed",
        Duration::from_secs(10),
        || s.open() == 1,
    )
    .await;
    assert_eq!(client.call("/slow", "again").await.unwrap(), "again");
    assert!(!client.is_closed());
    // Load again: a lane again; then dropping the client closes both.
    load(&client, 16, 40).await;
    assert_eq!(s.accepted(), 3);
    drop(client);
    eventually("every connection closed", Duration::from_secs(10), || {
        s.open() == 0
    })
    .await;
    drop(s.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_the_second_connection_loses_no_call() {
    let s = Counted::start(Server::builder().max_connections_per_user(1));
    let client = Client::connect(&s.path).await.unwrap();
    load(&client, 16, 40).await;
    assert!(s.accepted() >= 2, "the client tried a second connection");
    assert_eq!(s.open(), 1, "the server kept one");
    assert!(!client.is_closed());
}

/// The first connection is never left idle while an extra one carries the
/// calls: the server's idle timeout would close it, and with it the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_connection_is_not_left_idle_for_the_server_to_close() {
    let s = Counted::start(Server::builder().idle_timeout(Some(Duration::from_millis(300))));
    let client = Client::connect(&s.path).await.unwrap();
    load(&client, 16, 40).await;
    assert_eq!(s.accepted(), 2);
    // Two new callers after the burst, one after the other: tasks are given
    // their connection in turn, so the second (after the 16 and a first
    // with one call) would be placed on the extra connection and, calling
    // alone for over a second, leave the first idle past the server's
    // timeout.
    for calls in [1, 30] {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..calls {
                client.call("/slow", "tick").await.unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
        .await
        .unwrap();
    }
    assert!(!client.is_closed());
}

/// Long streams on the first connection count as load, but an extra
/// connection that then carries no call is not opened again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_connection_that_carried_nothing_is_not_reopened_at_once() {
    let s = Counted::start(Server::builder());
    let client = Client::connect(&s.path).await.unwrap();
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(
            client
                .call_stream("/forever", Bytes::new(), CallOptions::default())
                .await
                .unwrap(),
        );
    }
    // One caller, placed on the first connection: the extra one idles.
    let caller = tokio::spawn({
        let client = client.clone();
        async move {
            for _ in 0..40 {
                client.call("/slow", "tick").await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    caller.await.unwrap();
    assert_eq!(s.accepted(), 2, "one extra connection, not one per second");
    drop(streams);
}

/// A second connection that is accepted but never read gets no call: it is
/// used only once it has answered a probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_that_never_answers_gets_no_call() {
    let s = Counted::start_with(Server::builder(), true);
    let client = Client::connect(&s.path).await.unwrap();
    let loaded = tokio::time::timeout(Duration::from_secs(20), load(&client, 16, 40)).await;
    assert!(loaded.is_ok(), "calls were sent to the silent connection");
    assert_eq!(s.accepted(), 1, "the silent connection is not served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_one_keeps_every_call_on_one_connection() {
    let s = Counted::start(Server::builder());
    let client = Client::builder()
        .max_connections(1)
        .connect(&s.path)
        .await
        .unwrap();
    load(&client, 16, 40).await;
    assert_eq!(s.accepted(), 1);
}

/// On a current-thread runtime a second connection would not run in
/// parallel: none is opened.
#[tokio::test(flavor = "current_thread")]
async fn a_single_threaded_client_keeps_one_connection() {
    let s = Counted::start(Server::builder());
    let client = Client::connect(&s.path).await.unwrap();
    load(&client, 16, 20).await;
    assert_eq!(s.accepted(), 1);
}
