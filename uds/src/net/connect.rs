//! Client side: connect with file checks and a server-credential check.

use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;

use super::conn::Conn;
use super::error::{FileKind, Mode, NetError};
use super::path as paths;
use crate::cred::Cred;
use crate::sys;

/// Connects to the server at `path` with the default checks of
/// [`Connector::new`]: the socket file is a socket, owned by this process's
/// user, with no permission bits for others, and the process listening on it
/// runs as this process's user.
pub async fn connect(path: impl AsRef<Path>) -> Result<Conn, NetError> {
    Connector::new().connect(path).await
}

/// Which permission bits a socket file may have.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ModeRule {
    /// `mode & 0o007 == 0`.
    NoOthers,
    /// One of these (compared on the 0o777 bits).
    OneOf(Vec<u32>),
    Any,
}

/// Options for connecting to a server, and the checks made on the way.
///
/// Before connecting, the socket file is checked with `lstat` (a symlink is
/// not followed): it must be a socket, its owner and group must be as
/// expected, and its permission bits must be allowed. The file can be swapped
/// between this check and `connect`, so after connecting the **server's
/// kernel credentials on the connected socket** are checked too: that peer
/// cannot be swapped.
///
/// Modes compare the `0o777` permission bits only; the setuid, setgid and
/// sticky bits do not affect who may connect to a socket and are ignored
/// (`0o1770` and `0o770` are the same to this check).
///
/// ```no_run
/// # async fn f() -> Result<(), uds::net::NetError> {
/// // A root daemon's socket, group-accessible to group 2000:
/// let conn = uds::net::Connector::new()
///     .owner(0)
///     .group(2000)
///     .allowed_modes([0o660])
///     .connect("/run/daemon.sock")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a connector does nothing until .connect()"]
pub struct Connector {
    file_owner: Option<u32>,
    file_group: Option<u32>,
    server_uid: Option<u32>,
    server_gid: Option<u32>,
    modes: ModeRule,
    timeout: Option<Duration>,
}

impl Default for Connector {
    fn default() -> Self {
        Connector::new()
    }
}

impl Connector {
    /// The default checks: file owner and server uid = this process's
    /// effective uid; no permission bits for others; no group check; no
    /// timeout.
    pub fn new() -> Self {
        let me = sys::effective_uid();
        Connector {
            file_owner: Some(me),
            file_group: None,
            server_uid: Some(me),
            server_gid: None,
            modes: ModeRule::NoOthers,
            timeout: None,
        }
    }

    /// Expects the socket file to be owned by, and the server to run as, `uid`.
    pub fn owner(mut self, uid: u32) -> Self {
        self.file_owner = Some(uid);
        self.server_uid = Some(uid);
        self
    }

    /// Expects the socket file's owner to be `uid` (`None`: do not check).
    pub fn file_owner(mut self, uid: Option<u32>) -> Self {
        self.file_owner = uid;
        self
    }

    /// Expects the server process to run as `uid` (`None`: do not check).
    pub fn server_uid(mut self, uid: Option<u32>) -> Self {
        self.server_uid = uid;
        self
    }

    /// Expects the socket file's group to be `gid`.
    pub fn group(mut self, gid: u32) -> Self {
        self.file_group = Some(gid);
        self
    }

    /// Expects the server process's effective gid to be `gid`.
    pub fn server_gid(mut self, gid: u32) -> Self {
        self.server_gid = Some(gid);
        self
    }

    /// Allows exactly these permission modes (octal, e.g. `[0o600, 0o660]`).
    pub fn allowed_modes(mut self, modes: impl IntoIterator<Item = u32>) -> Self {
        self.modes = ModeRule::OneOf(modes.into_iter().map(|m| m & 0o777).collect());
        self
    }

    /// Accepts any permission bits on the socket file.
    pub fn any_mode(mut self) -> Self {
        self.modes = ModeRule::Any;
        self
    }

    /// Gives up connecting after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Checks the socket file at `path`, connects, and checks the server's
    /// kernel credentials. Each failed check is its own [`NetError`] variant.
    pub async fn connect(&self, path: impl AsRef<Path>) -> Result<Conn, NetError> {
        let path = path.as_ref();
        paths::check_len(path)?;
        self.check_file(path)?;
        let stream = self.with_timeout(path, connect_retrying(path)).await??;
        self.finish(stream, path)
    }

