//! Faults around a live server: a peer process killed mid-call (client or
//! server), the socket file removed while serving, and a graceful shutdown
//! with calls in flight. The other peer runs as a separate process (the
//! `uds-probe` binary) so that the kernel, not the test, tears the socket
//! down when it dies.
//!
//! The tests run one at a time ([`one_at_a_time`]): one counts the
//! process's descriptors, which the others would disturb, and one measures a
//! latency.
//!
//! Descriptor exhaustion at accept (`EMFILE`) is proven in `emfile.rs`
//! (`accept_survives_descriptor_exhaustion`): `Server::serve` calls the same
//! `Listener::accept`, which backs off and resumes.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use uds::net::{Listener, NetError};
use uds::rpc::{CallOptions, Client, RpcError, Server};
use uds_tests::{DropFlag, arg, eventually, one_at_a_time, open_fds};

const PROBE: &str = env!("CARGO_BIN_EXE_uds-probe");

/// Kills the child process if the test ends early.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_client_process_killed_mid_call_is_cleaned_up() {
    one_at_a_time(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicBool::new(false));
        let token = Arc::new(Mutex::new(None));
        let (d2, t2) = (dropped.clone(), token.clone());
        let server = Server::builder()
            .handler("/slow", move |ctx, _| {
                let flag = DropFlag(d2.clone());
                *t2.lock().unwrap() = Some(ctx.cancellation());
                let _ = started_tx.send(ctx.peer().pid);
                async move {
                    let _flag = flag;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(Bytes::new())
                }
            })
            .handler("/echo", |_, req| async move { Ok(req) })
            .build()
            .unwrap();
        server.serve(Listener::bind(&path).unwrap());
        let metrics = tokio::runtime::Handle::current().metrics();
        let fds_before = open_fds();
        let tasks_before = metrics.num_alive_tasks();

        let child = Command::new(PROBE)
            .args(["call", arg(&path), "/slow", "60000"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = Killed(child);
        let pid = tokio::time::timeout(Duration::from_secs(10), started.recv())
            .await
            .expect("the probe's call reached the handler")
            .unwrap();
        assert_eq!(u32::try_from(pid).unwrap(), child.0.id(), "kernel creds");
        let fds_during = open_fds();
        let tasks_during = metrics.num_alive_tasks();
        assert!(fds_during > fds_before, "the connection holds a descriptor");
        assert!(tasks_during > tasks_before, "the connection runs tasks");

        let killed_at = Instant::now();
        child.0.kill().unwrap(); // SIGKILL: no goodbye, the kernel closes the socket
        child.0.wait().unwrap();
        eventually("the handler is cancelled", Duration::from_secs(10), || {
            dropped.load(Ordering::SeqCst)
        })
        .await;
        let took = killed_at.elapsed();
        let token = token.lock().unwrap().clone().unwrap();
        assert!(token.is_cancelled(), "the call's cancellation token fired");
        eventually(
            "the connection's descriptor is closed",
            Duration::from_secs(10),
            || open_fds() == fds_before,
        )
        .await;
        eventually(
            "the connection's tasks end",
            Duration::from_secs(10),
            || metrics.num_alive_tasks() == tasks_before,
        )
        .await;
        eprintln!(
            "client killed: handler cancelled within {took:?} of the kill; fds {fds_before} -> {fds_during} -> {}; \
         tasks {tasks_before} -> {tasks_during} -> {}",
            open_fds(),
            metrics.num_alive_tasks()
        );
        // The server goes on serving.
        let client = Client::connect(&path).await.unwrap();
        assert_eq!(client.call("/echo", "next").await.unwrap(), "next");
    });
}

#[test]
fn a_killed_server_fails_every_pending_call_at_once() {
    one_at_a_time(async {
        const CALLS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let mut child = Command::new(PROBE)
            .args(["rpc-serve", arg(&path)])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut child = Killed(child);
        let (tx, mut lines) = mpsc::unbounded_channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let next_line = async |lines: &mut mpsc::UnboundedReceiver<String>| {
            tokio::time::timeout(Duration::from_secs(10), lines.recv())
                .await
                .expect("the server process said something within 10 s")
                .expect("the server process is alive")
        };
        assert_eq!(next_line(&mut lines).await, "ready");

        let client = Client::builder()
            .timeout(Duration::from_secs(60))
            .connect(&path)
            .await
            .unwrap();
        assert_eq!(client.call("/echo", "hi").await.unwrap(), "hi");
        let mut calls = Vec::new();
        for _ in 0..CALLS {
            let c = client.clone();
            calls.push(tokio::spawn(async move {
                let r = c.call("/slow", "").await;
                (r, Instant::now())
            }));
        }
        for _ in 0..CALLS {
            let line = next_line(&mut lines).await;
            assert!(line.starts_with("started "), "{line}");
        }

        let killed_at = Instant::now();
        child.0.kill().unwrap(); // SIGKILL
        let mut slowest = Duration::ZERO;
        for call in calls {
            let (r, at) = call.await.unwrap();
            assert!(matches!(r, Err(RpcError::ConnectionClosed { .. })), "{r:?}");
            slowest = slowest.max(at.duration_since(killed_at));
        }
        eprintln!(
            "server killed: {CALLS} pending calls failed, the last {slowest:?} after the kill"
        );
        assert!(
            slowest < Duration::from_millis(100),
            "pending calls failed {slowest:?} after the kill, not at once"
        );
        assert!(client.is_closed());
        assert!(matches!(
            client.call("/echo", "x").await,
            Err(RpcError::ConnectionClosed { .. })
        ));
        drop(child);
        reader.join().unwrap(); // the pipe is at EOF: the child is gone
    });
}

