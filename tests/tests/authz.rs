//! Per-method authorization of `#[uds::service]`: `#[uds(allow(...))]` and
//! `#[uds(policy = ...)]` on the trait and its methods, checked before the
//! arguments are decoded, denied calls answered with their own error
//! (`RpcError::PermissionDenied`; code 4 + reason 1 on the wire). Tests with
//! a real second user run `uds-probe` as uid 65534 (root only, else
//! ignored, as in `security.rs`).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use uds::auth::Policy;
use uds::net::Listener;
use uds::rpc::RpcError;
use uds_tests::{arg, probe_as_nobody, require_root, tempdir_with_mode};

const PROBE: &str = env!("CARGO_BIN_EXE_uds-probe");

fn not_this_process(peer: &uds::Cred) -> bool {
    u32::try_from(peer.pid).ok() != Some(std::process::id())
}

fn panics(_: &uds::Cred) -> bool {
    panic!("a policy bug")
}

/// The trait's rule: this user or nobody (65534); methods narrow it.
#[uds::service(allow(same_user, uid = 65534))]
pub trait Guarded {
    /// The trait's rule only.
    async fn open(&self) -> u32;
    /// This user only.
    #[uds(allow = "same_user")]
    async fn mine(&self) -> u32;
    /// A uid nobody runs as.
    #[uds(allow(uid = 4294967294))]
    async fn nobody_here(&self, x: u32) -> u32;
    /// Nobody's group.
    #[uds(allow(gid = 65534))]
    async fn by_group(&self) -> u32;
    /// Denies the calling process itself.
    #[uds(policy = not_this_process)]
    async fn not_my_pid(&self) -> u32;
    /// A policy that panics denies.
    #[uds(policy = panics)]
    async fn panicking_policy(&self) -> u32;
}

/// Counts the handlers that ran.
#[derive(Default)]
struct Imp(Arc<AtomicUsize>);

impl Guarded for Imp {
    async fn open(&self) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst);
        1
    }
    async fn mine(&self) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst);
        2
    }
    async fn nobody_here(&self, x: u32) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst);
        x
    }
    async fn by_group(&self) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst);
        4
    }
    async fn not_my_pid(&self) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst);
        5
    }
    async fn panicking_policy(&self) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst);
        6
    }
}

fn start() -> (uds::rpc::Server, GuardedClient, Arc<AtomicUsize>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let server = GuardedServer::new(Imp(ran.clone())).build().unwrap();
    let (a, b) = uds::net::pair().unwrap();
    server.serve_connection(b);
    (server, GuardedClient::from_conn(a), ran)
}

fn is_denied(e: &RpcError) -> bool {
    matches!(e, RpcError::PermissionDenied { message } if message == "uds: permission denied")
}

