//! The socket is never reachable with looser permissions than asked, not
//! even while a listener starts. These tests run under umask 0 (so that a
//! chmod-after-listen window would really be open); umask is process-wide,
//! so they live in their own test binary and run one at a time.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use uds::auth::Policy;
use uds::net::Listener;
use uds_tests::{arg, probe_as_nobody, require_root, tempdir_with_mode};

const PROBE: &str = env!("CARGO_BIN_EXE_uds-probe");

/// Serializes the tests and sets umask 0 for the duration of each.
struct UmaskZero {
    old: u32,
    _serial: MutexGuard<'static, ()>,
}

impl Drop for UmaskZero {
    fn drop(&mut self) {
        uds_tests::set_umask(self.old);
    }
}

fn umask_zero() -> UmaskZero {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    UmaskZero {
        old: uds_tests::set_umask(0),
        _serial: guard,
    }
}

#[tokio::test]
async fn mode_is_never_looser_while_binding() {
    // Watch the directory while listeners come and go with mode 0600 under a
    // permissive umask: the socket must never be seen at its path with
    // other bits set.
    let _serial = umask_zero();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.path().join("race.sock");
    let watch = p.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let watcher = std::thread::spawn(move || {
        let mut seen = 0u32;
        let mut loose = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(m) = std::fs::symlink_metadata(&watch) {
                seen += 1;
                if m.mode() & 0o177 != 0 && loose.len() < 5 {
                    loose.push(format!("{:o}", m.mode() & 0o7777));
                }
            }
        }
        (seen, loose)
    });
    for _ in 0..300 {
        let l = Listener::builder(&p).mode(0o600).bind().unwrap();
        drop(l);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, loose) = watcher.join().unwrap();
    assert!(
        loose.is_empty(),
        "socket seen with loose modes, e.g. {loose:?}"
    );
    eprintln!("watcher saw the socket {seen} times, never with loose bits");
}

/// While servers start (bind, chmod, publish) again and again with mode
/// 0600, another uid hammering connect on the path never gets a connection.
#[cfg_attr(
    not(uds_root),
    ignore = "needs root: starts processes as uid 65534 (CI runs as root)"
)]
#[tokio::test]
async fn racing_connects_from_another_uid_never_get_through_at_startup() {
    if !require_root("racing_connects_from_another_uid_never_get_through_at_startup") {
        return;
    }
    // With the usual umask (022) a fresh socket is not writable by others
    // anyway; umask 0 is what makes a chmod-after-listen window exploitable.
    let _serial = umask_zero();
    let dir = tempdir_with_mode(0o755);
    let p = dir.path().join("race.sock");
    let hammer = probe_as_nobody(PROBE, &["hammer", arg(&p), "2000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Permissive policy: only the file mode stands between nobody and us.
    let mut binds = 0;
    let deadline = std::time::Instant::now() + Duration::from_millis(1800);
    while std::time::Instant::now() < deadline {
        let l = Listener::builder(&p)
            .mode(0o600)
            .policy(Policy::allow_all())
            .bind()
            .unwrap();
        binds += 1;
        tokio::task::yield_now().await;
        drop(l);
    }
    let out = tokio::task::spawn_blocking(move || hammer.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (ok, tries) = text.split_once(" of ").expect("probe output");
    assert!(binds > 50, "only {binds} binds");
    assert!(
        tries.parse::<u64>().unwrap() > 100,
        "hammer made {tries} tries"
    );
    assert_eq!(
        ok, "0",
        "another uid connected during startup ({text}, {binds} binds)"
    );
}