#[test]
fn removing_the_socket_file_keeps_connections_and_refuses_new_ones() {
    one_at_a_time(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let server = Server::builder()
            .handler("/echo", |_, req| async move { Ok(req) })
            .build()
            .unwrap();
        server.serve(Listener::bind(&path).unwrap());
        let client = Client::connect(&path).await.unwrap();
        assert_eq!(client.call("/echo", "before").await.unwrap(), "before");

        std::fs::remove_file(&path).unwrap();
        // Established connections do not depend on the file.
        for i in 0..3 {
            let msg = format!("after {i}");
            assert_eq!(client.call("/echo", msg.clone()).await.unwrap(), msg);
        }
        // New connects find nothing to connect to: a typed "not found".
        match Client::connect(&path).await {
            Err(NetError::NotFound { path: p }) => assert_eq!(p, path),
            other => panic!("expected NotFound, got {other:?}"),
        }
        // While the server lives it still holds the path's lock, so no second
        // uds server can take the path over under it; nothing is created there.
        match Listener::bind(&path) {
            Err(NetError::AddressInUse { .. }) => {}
            other => panic!("expected AddressInUse, got {other:?}"),
        }
        assert!(!path.exists());

        // Once it has shut down, the path is free again.
        let report = server.shutdown(Duration::from_secs(5)).await;
        assert!(report.graceful);
        eventually("the client sees the close", Duration::from_secs(5), || {
            client.is_closed()
        })
        .await;
        let server2 = Server::builder()
            .handler("/echo", |_, req| async move { Ok(req) })
            .build()
            .unwrap();
        server2.serve(Listener::bind(&path).unwrap());
        let client2 = Client::connect(&path).await.unwrap();
        assert_eq!(client2.call("/echo", "new").await.unwrap(), "new");
    });
}

#[test]
fn graceful_shutdown_delivers_every_in_flight_reply_on_every_connection() {
    one_at_a_time(async {
        const CONNS: usize = 4;
        const PER_CONN: usize = 5;
        const LIMIT: usize = 2; // calls running per connection; the rest queue
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let started = Arc::new(AtomicUsize::new(0));
        let s2 = started.clone();
        let server = Server::builder()
            .max_calls_per_connection(LIMIT)
            .handler("/slow", move |_, req| {
                s2.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(req)
                }
            })
            .build()
            .unwrap();
        server.serve(Listener::bind(&path).unwrap());
        let opts = CallOptions::timeout(Duration::from_secs(60));
        let mut clients = Vec::new();
        let mut calls = Vec::new();
        for c in 0..CONNS {
            let client = Client::connect(&path).await.unwrap();
            for i in 0..PER_CONN {
                let client = client.clone();
                let msg = format!("conn {c} call {i}");
                calls.push(tokio::spawn(async move {
                    let r = client.call_with("/slow", msg.clone().into(), opts).await;
                    (msg, r)
                }));
            }
            clients.push(client);
        }
        eventually(
            "every connection has its limit of calls running",
            Duration::from_secs(10),
            || started.load(Ordering::SeqCst) == CONNS * LIMIT,
        )
        .await;
        // Let the queued requests reach the server too.
        tokio::time::sleep(Duration::from_millis(50)).await;

        let t0 = Instant::now();
        let report = server.shutdown(Duration::from_secs(10)).await;
        assert!(report.graceful, "{report:?}");
        assert_eq!(report.aborted_calls, 0);
        assert!(!path.exists(), "the socket file is removed");
        let (mut replied, mut refused) = (0, 0);
        for call in calls {
            let (msg, r) = call.await.unwrap();
            match r {
                Ok(reply) => {
                    assert_eq!(reply, Bytes::from(msg));
                    replied += 1;
                }
                // Queued behind the limit and never started: answered with an
                // error, with its id, rather than dropped: `ShuttingDown`
                // (retryable, it did not run).
                Err(RpcError::ShuttingDown { message }) if message.contains("shutting down") => {
                    refused += 1;
                }
                Err(e) => panic!("{msg}: {e:?}"),
            }
        }
        eprintln!(
            "shutdown after {:?}: {replied} replies delivered, {refused} queued calls refused",
            t0.elapsed()
        );
        assert_eq!(
            replied,
            CONNS * LIMIT,
            "every call that was running got its reply"
        );
        assert_eq!(replied + refused, CONNS * PER_CONN);
        assert_eq!(started.load(Ordering::SeqCst), CONNS * LIMIT);
        // After the shutdown: existing clients see the close, new ones find no
        // socket.
        for client in &clients {
            eventually("the client sees the close", Duration::from_secs(5), || {
                client.is_closed()
            })
            .await;
        }
        assert!(matches!(
            Client::connect(&path).await,
            Err(NetError::NotFound { .. })
        ));
    });
}
