//! The listening socket: file lifecycle, accept loop, authorization.

use std::io;
use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UnixListener;

use super::conn::Conn;
use super::error::NetError;
use super::path::{self as paths, FileId};
use crate::auth::Policy;
use crate::cred::Cred;
use crate::sys;

/// Default permission bits of a listener's socket file: owner only.
pub const DEFAULT_MODE: u32 = 0o600;

const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Where a listener lives.
#[derive(Debug, Clone)]
enum Addr {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// Configures and binds a [`Listener`].
///
/// ```no_run
/// # fn main() -> Result<(), uds::net::NetError> {
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// # let _g = rt.enter();
/// use uds::auth::Policy;
/// let listener = uds::net::Listener::builder("/run/myapp/api.sock")
///     .mode(0o660)
///     .group(2000)
///     .policy(Policy::same_user().or(Policy::gids([2000])))
///     .bind()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .bind()"]
pub struct ListenerBuilder {
    addr: Addr,
    mode: Option<u32>,
    owner: Option<u32>,
    group: Option<u32>,
    policy: Policy,
}

impl ListenerBuilder {
    /// Permission bits of the socket file (default [`DEFAULT_MODE`], 0o600).
    /// Set before the socket becomes reachable at its path, never after.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Owner uid of the socket file (changing it needs privilege).
    pub fn owner(mut self, uid: u32) -> Self {
        self.owner = Some(uid);
        self
    }

    /// Group of the socket file (you must be a member, or privileged).
    pub fn group(mut self, gid: u32) -> Self {
        self.group = Some(gid);
        self
    }

    /// Who may connect (default [`Policy::same_user`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Creates the socket. Must be called inside a tokio runtime.
    ///
    /// For a filesystem path: a socket file left by a dead server is removed;
    /// a live server's socket, a regular file, a directory or a symlink at the
    /// path is an error and is left untouched. The socket is bound inside a
    /// fresh private (0700) directory next to `path`, given its mode and
    /// owner there, and only then linked into place — it is never reachable
    /// with looser permissions than asked.
    pub fn bind(self) -> Result<Listener, NetError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NetError::NoRuntime);
        }
        let stats = Arc::new(Counters::default());
        match self.addr {
            Addr::Path(path) => {
                let (inner, id, lock) = bind_path(
                    &path,
                    self.mode.unwrap_or(DEFAULT_MODE),
                    self.owner,
                    self.group,
                )?;
                Ok(Listener {
                    inner,
                    policy: self.policy,
                    display: path.clone(),
                    cleanup: Some(Cleanup { path, id, lock }),
                    stats,
                })
            }
            Addr::Abstract(name) => {
                if self.mode.is_some() || self.owner.is_some() || self.group.is_some() {
                    return Err(NetError::AbstractHasNoPermissions);
                }
                let display = abstract_display(&name);
                let std = bind_abstract(&name, &display)?;
                let inner = register(std, &display)?;
                Ok(Listener {
                    inner,
                    policy: self.policy,
                    display,
                    cleanup: None,
                    stats,
                })
            }
        }
    }
}

/// What a path listener removes when it closes.
#[derive(Debug)]
struct Cleanup {
    path: PathBuf,
    id: FileId,
    lock: PathLock,
}

pub(crate) fn abstract_display(name: &[u8]) -> PathBuf {
    PathBuf::from(format!("@{}", String::from_utf8_lossy(name)))
}

fn register(std: StdListener, path: &Path) -> Result<UnixListener, NetError> {
    std.set_nonblocking(true)
        .map_err(|e| NetError::io("set_nonblocking", path, e))?;
    UnixListener::from_std(std).map_err(|e| NetError::io("register listener", path, e))
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    denied: AtomicU64,
    failed: AtomicU64,
    /// Milliseconds since the Unix epoch of the last denial logged.
    last_denial_log_ms: AtomicU64,
    /// Denials not logged since then.
    denials_unlogged: AtomicU64,
}

impl Counters {
    /// Logs a denial, at most once a second per listener: a peer that
    /// reconnects in a loop cannot flood the log (it can on the Go package).
    fn log_denial(&self, listener: &Path, peer: &Cred, reason: &str) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let last = self.last_denial_log_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < 1000
            || self
                .last_denial_log_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.denials_unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let also = self.denials_unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(listener = %listener.display(), pid = peer.pid, uid = peer.uid, gid = peer.gid, %reason, more_denied_since_last_log = also, "connection denied");
    }
}

/// Counts of what a [`Listener`] did with incoming connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Connections authorized and handed out by `accept`.
    pub accepted: u64,
    /// Connections refused by the policy (closed unread).
    pub denied: u64,
    /// Connections dropped because their credentials could not be read.
    pub failed: u64,
}

