//! Authorization with a real second user. CI runs as root: each test starts
//! the `uds-probe` binary as uid 65534; when not root they are skipped, and
//! say so.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uds::auth::Policy;
use uds::net::{Connector, Listener};
use uds::rpc::{Client, Server};
use uds_tests::{NOBODY, arg, probe_as_nobody, require_root, tempdir_with_mode};

const PROBE: &str = env!("CARGO_BIN_EXE_uds-probe");

/// Serves: every accepted connection gets one byte read and one frame back.
/// Counts what reached "the handler".
fn serve(listener: Listener, handled: Arc<AtomicUsize>) -> tokio::task::JoinHandle<Listener> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    let mut conn = conn.unwrap();
                    handled.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut b = [0u8; 2];
                        if conn.read_exact(&mut b).await.is_ok() {
                            let _ = conn.write_all(&[0x02, b'k']).await;
                        }
                    });
                }
                () = tokio::time::sleep(Duration::from_millis(1500)) => return listener,
            }
        }
    })
}

/// Runs the probe as nobody off the async threads (the server under test
/// runs on them) and returns what it printed.
async fn run_probe(args: &[&str]) -> String {
    let mut cmd = probe_as_nobody(PROBE, args);
    cmd.stdout(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[tokio::test]
async fn other_uid_is_denied_by_default_before_any_byte_is_read() {
    if !require_root("other_uid_is_denied_by_default_before_any_byte_is_read") {
        return;
    }
    let dir = tempdir_with_mode(0o755);
    let p = dir.path().join("s.sock");
    // World-connectable file: the policy alone must keep nobody out.
    let listener = Listener::builder(&p).mode(0o666).bind().unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let server = serve(listener, handled.clone());
    let verdict = run_probe(&["talk", arg(&p)]).await;
    assert!(verdict.starts_with("closed"), "probe said {verdict:?}");
    let listener = server.await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 0, "no handler saw the peer");
    let stats = listener.stats();
    assert_eq!((stats.accepted, stats.denied), (0, 1), "{stats:?}");
}

/// Denied "before any byte is read": the probe's bytes arrive before the
/// server decides (the policy is slow), so closing with them unread makes
/// the kernel reset the connection — which the probe sees.
#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[tokio::test]
async fn denied_peer_bytes_are_never_read() {
    if !require_root("denied_peer_bytes_are_never_read") {
        return;
    }
    let dir = tempdir_with_mode(0o755);
    let p = dir.path().join("s.sock");
    let listener = Listener::builder(&p)
        .mode(0o666)
        .policy(Policy::custom(|c| {
            std::thread::sleep(Duration::from_millis(300));
            c.uid == 0
        }))
        .bind()
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let server = serve(listener, handled.clone());
    let verdict = run_probe(&["talk", arg(&p)]).await;
    assert!(
        verdict.contains("reset"),
        "bytes left unread give a reset: {verdict:?}"
    );
    let listener = server.await.unwrap();
    assert_eq!(listener.stats().denied, 1);
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[tokio::test]
async fn uid_and_gid_allow_lists_let_the_named_peer_in() {
    if !require_root("uid_and_gid_allow_lists_let_the_named_peer_in") {
        return;
    }
    for policy in [Policy::uids([NOBODY]), Policy::gids([NOBODY])] {
        let dir = tempdir_with_mode(0o755);
        let p = dir.path().join("s.sock");
        let listener = Listener::builder(&p)
            .mode(0o666)
            .policy(policy.clone())
            .bind()
            .unwrap();
        let handled = Arc::new(AtomicUsize::new(0));
        let server = serve(listener, handled.clone());
        let verdict = run_probe(&["talk", arg(&p)]).await;
        assert_eq!(verdict, "served", "policy {policy:?}");
        let listener = server.await.unwrap();
        assert_eq!(listener.stats().accepted, 1);
        assert_eq!(handled.load(Ordering::SeqCst), 1);
    }
}

#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[tokio::test]
async fn custom_policy_sees_kernel_creds() {
    if !require_root("custom_policy_sees_kernel_creds") {
        return;
    }
    let dir = tempdir_with_mode(0o755);
    let p = dir.path().join("s.sock");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let listener = Listener::builder(&p)
        .mode(0o666)
        .policy(Policy::custom(move |c| {
            seen2.lock().unwrap().push((c.uid, c.gid));
            false
        }))
        .bind()
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let server = serve(listener, handled.clone());
    let verdict = run_probe(&["talk", arg(&p)]).await;
    assert!(verdict.starts_with("closed"), "{verdict}");
    server.await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [(NOBODY, NOBODY)]);
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[cfg(target_os = "linux")]
#[tokio::test]
async fn abstract_socket_relies_on_the_policy_alone() {
    if !require_root("abstract_socket_relies_on_the_policy_alone") {
        return;
    }
    let name = format!("uds-sec-{}", std::process::id());
    let listener = Listener::builder_abstract(&name).bind().unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let server = serve(listener, handled.clone());
    let verdict = run_probe(&["talk-abstract", &name]).await;
    assert!(verdict.starts_with("closed"), "{verdict}");
    let listener = server.await.unwrap();
    assert_eq!(listener.stats().denied, 1);
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

/// The same at the RPC layer: a well-formed call from another uid never
/// reaches a handler of an `rpc::Server` (the caller is told it was denied:
/// one error frame, then the close), while our own calls are served by the
/// same handler.
#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[tokio::test]
async fn rpc_server_never_dispatches_a_call_from_another_uid() {
    if !require_root("rpc_server_never_dispatches_a_call_from_another_uid") {
        return;
    }
    let dir = tempdir_with_mode(0o755);
    let p = dir.path().join("rpc.sock");
    let runs = Arc::new(AtomicUsize::new(0));
    let r2 = runs.clone();
    let server = Server::builder()
        .handler("/count", move |_, req| {
            r2.fetch_add(1, Ordering::SeqCst);
            async move { Ok(req) }
        })
        .build()
        .unwrap();
    // World-connectable file: the default policy (same user) alone keeps
    // nobody out.
    server.serve(Listener::builder(&p).mode(0o666).bind().unwrap());
    let verdict = run_probe(&["call", arg(&p), "/count", "3000"]).await;
    assert!(
        verdict.ends_with(r#"error: PermissionDenied { message: "uds: permission denied" }"#),
        "the probe said {verdict:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "no handler ran");
    // The handler does run for a caller the policy admits.
    let conn = Connector::new().any_mode().connect(&p).await.unwrap();
    let client = Client::new(conn);
    assert_eq!(client.call("/count", "me").await.unwrap(), "me");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
