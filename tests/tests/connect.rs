//! Client-side checks: the socket file, then the server's kernel creds.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uds::net::{Connector, FileKind, Listener, NetError, connect};
use uds_tests::{NOBODY, arg, probe_as_nobody, require_root, tempdir_with_mode};

#[tokio::test]
async fn missing_socket_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("none.sock");
    match connect(&p).await {
        Err(NetError::NotFound { path }) => assert_eq!(path, p),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn stale_socket_is_refused_not_missing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
    match Connector::new().any_mode().connect(&p).await {
        Err(NetError::Refused { path }) => assert_eq!(path, p),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn regular_file_and_symlink_are_not_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("file");
    std::fs::write(&f, b"").unwrap();
    let real = dir.path().join("real.sock");
    let _l = Listener::bind(&real).unwrap();
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for (p, kind) in [(&f, FileKind::File), (&link, FileKind::Symlink)] {
        match connect(p).await {
            Err(NetError::NotASocket { found, .. }) => assert_eq!(found, kind),
            other => panic!("{p:?}: expected NotASocket, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn mode_checks_are_octal_and_ignore_the_sticky_bit() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.sock");
    let _l = Listener::builder(&p).mode(0o666).bind().unwrap();
    // Default: no bits for others.
    match connect(&p).await {
        Err(NetError::ModeNotAllowed { found, allowed, .. }) => {
            assert_eq!(found.0, 0o666);
            assert!(allowed.contains("others"), "{allowed}");
        }
        other => panic!("expected ModeNotAllowed, got {other:?}"),
    }
    let err = connect(&p).await.unwrap_err().to_string();
    assert!(err.contains("0666"), "mode printed in octal: {err}");
    // Explicitly allowed.
    Connector::new()
        .allowed_modes([0o666])
        .connect(&p)
        .await
        .unwrap();

    // Sticky bit: 0o1770 on the file matches an allowed 0o770 (and 0o1770).
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1770)).unwrap();
    Connector::new()
        .allowed_modes([0o770])
        .connect(&p)
        .await
        .unwrap();
    Connector::new()
        .allowed_modes([0o1770])
        .connect(&p)
        .await
        .unwrap();
    match Connector::new()
        .allowed_modes([0o600, 0o660])
        .connect(&p)
        .await
    {
        Err(NetError::ModeNotAllowed { found, allowed, .. }) => {
            assert_eq!(found.0, 0o770);
            assert_eq!(allowed, "one of 0600, 0660");
        }
        other => panic!("expected ModeNotAllowed, got {other:?}"),
    }
}

#[tokio::test]
async fn file_owner_and_group_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("o.sock");
    let _l = Listener::bind(&p).unwrap();
    let me = uds::Cred::current().unwrap();
    match Connector::new().owner(me.uid + 1).connect(&p).await {
        Err(NetError::FileOwnerMismatch {
            expected, found, ..
        }) => assert_eq!((expected, found), (me.uid + 1, me.uid)),
        other => panic!("expected FileOwnerMismatch, got {other:?}"),
    }
    match Connector::new().group(me.gid + 1).connect(&p).await {
        Err(NetError::FileGroupMismatch {
            expected, found, ..
        }) => assert_eq!((expected, found), (me.gid + 1, me.gid)),
        other => panic!("expected FileGroupMismatch, got {other:?}"),
    }
    // The server's own gid can be required too.
    Connector::new()
        .server_gid(me.gid)
        .connect(&p)
        .await
        .unwrap();
    match Connector::new().server_gid(me.gid + 1).connect(&p).await {
        Err(NetError::ServerGidMismatch { found, .. }) => assert_eq!(found, me.gid),
        other => panic!("expected ServerGidMismatch, got {other:?}"),
    }
}