/// A listening Unix socket that authorizes every peer before handing it out.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("demo.sock");
/// let listener = uds::net::Listener::bind(&path)?;
/// let server = tokio::spawn(async move {
///     let mut conn = listener.accept().await?;
///     let who = conn.peer_cred().uid;
///     conn.write_all(format!("hello uid {who}").as_bytes()).await?;
///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
/// });
/// let mut conn = uds::net::connect(&path).await?; // checks the file and the server's creds
/// let mut reply = String::new();
/// conn.read_to_string(&mut reply).await?;
/// assert!(reply.starts_with("hello uid"));
/// server.await?.map_err(|e| e.to_string())?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Listener {
    inner: UnixListener,
    policy: Policy,
    display: PathBuf,
    cleanup: Option<Cleanup>,
    stats: Arc<Counters>,
}

impl Listener {
    /// Binds at `path` with the defaults: mode 0600, same-user policy.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, NetError> {
        Listener::builder(path).bind()
    }

    /// A builder for a listener at a filesystem path.
    pub fn builder(path: impl AsRef<Path>) -> ListenerBuilder {
        ListenerBuilder {
            addr: Addr::Path(path.as_ref().to_path_buf()),
            mode: None,
            owner: None,
            group: None,
            policy: Policy::default(),
        }
    }

    /// A builder for a listener in Linux's abstract socket namespace (no file,
    /// gone when the listener closes).
    ///
    /// Abstract sockets have **no file permissions**: any process in the same
    /// network namespace can connect. The authorization policy, applied to
    /// the kernel credentials of every peer, is the only gate; the default
    /// (same user) is therefore important here. Not available outside Linux
    /// ([`NetError::AbstractUnsupported`]).
    pub fn builder_abstract(name: impl AsRef<[u8]>) -> ListenerBuilder {
        ListenerBuilder {
            addr: Addr::Abstract(name.as_ref().to_vec()),
            mode: None,
            owner: None,
            group: None,
            policy: Policy::default(),
        }
    }

    /// Waits for the next authorized connection.
    ///
    /// Peers the policy denies are closed before anything is read from them,
    /// logged at `warn`, counted in [`ListenerStats::denied`], and never
    /// returned. Errors that concern one connection are skipped; running out
    /// of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) is
    /// logged and retried with a back-off from 5 ms up to 1 s, so the server
    /// resumes once resources free up. Only an error that leaves the listener
    /// itself unusable is returned.
    ///
    /// Cancel safe: if the future is dropped, no authorized connection is lost
    /// (one mid-authorization is closed, as the peer would see with any
    /// server that goes away).
    pub async fn accept(&self) -> Result<Conn, NetError> {
        let mut backoff = BACKOFF_START;
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) => {
                    backoff = BACKOFF_START;
                    let peer = match Cred::of_peer(&stream) {
                        Ok(peer) => peer,
                        Err(err) => {
                            self.stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(listener = %self.display.display(), %err, "dropping connection: peer credentials unreadable");
                            continue;
                        }
                    };
                    if let Err(denied) = self.policy.check(&peer) {
                        self.stats.denied.fetch_add(1, Ordering::Relaxed);
                        self.stats.log_denial(&self.display, &peer, &denied.reason);
                        drop(stream);
                        continue;
                    }
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    return Ok(Conn::new(stream, peer));
                }
                Err(err) if sys::is_resource_exhaustion(&err) => {
                    tracing::error!(listener = %self.display.display(), %err, retry_in = ?backoff, "accept failed: out of resources; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(err) if sys::is_per_connection_accept_error(&err) => {
                    tracing::debug!(listener = %self.display.display(), %err, "accept: connection gone before it was taken");
                }
                Err(err) => return Err(NetError::io("accept on", &self.display, err)),
            }
        }
    }

    /// What the listener has accepted and denied so far.
    pub fn stats(&self) -> ListenerStats {
        ListenerStats {
            accepted: self.stats.accepted.load(Ordering::Relaxed),
            denied: self.stats.denied.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
        }
    }

    /// The socket's path, or `@name` for an abstract socket.
    pub fn local_path(&self) -> &Path {
        &self.display
    }

    /// The authorization policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Closes the listener and removes its socket file, if the file at the
    /// path is still the one this listener created. Same as dropping it.
    pub fn close(self) {}
}

impl Drop for Listener {
    fn drop(&mut self) {
        let Some(Cleanup { path, id, lock }) = self.cleanup.take() else {
            return;
        };
        // Remove only our own socket: if someone replaced the file, it is
        // theirs. Holding the path's lock, no other uds listener can be
        // publishing there meanwhile.
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if FileId::of(&meta) == id => {
                if let Err(err) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %err, "could not remove socket file");
                }
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "socket file was replaced; leaving it");
            }
            Err(_) => {}
        }
        lock.release();
    }
}

/// An exclusive lock on `<socket path>.lock`, held for a listener's life.
///
/// Without it, two servers starting at once on a stale socket could both
/// judge it stale, and one could delete the other's fresh socket. With it,
/// only the lock holder touches the path. The lock file is removed on close;
/// a taker checks that the file it locked is still the one at the path.
#[derive(Debug)]
struct PathLock {
    path: PathBuf,
    file: std::fs::File,
}

