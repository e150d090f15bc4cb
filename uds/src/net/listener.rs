//! The listening socket: file lifecycle, accept loop, authorization.

use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UnixListener;

use super::conn::Conn;
use super::error::NetError;
use super::path as paths;
use super::socket_file::{self, SocketFile};
use crate::auth::Policy;
use crate::cred::Cred;
use crate::log_limit::RateLimited;
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
    /// with looser permissions than asked. Every step works through directory
    /// descriptors, so another user who can write the directory cannot make
    /// it touch another file.
    ///
    /// # Errors
    /// [`NetError::NoRuntime`] outside a tokio runtime;
    /// [`NetError::PathTooLong`] or [`NetError::InvalidPath`] for the path;
    /// [`NetError::AddressInUse`] if a server answers there (or another uds
    /// listener holds the path's lock); [`NetError::NotASocket`] for a file
    /// that is not a socket; [`NetError::Tampered`] if another process
    /// changed the directory while the socket was set up;
    /// [`NetError::AbstractHasNoPermissions`],
    /// [`NetError::AbstractNameTooLong`] or [`NetError::AbstractUnsupported`]
    /// for abstract names; [`NetError::Io`] for the OS's own refusals (e.g. a
    /// `chown` without privilege).
    pub fn bind(self) -> Result<Listener, NetError> {
        super::require_runtime()?;
        let stats = Arc::new(Counters::default());
        match self.addr {
            Addr::Path(path) => {
                let (std, file) = socket_file::bind(
                    &path,
                    self.mode.unwrap_or(DEFAULT_MODE),
                    self.owner,
                    self.group,
                )?;
                // If registering fails, dropping `file` removes the socket.
                let inner = register(std, &path)?;
                Ok(Listener {
                    inner,
                    policy: self.policy,
                    display: path,
                    _socket_file: Some(file),
                    stats,
                    denial_notice: None,
                })
            }
            Addr::Abstract(name) => {
                if self.mode.is_some() || self.owner.is_some() || self.group.is_some() {
                    return Err(NetError::AbstractHasNoPermissions);
                }
                let display = paths::abstract_display(&name);
                let std = bind_abstract(&name, &display)?;
                let inner = register(std, &display)?;
                Ok(Listener {
                    inner,
                    policy: self.policy,
                    display,
                    _socket_file: None,
                    stats,
                    denial_notice: None,
                })
            }
        }
    }
}

/// Writes `notice` to a denied peer without waiting, then closes it.
fn send_notice(stream: tokio::net::UnixStream, notice: &[u8]) {
    // Out of the reactor: a plain non-blocking write, no readiness needed.
    if let Ok(mut std) = stream.into_std() {
        let _ = std::io::Write::write(&mut std, notice);
    }
}

fn register(std: StdListener, path: &Path) -> Result<UnixListener, NetError> {
    std.set_nonblocking(true)
        .map_err(|e| NetError::io("set_nonblocking", path, e))?;
    UnixListener::from_std(std).map_err(|e| NetError::io("register listener", path, e))
}

#[derive(Debug)]
struct Counters {
    accepted: AtomicU64,
    denied: AtomicU64,
    failed: AtomicU64,
    /// The denial log: a peer that reconnects in a loop cannot flood it
    /// (it can on the Go package).
    denial_log: RateLimited,
    /// The log of connections whose credentials could not be read.
    failed_log: RateLimited,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            accepted: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            denial_log: RateLimited::new(std::time::Duration::from_secs(1)),
            failed_log: RateLimited::new(std::time::Duration::from_secs(1)),
        }
    }
}

impl Counters {
    /// Logs a denial, at most once a second per listener.
    fn log_denial(&self, listener: &Path, peer: &Cred, reason: &str) {
        if let Some(also) = self.denial_log.allow() {
            tracing::warn!(listener = %listener.display(), pid = peer.pid, uid = peer.uid, gid = peer.gid, %reason, more_denied_since_last_log = also, "connection denied");
        }
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
    /// The socket file, removed when the listener is dropped.
    _socket_file: Option<SocketFile>,
    stats: Arc<Counters>,
    /// Bytes written, best effort, to a denied peer before it is closed
    /// (set by the RPC server: one error frame saying "permission denied").
    denial_notice: Option<&'static [u8]>,
}

impl Listener {
    /// Binds at `path` with the defaults: mode 0600, same-user policy.
    ///
    /// # Errors
    /// As [`ListenerBuilder::bind`].
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
    /// returned. (Served by an `rpc::Server`, the listener first writes them
    /// one constant frame saying "permission denied", without waiting.) Errors that concern one connection are skipped; running out
    /// of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) is
    /// logged and retried with a back-off from 5 ms up to 1 s, so the server
    /// resumes once resources free up. Only an error that leaves the listener
    /// itself unusable is returned.
    ///
    /// # Errors
    /// [`NetError::Io`] only when the listener itself is unusable.
    ///
    /// # Cancel safety
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
                            if let Some(suppressed) = self.stats.failed_log.allow() {
                                tracing::warn!(listener = %self.display.display(), %err, suppressed, "dropping connection: peer credentials unreadable");
                            }
                            continue;
                        }
                    };
                    if let Err(denied) = self.policy.check(&peer) {
                        self.stats.denied.fetch_add(1, Ordering::Relaxed);
                        self.stats.log_denial(&self.display, &peer, &denied.reason);
                        if let Some(notice) = self.denial_notice {
                            send_notice(stream, notice);
                        }
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

    /// Makes [`accept`](Self::accept) write `notice` to each denied peer
    /// before closing it: one non-blocking write into the new socket's empty
    /// buffer, never waited on, whose failure is ignored. The notice is a
    /// constant, so it tells the peer nothing but that it was denied.
    pub(crate) fn set_denial_notice(&mut self, notice: &'static [u8]) {
        self.denial_notice = Some(notice);
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
            if e.kind() == std::io::ErrorKind::AddrInUse {
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