#[tokio::test]
async fn allowed_calls_run_and_denied_ones_never_reach_the_handler() {
    let (_server, c, ran) = start();
    assert_eq!(c.open().await.unwrap(), 1);
    assert_eq!(c.mine().await.unwrap(), 2);
    assert_eq!(ran.load(Ordering::SeqCst), 2);

    let e = c.nobody_here(3).await.unwrap_err();
    assert!(is_denied(&e), "{e:?}");
    assert!(!e.is_retryable());
    assert!(
        e.to_string().contains("run as an allowed user"),
        "says what to do: {e}"
    );
    let e = c.not_my_pid().await.unwrap_err();
    assert!(is_denied(&e), "{e:?}");
    let e = c.panicking_policy().await.unwrap_err();
    assert!(is_denied(&e), "a panicking policy denies: {e:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 2, "no denied handler ran");

    // The server still serves after a policy panicked.
    assert_eq!(c.open().await.unwrap(), 1);
}

#[tokio::test]
async fn authorization_runs_before_the_arguments_are_decoded() {
    let (_server, c, _) = start();
    // Not JSON at all: a denied caller is told "denied", not "bad data",
    // so the server never parses what an unauthorized peer sent.
    let e = c
        .rpc()
        .call("/Guarded/nobody_here", "{not json")
        .await
        .unwrap_err();
    assert!(is_denied(&e), "{e:?}");
    assert_eq!(e.code(), Some(uds::rpc::ErrorCode::Server), "code 4 for Go");
}

#[tokio::test]
async fn a_uid_or_gid_this_process_lacks_is_denied() {
    let (_server, c, _) = start();
    let me = uds::Cred::current().unwrap();
    let by_group = c.by_group().await;
    if me.in_group(65534) {
        assert_eq!(by_group.unwrap(), 4);
    } else {
        assert!(is_denied(&by_group.unwrap_err()));
    }
}

/// Policy for the listener: everyone in, so that the methods' own rules
/// are what is tested.
fn listen_for_nobody() -> (tempfile::TempDir, std::path::PathBuf, uds::rpc::Server) {
    let dir = tempdir_with_mode(0o755);
    let p = dir.path().join("g.sock");
    let listener = Listener::builder(&p)
        .mode(0o666)
        .policy(Policy::allow_all())
        .bind()
        .unwrap();
    let server = GuardedServer::new(Imp::default()).build().unwrap();
    server.serve(listener);
    (dir, p, server)
}

async fn probe_call(path: &std::path::Path, method: &str) -> String {
    let mut cmd = probe_as_nobody(PROBE, &["call", arg(path), method, "5000"]);
    cmd.stdout(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().last().unwrap_or_default().trim().to_owned()
}

#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[tokio::test(flavor = "multi_thread")]
async fn another_user_gets_only_the_methods_that_allow_it() {
    if !require_root("another_user_gets_only_the_methods_that_allow_it") {
        return;
    }
    let (_dir, p, _server) = listen_for_nobody();
    // The trait allows uid 65534; `by_group` allows its group.
    assert!(probe_call(&p, "/Guarded/open").await.starts_with("ok"));
    assert!(probe_call(&p, "/Guarded/by_group").await.starts_with("ok"));
    // `mine` narrows the trait's rule to this (root) user.
    let verdict = probe_call(&p, "/Guarded/mine").await;
    assert_eq!(
        verdict,
        r#"error: PermissionDenied { message: "uds: permission denied" }"#
    );
    let verdict = probe_call(&p, "/Guarded/nobody_here").await;
    assert!(verdict.contains("PermissionDenied"), "{verdict}");
}

/// The trait-wide rule alone keeps another user out of every method.
#[uds::service(allow = "same_user")]
pub trait Private {
    /// Says hello.
    async fn hello(&self) -> u32;
}

struct P;

impl Private for P {
    async fn hello(&self) -> u32 {
        7
    }
}

#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[tokio::test(flavor = "multi_thread")]
async fn a_trait_wide_rule_denies_another_user_every_method() {
    if !require_root("a_trait_wide_rule_denies_another_user_every_method") {
        return;
    }
    let dir = tempdir_with_mode(0o755);
    let p = dir.path().join("p.sock");
    let listener = Listener::builder(&p)
        .mode(0o666)
        .policy(Policy::allow_all())
        .bind()
        .unwrap();
    let server = PrivateServer::new(P).build().unwrap();
    server.serve(listener);
    let verdict = probe_call(&p, "/Private/hello").await;
    assert!(verdict.contains("PermissionDenied"), "{verdict}");
    // The owner still gets in (no client-side checks: the mode is 0666).
    let conn = uds::net::Conn::from_std(std::os::unix::net::UnixStream::connect(&p).unwrap());
    let c = PrivateClient::from_conn(conn.unwrap());
    assert_eq!(c.hello().await.unwrap(), 7);
}

#[tokio::test]
async fn denials_are_logged_rate_limited() {
    let logs = uds_tests::log_capture::LogCapture::global();
    let denied = |e: &uds_tests::log_capture::Logged| e.message.starts_with("call denied");
    let (_server, c, _) = start();
    let before = logs.count(denied);
    // 40 denied calls over a little more than a second: one line, or two
    // if the window turns (other tests in this binary share the limit).
    for _ in 0..40 {
        assert!(is_denied(&c.nobody_here(1).await.unwrap_err()));
        tokio::time::sleep(std::time::Duration::from_millis(28)).await;
    }
    let lines = logs.count(denied) - before;
    assert!((1..=3).contains(&lines), "{lines} lines for 40 denials");
    let last = logs.events(denied).pop().unwrap();
    assert_eq!(last.level, tracing::Level::WARN);
    assert!(last.fields.contains_key("uid"), "{last:?}");
    assert!(last.fields.contains_key("suppressed"), "{last:?}");
}