impl PathLock {
    fn acquire(socket: &Path) -> Result<Self, NetError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut name = socket.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        for _ in 0..8 {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc_nofollow())
                .open(&path)
                .map_err(|e| NetError::io("open lock file", &path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(NetError::AddressInUse {
                        path: socket.into(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(NetError::io("lock", &path, e));
                }
            }
            // The previous holder may have removed the file between our open
            // and our lock: then we locked a dead inode; try again.
            let ours = file
                .metadata()
                .map_err(|e| NetError::io("stat lock file", &path, e))?;
            match paths::lstat(&path)? {
                Some(now) if FileId::of(&now) == FileId::of(&ours) => {
                    return Ok(PathLock { path, file });
                }
                _ => {}
            }
        }
        Err(NetError::AddressInUse {
            path: socket.into(),
        })
    }

    fn release(self) {
        // Unlink while still holding the lock, then unlock (on drop).
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// `O_NOFOLLOW`: never open a lock file through a symlink planted there.
fn libc_nofollow() -> i32 {
    crate::sys::o_nofollow()
}

/// A private directory next to the socket path, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create_in(parent: &Path) -> Result<Self, NetError> {
        use std::os::unix::fs::DirBuilderExt;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for _ in 0..16 {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let name = format!(
                ".uds{:x}",
                (u64::from(std::process::id()) << 32) ^ u64::from(nanos) ^ (n << 20)
            );
            let dir = parent.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(PrivateDir(dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(NetError::io("create private directory in", parent, e)),
            }
        }
        Err(NetError::io(
            "create private directory in",
            parent,
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.join("s"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn bind_path(
    path: &Path,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<(UnixListener, FileId, PathLock), NetError> {
    paths::check_len(path)?;
    let lock = PathLock::acquire(path)?;
    match bind_locked(path, mode, owner, group) {
        Ok((listener, id)) => Ok((listener, id, lock)),
        Err(e) => {
            // A refused bind leaves no lock file behind.
            lock.release();
            Err(e)
        }
    }
}

/// The part of [`bind_path`] done while holding the path's lock.
fn bind_locked(
    path: &Path,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<(UnixListener, FileId), NetError> {
    paths::clear_stale(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = PrivateDir::create_in(parent)?;
    let staged = dir.0.join("s");
    let std_listener = bind_staged(&dir.0, &staged, path)?;
    // Registered before it is published, so no failure after publishing
    // can leave a socket file with no listener to clean it up.
    let listener = register(std_listener, path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| NetError::io("chmod", &staged, e))?;
    }
    if owner.is_some() || group.is_some() {
        std::os::unix::fs::lchown(&staged, owner, group)
            .map_err(|e| NetError::io("chown", &staged, e))?;
    }
    let meta = paths::lstat(&staged)?
        .ok_or_else(|| NetError::io("stat", &staged, io::Error::from(io::ErrorKind::NotFound)))?;
    let id = FileId::of(&meta);
    publish(&staged, path)?;
    Ok((listener, id))
}

/// Binds at `staged` inside the private directory `dir`. When the staged path
/// is too long for `sun_path` (the final path fits, but the private directory
/// adds a few bytes), Linux binds through `/proc/self/fd/N/`, which names the
/// same directory in a few bytes.
fn bind_staged(dir: &Path, staged: &Path, path: &Path) -> Result<StdListener, NetError> {
    if paths::check_len(staged).is_ok() {
        return StdListener::bind(staged).map_err(|e| NetError::io("bind", staged, e));
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let _ = path;
        let handle = std::fs::File::open(dir).map_err(|e| NetError::io("open", dir, e))?;
        let short = PathBuf::from(format!("/proc/self/fd/{}/s", handle.as_raw_fd()));
        StdListener::bind(&short).map_err(|e| NetError::io("bind", staged, e))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        // The staging directory costs a few bytes of the limit here.
        let extra = staged
            .as_os_str()
            .len()
            .saturating_sub(path.as_os_str().len());
        Err(NetError::PathTooLong {
            path: path.into(),
            len: path.as_os_str().len(),
            max: paths::max_path_len().saturating_sub(extra),
        })
    }
}

/// Makes the staged socket visible at `path` without replacing anything that
/// appeared there meanwhile: a hard link fails if the name exists. (No
/// fallback to `rename`, which would replace it.)
fn publish(staged: &Path, path: &Path) -> Result<(), NetError> {
    for attempt in 0..2 {
        match std::fs::hard_link(staged, path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt == 0 => {
                // Something (not a uds listener: we hold the lock) appeared.
                paths::clear_stale(path)?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(NetError::AddressInUse { path: path.into() });
            }
            Err(e) => return Err(NetError::io("link socket into place at", path, e)),
        }
    }
    Err(NetError::AddressInUse { path: path.into() })
}

fn bind_abstract(name: &[u8], display: &Path) -> Result<StdListener, NetError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let max = paths::max_abstract_name_len();
        if name.len() > max {
            return Err(NetError::AbstractNameTooLong {
                len: name.len(),
                max,
            });
        }
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)
            .map_err(|e| NetError::io("abstract address", display, e))?;
        StdListener::bind_addr(&addr).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                NetError::AddressInUse {
                    path: display.into(),
                }
            } else {
                NetError::io("bind", display, e)
            }
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (name, display);
        Err(NetError::AbstractUnsupported)
    }
}