    /// Connects to a Linux abstract socket. There is no file to check: the
    /// server's kernel credentials are the only check.
    pub async fn connect_abstract(&self, name: impl AsRef<[u8]>) -> Result<Conn, NetError> {
        let name = name.as_ref();
        let display = super::listener::abstract_display(name);
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
                .map_err(|e| NetError::io("abstract address", &display, e))?;
            // std's connect_addr is blocking; for a local socket it either
            // succeeds at once or fails at once, except when the server's
            // backlog is full, so it runs off the async threads.
            let connect = tokio::task::spawn_blocking(move || {
                std::os::unix::net::UnixStream::connect_addr(&addr)
            });
            let std = self
                .with_timeout(&display, connect)
                .await?
                .map_err(|e| NetError::io("connect to", &display, std::io::Error::other(e)))?
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => NetError::NotFound {
                        path: display.clone(),
                    },
                    _ => NetError::io("connect to", &display, e),
                })?;
            std.set_nonblocking(true)
                .map_err(|e| NetError::io("set_nonblocking", &display, e))?;
            let stream = UnixStream::from_std(std)
                .map_err(|e| NetError::io("register socket", &display, e))?;
            self.finish(stream, &display)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = display;
            Err(NetError::AbstractUnsupported)
        }
    }

    async fn with_timeout<F: std::future::Future>(
        &self,
        path: &Path,
        fut: F,
    ) -> Result<F::Output, NetError> {
        match self.timeout {
            None => Ok(fut.await),
            Some(after) => {
                tokio::time::timeout(after, fut)
                    .await
                    .map_err(|_| NetError::ConnectTimeout {
                        path: path.into(),
                        after,
                    })
            }
        }
    }

    fn check_file(&self, path: &Path) -> Result<(), NetError> {
        use std::os::unix::fs::MetadataExt;
        let meta = paths::lstat(path)?.ok_or_else(|| NetError::NotFound { path: path.into() })?;
        let kind = paths::kind_of(&meta);
        if kind != FileKind::Socket {
            return Err(NetError::NotASocket {
                path: path.into(),
                found: kind,
            });
        }
        if let Some(expected) = self.file_owner {
            if meta.uid() != expected {
                return Err(NetError::FileOwnerMismatch {
                    path: path.into(),
                    expected,
                    found: meta.uid(),
                });
            }
        }
        if let Some(expected) = self.file_group {
            if meta.gid() != expected {
                return Err(NetError::FileGroupMismatch {
                    path: path.into(),
                    expected,
                    found: meta.gid(),
                });
            }
        }
        let perm = meta.mode() & 0o777;
        let allowed = match &self.modes {
            ModeRule::NoOthers => perm.trailing_zeros() >= 3, // no bits for "other"
            ModeRule::OneOf(list) => list.contains(&perm),
            ModeRule::Any => true,
        };
        if !allowed {
            return Err(NetError::ModeNotAllowed {
                path: path.into(),
                found: Mode(perm),
                allowed: self.describe_modes(),
            });
        }
        Ok(())
    }

    fn describe_modes(&self) -> String {
        match &self.modes {
            ModeRule::NoOthers => "no permission bits for others (mode & 0o007 == 0)".to_owned(),
            ModeRule::OneOf(list) => {
                let list: Vec<String> = list.iter().map(|m| Mode(*m).to_string()).collect();
                format!("one of {}", list.join(", "))
            }
            ModeRule::Any => "any".to_owned(),
        }
    }

    fn finish(&self, stream: UnixStream, path: &Path) -> Result<Conn, NetError> {
        let server = Cred::of_peer(&stream)?;
        if let Some(expected) = self.server_uid {
            if server.uid != expected {
                return Err(NetError::ServerUidMismatch {
                    path: path.into(),
                    expected,
                    found: server.uid,
                });
            }
        }
        if let Some(expected) = self.server_gid {
            if server.gid != expected {
                return Err(NetError::ServerGidMismatch {
                    path: path.into(),
                    expected,
                    found: server.gid,
                });
            }
        }
        Ok(Conn::new(stream, server))
    }
}

/// Connects, retrying while the server's accept backlog is full (Linux
/// answers a non-blocking connect with `EAGAIN` then). Without a timeout the
/// retries stop after [`BUSY_RETRY_FOR`] with [`NetError::ServerBusy`].
async fn connect_retrying(path: &Path) -> Result<UnixStream, NetError> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if started.elapsed() >= BUSY_RETRY_FOR {
                    return Err(NetError::ServerBusy { path: path.into() });
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                        NetError::NotFound { path: path.into() }
                    }
                    _ => NetError::io("connect to", path, e),
                });
            }
        }
    }
}

/// How long a connect keeps retrying against a full accept backlog when no
/// timeout was set.
pub const BUSY_RETRY_FOR: Duration = Duration::from_secs(1);

/// A connected pair of sockets (`socketpair`), each end knowing the other's
/// credentials — for a parent and the child process it starts, or for tests.
/// Must be called inside a tokio runtime.
pub fn pair() -> Result<(Conn, Conn), NetError> {
    let (a, b) = UnixStream::pair().map_err(|e| NetError::io("socketpair", "", e))?;
    let ca = Cred::of_peer(&a)?;
    let cb = Cred::of_peer(&b)?;
    Ok((Conn::new(a, ca), Conn::new(b, cb)))
}
