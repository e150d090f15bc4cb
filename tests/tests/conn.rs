//! The connection type: creds on both ends, timeouts, write-only peer loss.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn pair_knows_creds_on_both_ends() {
    let (a, b) = uds::net::pair().unwrap();
    let me = uds::Cred::current().unwrap();
    for c in [a.peer_cred(), b.peer_cred()] {
        assert_eq!((c.pid, c.uid, c.gid), (me.pid, me.uid, me.gid));
    }
}

#[tokio::test]
async fn from_std_reads_creds_of_an_inherited_socket() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let conn = uds::net::Conn::from_std(a).unwrap();
    assert_eq!(
        u32::try_from(conn.peer_cred().pid).unwrap(),
        std::process::id()
    );
}

#[tokio::test]
async fn read_timeout_fires_on_a_silent_peer_and_resets_on_progress() {
    let (mut a, mut b) = uds::net::pair().unwrap();
    a.set_read_timeout(Some(Duration::from_millis(100)));
    assert_eq!(a.read_timeout(), Some(Duration::from_millis(100)));
    // Progress within the limit keeps the connection alive.
    let writer = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            b.write_all(b"x").await.unwrap();
        }
        b
    });
    let mut buf = [0u8; 1];
    for _ in 0..3 {
        a.read_exact(&mut buf).await.unwrap();
    }
    let b = writer.await.unwrap();
    // Then silence: TimedOut.
    let start = Instant::now();
    let err = a.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    assert!(start.elapsed() >= Duration::from_millis(90));
    drop(b);
}

#[tokio::test]
async fn write_timeout_fires_when_the_peer_stops_reading() {
    let (mut a, b) = uds::net::pair().unwrap();
    a.set_write_timeout(Some(Duration::from_millis(100)));
    let chunk = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let err = loop {
        if let Err(e) = a.write_all(&chunk).await {
            break e;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never blocked");
    };
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    drop(b);
}

#[tokio::test]
async fn write_only_side_learns_at_once_that_the_peer_has_gone() {
    let (a, mut b) = uds::net::pair().unwrap();
    let (mut out, gone) = a.into_write_only();
    out.write_all(b"one").await.unwrap();
    let mut buf = [0u8; 3];
    b.read_exact(&mut buf).await.unwrap();
    // A chatty peer does not stall the detection; its bytes are discarded.
    b.write_all(&[7u8; 10_000]).await.unwrap();
    let watcher = tokio::spawn(gone.wait());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!watcher.is_finished(), "peer still there");
    let closed_at = Instant::now();
    drop(b);
    tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .expect("peer loss seen within 2s")
        .unwrap()
        .unwrap();
    assert!(closed_at.elapsed() < Duration::from_millis(500));
    // And writing now fails instead of vanishing into the void.
    let mut failed = false;
    for _ in 0..100 {
        if out.write_all(b"more").await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "writes to a gone peer must fail");
}

#[tokio::test]
async fn a_reader_that_only_half_closes_is_not_gone() {
    let (a, b) = uds::net::pair().unwrap();
    let (mut out, gone) = a.into_write_only();
    // The reader drops its writing half (shutdown(SHUT_WR)) but reads on.
    let (stream, _) = b.into_parts();
    let (mut rd, wr) = stream.into_split();
    drop(wr);
    let watcher = tokio::spawn(gone.wait());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !watcher.is_finished(),
        "a half-closed reader is still there"
    );
    out.write_all(b"still read").await.unwrap();
    let mut buf = [0u8; 10];
    rd.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still read");
    drop(rd);
    tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .expect("gone once it hangs up")
        .unwrap()
        .unwrap();
}

/// Outside a tokio runtime the fallible socket calls say so with a typed
/// error (`pair` used to panic: "there is no reactor running").
#[test]
fn fallible_socket_calls_outside_a_runtime_are_typed_errors() {
    use uds::net::NetError;
    assert!(matches!(uds::net::pair(), Err(NetError::NoRuntime)));
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(matches!(
        uds::net::Conn::from_std(a),
        Err(NetError::NoRuntime)
    ));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        uds::net::Listener::bind(dir.path().join("s")),
        Err(NetError::NoRuntime)
    ));
}