/// A server run by another user, whose socket file is then made to look like
/// ours: only the kernel-credential check on the connected socket catches it.
/// This is the "socket swapped between stat and connect" attack.
#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[tokio::test]
async fn server_creds_are_checked_on_the_connected_socket() {
    if !require_root("server_creds_are_checked_on_the_connected_socket") {
        return;
    }
    let dir = tempdir_with_mode(0o1777);
    let p = dir.path().join("impostor.sock");
    let mut child = probe_as_nobody(env!("CARGO_BIN_EXE_uds-probe"), &["serve", arg(&p)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut line).unwrap();
    assert_eq!(&line, b"ready\n");

    // The file is owned by nobody: the file check already refuses.
    match connect(&p).await {
        Err(NetError::FileOwnerMismatch { found, .. }) => assert_eq!(found, NOBODY),
        other => panic!("expected FileOwnerMismatch, got {other:?}"),
    }
    // Make the file look like ours (as an attacker who wins the race between
    // our stat and our connect would): the server's kernel creds still give
    // it away.
    std::os::unix::fs::lchown(&p, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    match connect(&p).await {
        Err(NetError::ServerUidMismatch {
            expected, found, ..
        }) => assert_eq!((expected, found), (0, NOBODY)),
        other => panic!("expected ServerUidMismatch, got {other:?}"),
    }
    // Told to expect nobody, the client talks to it.
    let mut c = Connector::new()
        .owner(NOBODY)
        .file_owner(None)
        .connect(&p)
        .await
        .unwrap();
    assert_eq!(c.peer_cred().uid, NOBODY);
    c.write_all(&[0x02, b'x']).await.unwrap();
    let mut buf = [0u8; 2];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, [0x02, b'y']);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn connect_timeout_is_typed() {
    // A listener whose backlog is full and never accepts: a blocking connect
    // would wait; ours times out.
    // Filling the backlog (SOMAXCONN, 4096 on Linux) takes one descriptor per
    // connection: raise the soft limit as far as allowed.
    let (_, hard) = uds_tests::nofile_limit();
    if hard < 6000 {
        eprintln!("SKIPPED connect_timeout_is_typed: RLIMIT_NOFILE hard limit {hard} < 6000");
        return;
    }
    uds_tests::set_nofile_limit(hard, hard);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("full.sock");
    let _l = Listener::bind(&p).unwrap();
    let mut held = Vec::new();
    let mut timed_out = false;
    for _ in 0..10_000 {
        match Connector::new()
            .timeout(Duration::from_millis(50))
            .connect(&p)
            .await
        {
            Ok(c) => held.push(c),
            Err(NetError::ConnectTimeout { after, .. }) => {
                assert_eq!(after, Duration::from_millis(50));
                timed_out = true;
                break;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        timed_out,
        "backlog never filled after {} connects",
        held.len()
    );
    // With no timeout, a full backlog is a typed "busy" error, not a hang.
    match connect(&p).await {
        Err(NetError::ServerBusy { path }) => assert_eq!(path, p),
        other => panic!("expected ServerBusy, got {other:?}"),
    }
}

/// The swap attack for real: while the client connects again and again, the
/// path is atomically switched back and forth between our server's socket and
/// an impostor's (run by another uid, its file made to look exactly like
/// ours). Whatever the timing, a connect that succeeds has our server at the
/// other end; every connect that reaches the impostor is refused by the check
/// of the server's kernel credentials.
#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_socket_swaps_never_hand_the_client_an_impostor() {
    if !require_root("racing_socket_swaps_never_hand_the_client_an_impostor") {
        return;
    }
    let dir = tempdir_with_mode(0o1777);
    let genuine = dir.path().join("genuine.sock");
    let impostor = dir.path().join("impostor.sock");
    let path = dir.path().join("api.sock");
    let listener = Listener::bind(&genuine).unwrap();
    let server = tokio::spawn(async move {
        loop {
            drop(listener.accept().await.unwrap());
        }
    });
    let mut child = probe_as_nobody(env!("CARGO_BIN_EXE_uds-probe"), &["serve", arg(&impostor)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut line).unwrap();
    assert_eq!(&line, b"ready\n");
    std::os::unix::fs::lchown(&impostor, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&impostor, std::fs::Permissions::from_mode(0o600)).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = std::thread::spawn({
        let (stop, dir) = (stop.clone(), dir.path().to_owned());
        let (genuine, impostor, path) = (genuine.clone(), impostor.clone(), path.clone());
        move || {
            let tmp = dir.join("next.sock");
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let from = if swaps.is_multiple_of(2) {
                    &genuine
                } else {
                    &impostor
                };
                let _ = std::fs::remove_file(&tmp);
                std::fs::hard_link(from, &tmp).unwrap();
                std::fs::rename(&tmp, &path).unwrap(); // atomic replace
                swaps += 1;
            }
            swaps
        }
    });
    while !path.exists() {
        tokio::task::yield_now().await;
    }
    let (mut ours, mut caught, mut tries) = (0u32, 0u32, 0u32);
    let start = std::time::Instant::now();
    while tries < 300 || ours == 0 || caught == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{tries} connects: {ours} to our server, {caught} impostors caught"
        );
        tries += 1;
        match connect(&path).await {
            Ok(c) => {
                assert_eq!(c.peer_cred().uid, 0, "connected to an impostor");
                ours += 1;
            }
            Err(NetError::ServerUidMismatch { found, .. }) => {
                assert_eq!(found, NOBODY);
                caught += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let swaps = swapper.join().unwrap();
    eprintln!(
        "{tries} connects during {swaps} swaps: {ours} to our server, {caught} impostors caught"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    server.abort();
}
