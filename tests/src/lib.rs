//! Helpers shared by the integration tests: running a probe process as
//! another user, and temporary directories other users can reach.

// Test helpers: a failed set-up must fail the test loudly.
#![allow(clippy::missing_panics_doc)]

pub mod alloc;
pub mod log_capture;
pub mod plugin_api;
pub mod raw;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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
///
/// Where [`NOBODY`] cannot reach `bin` (a target dir under a 0700 home, as
/// root's is), a copy of it in a world-readable temporary directory runs
/// instead; see [`runnable_by_nobody`].
pub fn probe_as_nobody(bin: &str, args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(runnable_by_nobody(bin));
    cmd.args(args).uid(NOBODY).gid(NOBODY);
    cmd
}

/// A path of the executable `bin` that another user can run: `bin` itself
/// when every directory above it and the file are open to others, otherwise
/// a copy (made once per process and binary) in a fresh 0755 directory under
/// the system's temporary directory.
pub fn runnable_by_nobody(bin: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static COPIES: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let path = Path::new(bin);
    let open_to_others = |p: &Path, bits: u32| {
        std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & bits == bits)
    };
    if open_to_others(path, 0o005)
        && path
            .ancestors()
            .skip(1)
            .all(|a| a.as_os_str().is_empty() || open_to_others(a, 0o001))
    {
        return path.to_path_buf();
    }
    let mut copies = COPIES
        .get_or_init(Default::default)
        .lock()
        .expect("copies lock");
    if let Some(copy) = copies.get(bin) {
        return copy.clone();
    }
    // Kept for the life of the test process (a few MiB under the temp dir).
    let dir = tempdir_with_mode(0o755).keep();
    let copy = dir.join(path.file_name().expect("a binary has a file name"));
    std::fs::copy(path, &copy).expect("copy the probe binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .expect("chmod probe copy");
    copies.insert(bin.to_owned(), copy.clone());
    copy
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
pub fn envelope_frame(e: &uds::rpc::__wire::Envelope) -> Vec<u8> {
    let mut body = Vec::new();
    e.encode(&mut body);
    let mut out = bytes::BytesMut::new();
    uds::frame::__wire::put_frame(&body, &mut out).expect("non-empty envelope");
    out.to_vec()
}

/// A path string, for probe arguments.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Resident memory of this process in KiB (`VmRSS` of `/proc/self/status`),
/// or 0 where there is no procfs.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Descriptors this process has open (entries of `/proc/self/fd`, minus the
/// one used to list them).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// Hands memory the allocator keeps cached but no longer uses back to the
/// OS (glibc `malloc_trim`), so that RSS reflects live allocations rather
/// than the allocator's free lists. A no-op elsewhere.
#[allow(unsafe_code)]
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit.
pub fn raise_nofile_limit() -> u64 {
    let (_, hard) = nofile_limit();
    set_nofile_limit(hard, hard);
    hard
}

/// How many panics this process has seen so far, on any thread (tokio
/// catches a panicking task and goes on, so a library panic is otherwise
/// invisible to a test). The first call installs the counting hook, which
/// still prints each panic as usual.
pub fn panics_so_far() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            COUNT.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
    COUNT.load(Ordering::SeqCst)
}

/// A well-behaved client that calls an echo method in a loop in the
/// background and checks every reply, so that a test can assert that it
/// keeps being served while something else attacks the server.
#[derive(Debug)]
pub struct Steady {
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Steady {
    /// Starts calling `method` (which must echo its request) on `client`,
    /// each call with a 10 s timeout, pausing 2 ms between calls.
    pub fn start(client: uds::rpc::Client, method: &'static str) -> Steady {
        use std::sync::atomic::Ordering;
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let (ok, failure, stop) = (ok.clone(), failure.clone(), stop.clone());
            async move {
                let opts = uds::rpc::CallOptions::timeout(std::time::Duration::from_secs(10));
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let payload = format!("steady call {i}");
                    let got = client.call_with(method, payload.clone().into(), opts).await;
                    match got {
                        Ok(reply) if reply == payload.as_bytes() => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => {
                            *failure.lock().unwrap() = Some(format!("call {i}: {other:?}"));
                            return;
                        }
                    }
                    i += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
        });
        Steady {
            ok,
            failure,
            stop,
            task,
        }
    }

    /// Calls that succeeded so far.
    pub fn calls(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn check(&self) {
        if let Some(f) = self.failure.lock().unwrap().as_ref() {
            panic!("the well-behaved client failed: {f}");
        }
    }

    /// Waits until `n` more calls than `since` have succeeded; panics if a
    /// call fails or this takes over 10 s.
    pub async fn reach(&self, since: u64, n: u64) {
        let start = std::time::Instant::now();
        while self.calls() < since + n {
            self.check();
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "the well-behaved client made {} calls in 10 s, expected {n}",
                self.calls() - since
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        self.check();
    }

    /// Stops the loop and returns how many calls succeeded in all; panics if
    /// any failed.
    pub async fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.check();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), &mut self.task).await;
        self.check();
        self.calls()
    }
}

/// Runs `test` to completion on a fresh two-thread tokio runtime, one such
/// test at a time in this process, holding the turn until the runtime has
/// shut down (and with it every task and descriptor the test left). For
/// tests that count the whole process's descriptors or memory, which tests
/// running alongside would disturb.
pub fn one_at_a_time(test: impl std::future::Future<Output = ()>) {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(test);
    drop(rt);
}

/// Whether process `pid` is still running (a zombie counts as gone); Linux
/// (`/proc`), false elsewhere.
pub fn process_alive(pid: u32) -> bool {
    proc_state(&format!("/proc/{pid}/stat")).is_some_and(|(state, _)| state != "Z")
}

/// This process's children, from `/proc`: those still running, or with
/// `zombies`, also those exited but not yet reaped. 0 where there is no
/// procfs.
pub fn child_processes(zombies: bool) -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| proc_state(&e.path().join("stat").to_string_lossy()))
        .filter(|(state, ppid)| ppid == &me && (zombies || state != "Z"))
        .count()
}

/// The state letter and parent pid of a `/proc/PID/stat` file.
fn proc_state(stat: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name is parenthesised and may hold spaces: what follows
    // the last `)` is "state ppid ...".
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
}

/// The bytes a hex string spells; whitespace and `|` (the header/body
/// separator of PROTOCOL.md's vectors) are skipped.
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(char::is_ascii_hexdigit).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// Waits until `done()` holds, checking every 5 ms; panics with `what` if it
/// does not within `limit`.
pub async fn eventually(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Sets its flag when dropped: proves a handler's future was dropped.
#[derive(Debug)]
pub struct DropFlag(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Sends `SIGKILL` to `pid` (no `kill` process in the timed path).
#[allow(unsafe_code)]
pub fn kill9(pid: u32) {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: kill(2) takes no pointers.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {pid}");
}

/// Whether process `pid` is gone for good: exited and reaped (a zombie is
/// not gone). Linux (`/proc`).
pub fn process_reaped(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Resets this process's peak resident memory (`VmHWM`) to its current RSS;
/// false where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

/// This process's peak resident memory since start or the last
/// [`reset_peak_rss`], in KiB (`VmHWM`); 0 where there is no procfs.
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}
