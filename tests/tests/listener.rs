//! The listener's socket-file lifecycle: modes, stale sockets, what it must
//! never delete, path limits, abstract sockets, cleanup.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uds::net::{FileKind, Listener, NetError};

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[tokio::test]
async fn socket_has_the_requested_mode_and_default_0600() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.sock");
    let l = Listener::bind(&a).unwrap();
    assert_eq!(mode_of(&a), 0o600);
    let b = dir.path().join("b.sock");
    let l2 = Listener::builder(&b).mode(0o660).bind().unwrap();
    assert_eq!(mode_of(&b), 0o660);
    assert!(
        std::fs::symlink_metadata(&b)
            .unwrap()
            .file_type()
            .is_socket()
    );
    // No staging directory is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["a.sock", "a.sock.lock", "b.sock", "b.sock.lock"]);
    drop((l, l2));
    // Closing removes the socket and its lock file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn concurrent_binds_on_a_stale_socket_leave_one_live_server() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..40 {
        let p = dir.path().join(format!("r{round}.sock"));
        drop(std::os::unix::net::UnixListener::bind(&p).unwrap()); // stale
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let binds: Vec<_> = (0..4)
            .map(|_| {
                let (p, start) = (p.clone(), start.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let bound = {
                        let _g = rt.enter();
                        start.wait();
                        Listener::bind(&p)
                    };
                    bound.map(|l| (l, rt))
                })
            })
            .collect();
        let mut winners = Vec::new();
        for b in binds {
            match b.join().unwrap() {
                Ok(l) => winners.push(l),
                Err(NetError::AddressInUse { .. }) => {}
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one listener wins");
        // The winner's socket is the one at the path: it answers.
        assert!(
            std::os::unix::net::UnixStream::connect(&p).is_ok(),
            "round {round}"
        );
        for (l, rt) in winners {
            let _g = rt.enter();
            drop(l);
        }
    }
}

#[tokio::test]
async fn group_is_set_before_the_socket_appears() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.sock");
    let me = uds::Cred::current().unwrap();
    let _l = Listener::builder(&p)
        .mode(0o660)
        .group(me.gid)
        .bind()
        .unwrap();
    let meta = std::fs::symlink_metadata(&p).unwrap();
    assert_eq!(meta.gid(), me.gid);
    assert_eq!(meta.mode() & 0o777, 0o660);
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stale.sock");
    // A socket file with no listener behind it.
    let std_listener = std::os::unix::net::UnixListener::bind(&p).unwrap();
    drop(std_listener);
    assert!(p.exists());
    let l = Listener::bind(&p).unwrap();
    let server = tokio::spawn(async move {
        let mut c = l.accept().await.unwrap();
        c.write_all(b"ok").await.unwrap();
    });
    let mut c = uds::net::connect(&p).await.unwrap();
    let mut buf = [0u8; 2];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ok");
    server.await.unwrap();
}

#[tokio::test]
async fn live_server_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("live.sock");
    let first = Listener::bind(&p).unwrap();
    let ino = std::fs::symlink_metadata(&p).unwrap().ino();
    match Listener::bind(&p) {
        Err(NetError::AddressInUse { path }) => assert_eq!(path, p),
        other => panic!("expected AddressInUse, got {other:?}"),
    }
    assert_eq!(std::fs::symlink_metadata(&p).unwrap().ino(), ino);
    // The first server still answers.
    let accept = tokio::spawn(async move { first.accept().await.map(|_| ()) });
    uds::net::connect(&p).await.unwrap();
    accept.await.unwrap().unwrap();
}

