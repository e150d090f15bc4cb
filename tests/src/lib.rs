//! Helpers shared by the integration tests: running a probe process as
//! another user, and temporary directories other users can reach.

// Test helpers: a failed set-up must fail the test loudly.
#![allow(clippy::missing_panics_doc)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// The unprivileged uid/gid the security tests switch to.
pub const NOBODY: u32 = 65534;

/// Whether this process runs as root (and so can start a probe as another
/// user).
pub fn is_root() -> bool {
    uds::Cred::current().is_ok_and(|c| c.uid == 0)
}

/// Returns `true` if the test may go on; otherwise prints why it is skipped.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        true
    } else {
        eprintln!("SKIPPED {test}: needs root to start a probe as uid {NOBODY}");
        false
    }
}

/// A temporary directory with the given mode (e.g. 0o755 so that another
/// user can reach a socket inside it).
pub fn tempdir_with_mode(mode: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("uds-test")
        .tempdir()
        .expect("create temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode))
        .expect("chmod temp dir");
    dir
}

/// A command running the probe binary `bin` as uid/gid [`NOBODY`].
pub fn probe_as_nobody(bin: &str, args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin);
    cmd.args(args).uid(NOBODY).gid(NOBODY);
    cmd
}

/// Sets the process umask; returns the previous one.
#[allow(unsafe_code)]
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask(2) has no preconditions and cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// The soft and hard `RLIMIT_NOFILE`.
#[allow(unsafe_code)]
pub fn nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) };
    assert_eq!(rc, 0, "getrlimit failed");
    (lim.rlim_cur, lim.rlim_max)
}

/// Sets `RLIMIT_NOFILE` for this process.
#[allow(unsafe_code)]
pub fn set_nofile_limit(soft: u64, hard: u64) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit from the struct we pass.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
    assert_eq!(rc, 0, "setrlimit failed");
}

/// One frame carrying `e`, as a raw peer would write it.
pub fn envelope_frame(e: &uds::rpc::Envelope) -> Vec<u8> {
    let mut body = Vec::new();
    e.encode(&mut body);
    let mut out = bytes::BytesMut::new();
    uds::frame::put_frame(&body, &mut out).expect("non-empty envelope");
    out.to_vec()
}

/// A path string, for probe arguments.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}
