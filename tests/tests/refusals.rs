//! A server that refuses says so: a call that arrives while the server
//! drains is answered at once with `RpcError::ShuttingDown` (retryable: it
//! did not run), the connection's last frame says "shutting down", and a
//! peer the accept policy denies reads "permission denied" before the close
//! (that one needs a second uid: see `security.rs`). On the wire: code 4
//! with `reason` (field 21) 1 or 2, which Go peers ignore.

use std::time::{Duration, Instant};

use uds::rpc::{Client, RpcError, Server};

fn slow_server() -> Server {
    Server::builder()
        .handler("/slow", |_, req| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(req)
        })
        .handler("/fast", |_, req| async move { Ok(req) })
        .build()
        .unwrap()
}

fn is_shutting_down(e: &RpcError) -> bool {
    matches!(e, RpcError::ShuttingDown { message } if message == "uds: server shutting down")
}

async fn draining_answers_new_calls_at_once(go_compatible: bool) {
    let server = slow_server();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let client = Client::builder().go_compatible(go_compatible).build(a);
    let c2 = client.clone();
    let in_flight = tokio::spawn(async move { c2.call("/slow", "done").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Sent while the slow call drains: refused at once, not after the close.
    let t = Instant::now();
    let e = client.call("/fast", "x").await.unwrap_err();
    assert!(is_shutting_down(&e), "{e:?}");
    assert!(e.is_retryable(), "the call did not run: retry elsewhere");
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "answered at once, took {:?}",
        t.elapsed()
    );
    assert!(e.to_string().contains("did not run"), "{e}");

    // The call in flight finishes normally.
    assert_eq!(in_flight.await.unwrap().unwrap(), "done");
    assert!(stopping.await.unwrap().graceful);
    // After the drain, the connection's last word was "shutting down".
    let e = client.call("/fast", "x").await.unwrap_err();
    assert!(is_shutting_down(&e), "after the close: {e:?}");
}

#[tokio::test]
async fn a_call_sent_during_graceful_drain_is_refused_at_once_as_shutting_down() {
    draining_answers_new_calls_at_once(false).await;
}

#[tokio::test]
async fn the_go_compatible_client_also_gets_shutting_down() {
    draining_answers_new_calls_at_once(true).await;
}

#[tokio::test]
async fn an_idle_connection_of_a_stopped_server_fails_later_calls_as_shutting_down() {
    let server = slow_server();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let client = Client::new(a);
    assert_eq!(client.call("/fast", "x").await.unwrap(), "x");
    assert!(server.shutdown(Duration::from_secs(1)).await.graceful);
    let e = client.call("/fast", "x").await.unwrap_err();
    assert!(is_shutting_down(&e), "{e:?}");
}

#[tokio::test]
async fn calls_cut_short_by_a_hard_stop_are_not_reported_as_not_run() {
    let server = slow_server();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    let client = Client::new(a);
    let c2 = client.clone();
    let in_flight = tokio::spawn(async move { c2.call("/slow", "x").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!server.shutdown(Duration::from_millis(20)).await.graceful);
    // It may have run in part: not `ShuttingDown` ("did not run").
    let e = in_flight.await.unwrap().unwrap_err();
    assert!(!matches!(e, RpcError::ShuttingDown { .. }), "{e:?}");
}