#[tokio::test]
async fn regular_file_directory_and_symlink_are_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"precious").unwrap();
    let sub = dir.path().join("dir");
    std::fs::create_dir(&sub).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    // A symlink to a stale socket is still a symlink: not ours to remove.
    let stale = dir.path().join("stale");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let link_to_socket = dir.path().join("link2");
    std::os::unix::fs::symlink(&stale, &link_to_socket).unwrap();

    for (path, kind) in [
        (&file, FileKind::File),
        (&sub, FileKind::Directory),
        (&link, FileKind::Symlink),
        (&link_to_socket, FileKind::Symlink),
    ] {
        match Listener::bind(path) {
            Err(NetError::NotASocket { found, .. }) => assert_eq!(found, kind, "{path:?}"),
            other => panic!("{path:?}: expected NotASocket, got {other:?}"),
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    assert!(sub.is_dir());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(&link_to_socket)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(stale.exists());
    let err = Listener::bind(&file).unwrap_err().to_string();
    assert!(
        err.contains("regular file") && err.contains("refusing"),
        "{err}"
    );
}

#[tokio::test]
async fn path_length_is_checked_in_bytes_against_the_platform_limit() {
    let max = uds::net::max_path_len();
    assert_eq!(max, if cfg!(target_os = "linux") { 107 } else { 103 });
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().as_os_str().len() + 1;
    // Multi-byte characters: the limit is in bytes, not characters.
    let fill = "é".repeat((max + 1 - base).div_ceil(2));
    let long = dir.path().join(&fill);
    assert!(long.as_os_str().len() > max);
    match Listener::bind(&long) {
        Err(NetError::PathTooLong { len, max: m, .. }) => {
            assert_eq!(m, max);
            assert_eq!(len, long.as_os_str().len());
        }
        other => panic!("expected PathTooLong, got {other:?}"),
    }
    let text = Listener::bind(&long).unwrap_err().to_string();
    assert!(text.contains(&format!("at most {max}")), "{text}");
    match uds::net::connect(&long).await {
        Err(NetError::PathTooLong { .. }) => {}
        other => panic!("connect: expected PathTooLong, got {other:?}"),
    }
}

#[tokio::test]
async fn a_path_of_exactly_the_limit_works() {
    // The staging directory makes the bind path longer than the final one;
    // the listener must still manage a final path of the maximum length.
    let max = uds::net::max_path_len();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().as_os_str().len() + 1;
    let p = dir.path().join("s".repeat(max - base));
    assert_eq!(p.as_os_str().len(), max);
    let l = Listener::bind(&p).unwrap();
    let accept = tokio::spawn(async move { l.accept().await.map(|c| c.peer_cred().uid) });
    let c = uds::net::connect(&p).await.unwrap();
    assert_eq!(accept.await.unwrap().unwrap(), c.peer_cred().uid);
}

#[tokio::test]
async fn close_removes_only_its_own_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mine.sock");
    let l = Listener::bind(&p).unwrap();
    l.close();
    assert!(!p.exists(), "closing removes our socket");

    let l = Listener::bind(&p).unwrap();
    // Someone replaces the file while we serve.
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, b"not yours").unwrap();
    drop(l);
    assert_eq!(std::fs::read(&p).unwrap(), b"not yours");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn abstract_namespace_sockets_work_and_refuse_file_options() {
    let name = format!("uds-test-{}", std::process::id());
    let l = Listener::builder_abstract(&name).bind().unwrap();
    assert_eq!(l.local_path().to_str().unwrap(), format!("@{name}"));
    let accept = tokio::spawn(async move {
        let c = l.accept().await.unwrap();
        (c.peer_cred().pid, l)
    });
    let c = uds::net::Connector::new()
        .connect_abstract(&name)
        .await
        .unwrap();
    let (pid, l) = accept.await.unwrap();
    assert_eq!(u32::try_from(pid).unwrap(), std::process::id());
    assert_eq!(c.peer_cred().uid, uds::Cred::current().unwrap().uid);
    assert!(matches!(
        Listener::builder_abstract(&name).bind(),
        Err(NetError::AddressInUse { .. })
    ));
    drop(l);
    assert!(matches!(
        Listener::builder_abstract("x").mode(0o600).bind(),
        Err(NetError::AbstractHasNoPermissions)
    ));
    let too_long = vec![b'a'; uds::net::max_abstract_name_len() + 1];
    assert!(matches!(
        Listener::builder_abstract(&too_long).bind(),
        Err(NetError::AbstractNameTooLong { .. })
    ));
}

/// A live socket that is not a uds listener's (a Go server's, say) has no
/// lock file next to it: only the listener's liveness probe stands between it
/// and deletion. And a refused bind leaves nothing behind at the path.
#[tokio::test]
async fn a_live_foreign_server_is_left_alone_and_refused_binds_leave_no_debris() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("foreign.sock");
    let foreign = std::os::unix::net::UnixListener::bind(&p).unwrap();
    let ino = std::fs::symlink_metadata(&p).unwrap().ino();
    match Listener::bind(&p) {
        Err(NetError::AddressInUse { path }) => assert_eq!(path, p),
        other => panic!("expected AddressInUse, got {other:?}"),
    }
    assert_eq!(std::fs::symlink_metadata(&p).unwrap().ino(), ino);
    // It still answers.
    let _c = std::os::unix::net::UnixStream::connect(&p).unwrap();
    foreign.accept().unwrap();

    let file = dir.path().join("file");
    std::fs::write(&file, b"precious").unwrap();
    assert!(matches!(
        Listener::bind(&file),
        Err(NetError::NotASocket { .. })
    ));
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["file", "foreign.sock"],
        "no lock file or staging directory left"
    );
}
