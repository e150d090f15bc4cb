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
///
/// # Errors
/// As [`Connector::connect`].
///
/// # Cancel safety
/// Cancel safe: a dropped future leaves no connection behind.
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

    /// Gives up connecting after `timeout` (default: no limit; `None`
    /// turns a limit set before off). Takes a `Duration` or an
    /// `Option<Duration>`, as the RPC builders' optional limits do.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// Checks the socket file at `path`, connects, and checks the server's
    /// kernel credentials. Each failed check is its own [`NetError`] variant.
    ///
    /// # Errors
    /// [`NetError::NotFound`], [`NetError::NotASocket`] or [`NetError::Refused`]
    /// for what is (not) at the path; [`NetError::FileOwnerMismatch`],
    /// [`NetError::FileGroupMismatch`] or [`NetError::ModeNotAllowed`] for the
    /// file's checks; [`NetError::ServerUidMismatch`] or
    /// [`NetError::ServerGidMismatch`] for the server's credentials;
    /// [`NetError::ServerBusy`] or [`NetError::ConnectTimeout`] when no
    /// connection could be made in time; [`NetError::NoRuntime`] outside a
    /// tokio runtime.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped future leaves no connection behind.
    pub async fn connect(&self, path: impl AsRef<Path>) -> Result<Conn, NetError> {
        super::require_runtime()?;
        let path = path.as_ref();
        paths::check_len(path)?;
        self.check_file(path)?;
        let busy_limit = self.busy_limit();
        let stream = self
            .with_timeout(
                path,
                connect_retrying(path, busy_limit, || UnixStream::connect(path)),
            )
            .await??;
        self.finish(stream, path)
    }

    /// Connects to a Linux abstract socket. There is no file to check: the
    /// server's kernel credentials are the only check.
    ///
    /// # Errors
    /// [`NetError::AbstractUnsupported`] outside Linux,
    /// [`NetError::AbstractNameTooLong`], and the server-credential and
    /// connection errors of [`Connector::connect`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    // Elsewhere it fails at once, but stays `async` for one signature.
    #[cfg_attr(not(target_os = "linux"), allow(clippy::unused_async))]
    pub async fn connect_abstract(&self, name: impl AsRef<[u8]>) -> Result<Conn, NetError> {
        let name = name.as_ref();
        let display = paths::abstract_display(name);
        #[cfg(target_os = "linux")]
        {
            let max = paths::max_abstract_name_len();
            if name.len() > max {
                return Err(NetError::AbstractNameTooLong {
                    len: name.len(),
                    max,
                });
            }
            let mut raw = Vec::with_capacity(name.len() + 1);
            raw.push(0);
            raw.extend_from_slice(name);
            let busy_limit = self.busy_limit();
            let connect = || {
                let raw = &raw;
                async move {
                    let std = crate::sys::connect_nonblocking(raw)?;
                    UnixStream::from_std(std)
                }
            };
            let stream = self
                .with_timeout(&display, connect_retrying(&display, busy_limit, connect))
                .await??;
            self.finish(stream, &display)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = display;
            Err(NetError::AbstractUnsupported)
        }
    }

    /// How long to retry against a full backlog: until the connect timeout
    /// if one is set (it cuts the retries), else [`BUSY_RETRY_FOR`].
    fn busy_limit(&self) -> Option<Duration> {
        if self.timeout.is_some() {
            None
        } else {
            Some(BUSY_RETRY_FOR)
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
        if let Some(expected) = self.file_owner
            && meta.uid() != expected
        {
            return Err(NetError::FileOwnerMismatch {
                path: path.into(),
                expected,
                found: meta.uid(),
            });
        }
        if let Some(expected) = self.file_group
            && meta.gid() != expected
        {
            return Err(NetError::FileGroupMismatch {
                path: path.into(),
                expected,
                found: meta.gid(),
            });
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
        if let Some(expected) = self.server_uid
            && server.uid != expected
        {
            return Err(NetError::ServerUidMismatch {
                path: path.into(),
                expected,
                found: server.uid,
            });
        }
        if let Some(expected) = self.server_gid
            && server.gid != expected
        {
            return Err(NetError::ServerGidMismatch {
                path: path.into(),
                expected,
                found: server.gid,
            });
        }
        Ok(Conn::new(stream, server))
    }
}

/// Connects, retrying while the server's accept backlog is full (Linux
/// answers a non-blocking connect with `EAGAIN` then), for up to
/// `busy_limit` (`None`: until the caller's timeout cuts it).
async fn connect_retrying<F, Fut>(
    path: &Path,
    busy_limit: Option<Duration>,
    mut connect: F,
) -> Result<UnixStream, NetError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<UnixStream>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match connect().await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if busy_limit.is_some_and(|limit| started.elapsed() >= limit) {
                    return Err(NetError::ServerBusy { path: path.into() });
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(match e.kind() {
                    std::io::ErrorKind::NotFound => NetError::NotFound { path: path.into() },
                    std::io::ErrorKind::ConnectionRefused => {
                        NetError::Refused { path: path.into() }
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

/// A connected pair of sockets (`socketpair`), for a parent and the child
/// process it starts, or for tests. Must be called inside a tokio runtime.
///
/// The kernel reports the *creator* of a socketpair as the peer on both
/// ends: a child that inherits one end learns its parent's credentials, but
/// the parent's end keeps reporting the parent itself, not the child.
///
/// # Errors
/// [`NetError::Io`] if the pair cannot be made (out of descriptors),
/// [`NetError::NoRuntime`] outside a tokio runtime.
pub fn pair() -> Result<(Conn, Conn), NetError> {
    super::require_runtime()?;
    let (a, b) = UnixStream::pair().map_err(|e| NetError::io("socketpair", "", e))?;
    let ca = Cred::of_peer(&a)?;
    let cb = Cred::of_peer(&b)?;
    Ok((Conn::new(a, ca), Conn::new(b, cb)))
}
