//! The accept loop under descriptor exhaustion (`EMFILE`): it backs off
//! instead of dying or spinning, and serves again once descriptors free up.
//! Its own test binary, because it lowers `RLIMIT_NOFILE` for the process.

use std::time::Duration;

use tokio::sync::mpsc;
use uds::net::Listener;
use uds_tests::open_fds;

/// CPU time this process has used, in clock ticks (user + system), read
/// through a file opened beforehand (no descriptor is free when it is used).
fn cpu_ticks(stat_file: &mut std::fs::File) -> u64 {
    use std::io::{Read, Seek};
    let mut stat = String::new();
    stat_file.rewind().unwrap();
    stat_file.read_to_string(&mut stat).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_survives_descriptor_exhaustion() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("emfile.sock");
    let listener = Listener::bind(&p).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let server = tokio::spawn(async move {
        loop {
            let r = listener.accept().await;
            let fatal = r.is_err();
            if tx.send(r).await.is_err() || fatal {
                return;
            }
        }
    });

    let mut stat_file = std::fs::File::open("/proc/self/stat").unwrap();
    let (soft, hard) = uds_tests::nofile_limit();
    uds_tests::set_nofile_limit(u64::try_from(open_fds()).unwrap() + 64, hard);
    // Use up every descriptor but one.
    let mut hog = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    hog.pop();
    // The client takes the last descriptor; the server cannot accept it.
    let client = tokio::net::UnixStream::connect(&p).await.unwrap();
    let cpu_before = cpu_ticks(&mut stat_file);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_used = cpu_ticks(&mut stat_file) - cpu_before;
    assert!(rx.try_recv().is_err(), "nothing accepted while out of fds");
    // A loop that retried at once (the Go listener's failure mode) would
    // burn a whole core: ~50 ticks in 500 ms. Backing off uses next to none.
    assert!(
        cpu_used < 10,
        "accept loop used {cpu_used} ticks of CPU in 500 ms"
    );
    assert!(
        !server.is_finished(),
        "the accept loop must not die on EMFILE"
    );

    // Free descriptors: the pending connection is served.
    hog.truncate(hog.len().saturating_sub(16));
    let conn = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("accepted within 5s of descriptors freeing up")
        .unwrap()
        .unwrap();
    assert_eq!(conn.peer_cred().uid, uds::Cred::current().unwrap().uid);
    drop(hog);
    uds_tests::set_nofile_limit(soft, hard);

    // And it keeps serving.
    let c2 = uds::net::connect(&p).await.unwrap();
    let conn2 = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(conn2.peer_cred().pid, c2.peer_cred().pid);
    drop((client, conn, c2, conn2));
    server.abort();
}
