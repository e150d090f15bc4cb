use std::io;
use std::path::PathBuf;

use crate::cred::CredError;

/// What kind of filesystem object stands at a socket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A Unix socket.
    Socket,
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, device or other special file.
    Other,
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Socket => "a socket",
            FileKind::File => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Other => "a special file",
        })
    }
}

/// A file mode printed in octal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Errors of the socket layer: binding, accepting and connecting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The path is longer than the platform's `sun_path` allows.
    #[error(
        "socket path {path:?} is {len} bytes; this platform allows at most {max}: use a shorter path"
    )]
    PathTooLong {
        /// The path given.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The platform limit in bytes.
        max: usize,
    },
    /// The path contains a NUL byte, or is empty.
    #[error("socket path {path:?} is empty or contains a NUL byte")]
    InvalidPath {
        /// The path given.
        path: PathBuf,
    },
    /// An abstract socket name is longer than the platform allows.
    #[error("abstract socket name is {len} bytes; at most {max} are allowed")]
    AbstractNameTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Mode, owner or group was set for an abstract socket, which has no file.
    #[error(
        "abstract sockets have no file permissions: drop .mode()/.owner()/.group() and rely on the policy"
    )]
    AbstractHasNoPermissions,
    /// Abstract-namespace sockets exist only on Linux.
    #[error("abstract-namespace sockets are only supported on Linux; use a filesystem path")]
    AbstractUnsupported,
    /// Something other than a socket is at the path; it was left untouched.
    #[error(
        "{path:?} is {found}, not a socket; refusing to touch it: remove it yourself or pick another path"
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What is there.
        found: FileKind,
    },
    /// A live server already answers on the path; it was left untouched.
    #[error("a server is already listening on {path:?}; stop it or pick another path")]
    AddressInUse {
        /// The path.
        path: PathBuf,
    },
    /// No socket at the path.
    #[error("no socket at {path:?}: is the server running?")]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// A socket file is there but nobody accepted the connection: no server
    /// listens on it (a stale socket), or on macOS its backlog is full.
    #[error(
        "nothing accepted the connection at {path:?}: the server is not running (or, on macOS, is overloaded)"
    )]
    Refused {
        /// The path.
        path: PathBuf,
    },
    /// No tokio runtime is running in this thread.
    #[error("uds sockets need a tokio runtime: call this from within one (e.g. #[tokio::main])")]
    NoRuntime,
    /// The socket file's owner is not the expected user.
    #[error(
        "socket {path:?} is owned by uid {found}, expected uid {expected}: it may not be the server you meant"
    )]
    FileOwnerMismatch {
        /// The path.
        path: PathBuf,
        /// The uid the client expected.
        expected: u32,
        /// The file's owner.
        found: u32,
    },
    /// The socket file's group is not the expected group.
    #[error("socket {path:?} belongs to gid {found}, expected gid {expected}")]
    FileGroupMismatch {
        /// The path.
        path: PathBuf,
        /// The gid the client expected.
        expected: u32,
        /// The file's group.
        found: u32,
    },
    /// The socket file's permission bits are not among the allowed ones.
    #[error(
        "socket {path:?} has mode {found}, allowed: {allowed}: the server set looser (or other) permissions than expected"
    )]
    ModeNotAllowed {
        /// The path.
        path: PathBuf,
        /// The file's permission bits (0o777 part).
        found: Mode,
        /// The allowed modes, in words.
        allowed: String,
    },
    /// The process that listens on the connected socket is not the expected
    /// user (checked from the kernel on the connected socket, so a file
    /// swapped after the file checks is caught here).
    #[error(
        "the server on {path:?} runs as uid {found}, expected uid {expected}: refusing to talk to it"
    )]
    ServerUidMismatch {
        /// The path or name.
        path: PathBuf,
        /// The uid the client expected.
        expected: u32,
        /// The server process's uid.
        found: u32,
    },
    /// The listening process's gid is not the expected one.
    #[error(
        "the server on {path:?} runs as gid {found}, expected gid {expected}: refusing to talk to it"
    )]
    ServerGidMismatch {
        /// The path or name.
        path: PathBuf,
        /// The gid the client expected.
        expected: u32,
        /// The server process's gid.
        found: u32,
    },
    /// The server's accept backlog stayed full: it is alive but overloaded.
    #[error(
        "the server on {path:?} is not accepting connections (backlog full); retry later or set a connect timeout"
    )]
    ServerBusy {
        /// The path.
        path: PathBuf,
    },
    /// Connecting took longer than the configured timeout.
    #[error("connecting to {path:?} timed out after {after:?}")]
    ConnectTimeout {
        /// The path or name.
        path: PathBuf,
        /// The timeout.
        after: std::time::Duration,
    },
    /// A file the listener created next to the socket path (its private
    /// staging directory, the socket inside it, or the lock file) was not
    /// what the listener made: another process changed the directory while
    /// the socket was being set up. Nothing was chmodded, chowned, linked or
    /// removed through it.
    #[error(
        "setting up the socket at {path:?} was interfered with: {what}; another user can write \
         the socket's directory: make it writable only by its owner (or sticky, like /tmp)"
    )]
    Tampered {
        /// The socket path being bound.
        path: PathBuf,
        /// What was found instead of what the listener made.
        what: &'static str,
    },
    /// Reading the peer's kernel credentials failed.
    #[error(transparent)]
    Cred(#[from] CredError),
    /// An OS call failed.
    #[error("{op} {path:?} failed: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl NetError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
