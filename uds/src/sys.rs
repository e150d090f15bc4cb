//! Every direct OS call of the crate, and the only module allowed `unsafe`.
//!
//! The rest of the crate goes through std and tokio; what they do not offer
//! (peer credentials, a non-blocking probe connect, resource-exhaustion
//! classification) lives here behind small safe functions. Each `unsafe`
//! block carries a `SAFETY:` note.
//!
//! Hand-written rather than taken from `nix`/`rustix` because we need
//! `SO_PEERGROUPS` and `LOCAL_PEERCRED`'s group list, which neither exposes
//! on both platforms, and the surface is five calls.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// Credentials of a socket peer as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawCred {
    pub(crate) pid: i32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups, when the platform reports them for a peer.
    pub(crate) groups: Option<Vec<u32>>,
}

/// Longest filesystem socket path, in bytes, that `bind`/`connect` accept
/// (the size of `sun_path` less the terminating NUL).
pub(crate) const fn max_path_len() -> usize {
    // `sun_path` is the struct's last field; what follows its offset is it.
    size_of::<libc::sockaddr_un>() - std::mem::offset_of!(libc::sockaddr_un, sun_path) - 1
}

/// The effective uid of this process.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The credentials of this process: pid, effective uid and gid, and its
/// supplementary groups.
pub(crate) fn current_cred() -> io::Result<RawCred> {
    // SAFETY: getpid/geteuid/getegid have no preconditions and cannot fail.
    let (pid, uid, gid) = unsafe { (libc::getpid(), libc::geteuid(), libc::getegid()) };
    Ok(RawCred {
        pid,
        uid,
        gid,
        groups: Some(current_groups()?),
    })
}

fn current_groups() -> io::Result<Vec<u32>> {
    // SAFETY: with a size of 0, getgroups writes nothing and returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n_usize = usize::try_from(n).map_err(|_| io::Error::other("negative group count"))?;
    let mut groups: Vec<libc::gid_t> = vec![0; n_usize];
    // SAFETY: the buffer holds `n` gids, and we pass `n` as its capacity.
    let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(usize::try_from(got).unwrap_or(0));
    Ok(groups)
}

/// Reads the peer credentials of a connected Unix socket from the kernel.
///
/// For an accepted socket these are the client's credentials at `connect`;
/// for a connected client socket, the server's at `listen`; for a
/// `socketpair`, the creator's.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<RawCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `fd` is a live descriptor for the borrow; `cred` and `len`
    // point to writable memory of the size we pass.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != size_of::<libc::ucred>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_PEERCRED returned a short ucred",
        ));
    }
    Ok(RawCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        groups: peer_groups(fd)?,
    })
}

/// The peer's supplementary groups via `SO_PEERGROUPS` (Linux 4.13+);
/// `None` when the kernel does not support the option.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Option<Vec<u32>>> {
    // The kernel caps supplementary groups at NGROUPS_MAX (65536); start
    // small and grow on ERANGE, which reports the size it needs.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is writable for `len` bytes; `fd` is live.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / size_of::<libc::gid_t>());
            return Ok(Some(groups));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) if groups.len() < 65_536 => {
                let want = (len as usize / size_of::<libc::gid_t>()).max(groups.len() * 2);
                groups.resize(want.min(65_536), 0);
            }
            Some(libc::ENOPROTOOPT) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Reads the peer credentials of a connected Unix socket from the kernel.
#[cfg(any(target_os = "macos", target_os = "ios"))]
pub(crate) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<RawCred> {
    // SAFETY: an all-zero xucred is a valid value of this plain C struct.
    let mut cred: libc::xucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::xucred>() as libc::socklen_t;
    // SAFETY: `fd` is live; `cred`/`len` are writable and sized as passed.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_LOCAL,
            libc::LOCAL_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if cred.cr_version != libc::XUCRED_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "LOCAL_PEERCRED returned an unknown xucred version",
        ));
    }
    let mut pid: libc::pid_t = 0;
    let mut pid_len = size_of::<libc::pid_t>() as libc::socklen_t;
    // SAFETY: as above, for a pid_t.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_LOCAL,
            libc::LOCAL_PEERPID,
            std::ptr::from_mut(&mut pid).cast(),
            &raw mut pid_len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (cred.cr_ngroups.max(0) as usize).min(cred.cr_groups.len());
    // cr_groups[0] is the effective gid; the rest are supplementary.
    let gid = if n > 0 { cred.cr_groups[0] } else { 0 };
    Ok(RawCred {
        pid,
        uid: cred.cr_uid,
        gid,
        groups: Some(cred.cr_groups[..n].to_vec()),
    })
}

