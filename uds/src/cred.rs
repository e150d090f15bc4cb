//! Process credentials as the kernel reports them.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::sys;

/// The identity of a process on the other end of a Unix socket, read from the
/// kernel (`SO_PEERCRED` on Linux, `LOCAL_PEERCRED` + `LOCAL_PEERPID` on
/// macOS) — never from anything the peer sent.
///
/// For a connection accepted by a server these are the client's credentials
/// at the time it called `connect`; on the client side, the server's at
/// `listen`; for a [`pair`](crate::net::pair), the process that created it.
///
/// ```
/// let me = uds::Cred::current()?;
/// assert_eq!(me.pid, std::process::id() as i32);
/// # Ok::<(), uds::cred::CredError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Cred {
    /// Process id.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective (primary) group id.
    pub gid: u32,
    groups: Option<Arc<[u32]>>,
}

/// Reading credentials from the kernel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredError {
    /// This platform has no way to learn a socket peer's credentials; uds
    /// refuses to run there rather than make one up.
    #[error("peer credentials are not supported on this platform (supported: Linux, macOS)")]
    Unsupported,
    /// The kernel refused the request (for example, the socket is not a
    /// connected Unix socket).
    #[error("reading credentials from the kernel failed: {0}")]
    Os(#[source] io::Error),
}

impl From<io::Error> for CredError {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::Unsupported {
            CredError::Unsupported
        } else {
            CredError::Os(err)
        }
    }
}

impl Cred {
    /// Builds a credential by hand, for tests of authorization policies.
    ///
    /// The library never trusts a `Cred` it did not read from the kernel; a
    /// value made here only serves to exercise your own code.
    pub fn new(pid: i32, uid: u32, gid: u32, supplementary_groups: Option<Vec<u32>>) -> Self {
        Cred {
            pid,
            uid,
            gid,
            groups: supplementary_groups.map(Into::into),
        }
    }

    /// The credentials of the current process (effective uid and gid).
    ///
    /// # Errors
    /// [`CredError`] if the supplementary groups cannot be read.
    pub fn current() -> Result<Self, CredError> {
        Ok(sys::current_cred()?.into())
    }

    /// The kernel-reported credentials of the peer of a connected Unix socket.
    ///
    /// # Errors
    /// [`CredError`] if `socket` is not a connected Unix socket, or the
    /// platform has no way to read a peer's credentials.
    pub fn of_peer(socket: &impl AsFd) -> Result<Self, CredError> {
        Ok(sys::peer_cred(socket.as_fd())?.into())
    }

    /// The peer's supplementary groups, where the kernel reports them
    /// (Linux 4.13+ via `SO_PEERGROUPS`, macOS via `LOCAL_PEERCRED`, which
    /// caps the list at 16). `None` means unknown, not "no groups".
    pub fn supplementary_groups(&self) -> Option<&[u32]> {
        self.groups.as_deref()
    }

    /// Whether the process is a member of `gid`, as its primary group or, when
    /// known, one of its supplementary groups.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.as_deref().is_some_and(|g| g.contains(&gid))
    }
}

impl From<sys::RawCred> for Cred {
    fn from(raw: sys::RawCred) -> Self {
        Cred {
            pid: raw.pid,
            uid: raw.uid,
            gid: raw.gid,
            groups: raw.groups.map(Into::into),
        }
    }
}

impl fmt::Debug for Cred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cred")
            .field("pid", &self.pid)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("groups", &self.groups.as_deref())
            .finish()
    }
}

impl fmt::Display for Cred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid={} uid={} gid={}", self.pid, self.uid, self.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_group_checks_primary_and_supplementary() {
        let c = Cred::new(1, 1000, 100, Some(vec![100, 27, 44]));
        assert!(c.in_group(100));
        assert!(c.in_group(27));
        assert!(!c.in_group(5));
        let unknown = Cred::new(1, 1000, 100, None);
        assert!(unknown.in_group(100));
        assert!(!unknown.in_group(27));
    }

    #[test]
    fn socketpair_creds_are_ours() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let c = Cred::of_peer(&a).unwrap();
        let me = Cred::current().unwrap();
        assert_eq!((c.pid, c.uid, c.gid), (me.pid, me.uid, me.gid));
    }
}