/// Peer credentials are not implemented for this platform: a typed error,
/// never a made-up uid.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios"
)))]
pub(crate) fn peer_cred(_fd: BorrowedFd<'_>) -> io::Result<RawCred> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "peer credentials are not supported on this platform",
    ))
}

/// What a non-blocking connect to an existing socket file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Something accepted the connection, or its backlog is full: a live server.
    Live,
    /// Connection refused: a socket file with no listener behind it.
    Stale,
    /// The path vanished between the look-up and the probe.
    Gone,
}

/// Connects to `path` without blocking to learn whether a server is there.
pub(crate) fn probe_socket(path: &Path) -> io::Result<Probe> {
    use std::os::unix::ffi::OsStrExt;
    match connect_nonblocking(path.as_os_str().as_bytes()) {
        Ok(_) => Ok(Probe::Live),
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINPROGRESS) => Ok(Probe::Live),
            Some(libc::ECONNREFUSED) => Ok(Probe::Stale),
            Some(libc::ENOENT) => Ok(Probe::Gone),
            _ => Err(e),
        },
    }
}

/// A non-blocking, close-on-exec `connect` to a Unix socket address: a
/// filesystem path, or (Linux) an abstract name given with its leading NUL.
/// A full accept backlog fails with `WouldBlock` at once instead of waiting,
/// which std's blocking `connect` would do.
pub(crate) fn connect_nonblocking(addr_bytes: &[u8]) -> io::Result<std::os::unix::net::UnixStream> {
    // SAFETY: an all-zero sockaddr_un is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let is_abstract = addr_bytes.first() == Some(&0);
    if addr_bytes.is_empty()
        || addr_bytes.len() >= addr.sun_path.len()
        || (!is_abstract && addr_bytes.contains(&0))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket address empty, too long or containing NUL",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(addr_bytes) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // Abstract names are length-delimited; paths carry their NUL.
    let tail = usize::from(!is_abstract);
    let len = (std::mem::offset_of!(libc::sockaddr_un, sun_path) + addr_bytes.len() + tail)
        as libc::socklen_t;
    let fd = new_stream_socket()?;
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed it;
    // `fd` is a socket we own.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::os::unix::net::UnixStream::from(fd))
}

/// A new non-blocking, close-on-exec Unix stream socket.
fn new_stream_socket() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = 0;
    // SAFETY: plain socket(2) call; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // SAFETY: fcntl on a descriptor we own; results are checked.
        let ok = unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == 0
                && libc::fcntl(
                    fd,
                    libc::F_SETFL,
                    libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
                ) == 0
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(owned)
}

/// Asks the kernel to let up to `bytes` of written data wait in the
/// socket's send buffer (`SO_SNDBUF`; the kernel caps it at its own maximum,
/// `net.core.wmem_max` on Linux). A Unix stream socket's send buffer bounds
/// how much one connection can have in flight, so a multiplexed connection
/// carrying large frames for many callers needs more than the default.
pub(crate) fn set_send_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is a valid open descriptor for the borrow's lifetime, and
    // `value` is a live c_int whose size is passed as `len`.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Shuts down the write side of a connected socket (`shutdown(SHUT_WR)`):
/// the peer reads end-of-stream once it has read everything sent before.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is a valid open descriptor for the borrow's lifetime;
    // shutdown takes no pointers.
    let rc = unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `O_NOFOLLOW` open flag.
pub(crate) fn o_nofollow() -> i32 {
    libc::O_NOFOLLOW
}

/// Whether an `accept` error means the process or system is out of a
/// resource (descriptors, memory) that may come back: back off and retry.
pub(crate) fn is_resource_exhaustion(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Whether an `accept` error concerns only the one connection being
/// accepted (it went away before we took it): skip it and go on.
pub(crate) fn is_per_connection_accept_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_path_len_matches_platform() {
        #[cfg(target_os = "linux")]
        assert_eq!(max_path_len(), 107);
        #[cfg(target_os = "macos")]
        assert_eq!(max_path_len(), 103);
    }

    #[test]
    fn current_cred_is_this_process() {
        let c = current_cred().unwrap();
        assert_eq!(u32::try_from(c.pid).unwrap(), std::process::id());
        assert_eq!(c.uid, effective_uid());
    }
}
