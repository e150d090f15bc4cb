//! Every direct OS call of the crate, and the only module allowed `unsafe`.
//!
//! The rest of the crate goes through std and tokio; what they do not offer
//! (peer credentials, a non-blocking probe connect, directory-descriptor
//! relative file operations, socket options, resource-exhaustion
//! classification) lives here behind small safe functions, built on `nix`.
//!
//! `unsafe` remains only where `nix` has no safe wrapper, each block with a
//! `SAFETY:` note: `SO_PEERGROUPS` on Linux (`linux.rs`), `getgroups` on
//! Apple platforms (`apple.rs`), where nix leaves it out, and in
//! `process.rs` the `pre_exec` hook and taking ownership of descriptors
//! (inherited, or received with `SCM_RIGHTS`); and `segments.rs`, a
//! `BufMut` (an `unsafe` trait) that lets protobuf encoding keep a large
//! `Bytes` field by reference.
//!
//! Layout (tokio's `ucred.rs` shape): `linux.rs` and `apple.rs` hold the
//! per-OS peer-credential code, `fs.rs` the `*at` file operations the socket
//! file's lifecycle is built on, `process.rs` what plugin processes need
//! (descriptor inheritance and passing, parent-death signal, kill), and this
//! file what is common.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};

pub(crate) mod fs;
pub(crate) mod process;
#[cfg(feature = "proto")]
pub(crate) mod segments;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux;
#[cfg(any(target_os = "linux", target_os = "android"))]
use linux as os;

#[cfg(any(target_os = "macos", target_os = "ios"))]
mod apple;
#[cfg(any(target_os = "macos", target_os = "ios"))]
use apple as os;

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios"
)))]
mod other;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios"
)))]
use other as os;

pub(crate) use os::peer_cred;

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
    nix::unistd::geteuid().as_raw()
}

/// The credentials of this process: pid, effective uid and gid, and its
/// supplementary groups.
pub(crate) fn current_cred() -> io::Result<RawCred> {
    Ok(RawCred {
        pid: nix::unistd::getpid().as_raw(),
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        groups: Some(os::current_groups()?),
    })
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
    let is_abstract = addr_bytes.first() == Some(&0);
    if addr_bytes.is_empty()
        || addr_bytes.len() > max_path_len()
        || (!is_abstract && addr_bytes.contains(&0))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket address empty, too long or containing NUL",
        ));
    }
    let addr = unix_addr(addr_bytes, is_abstract)?;
    let fd = new_stream_socket()?;
    socket::connect(fd.as_raw_fd(), &addr)?;
    Ok(std::os::unix::net::UnixStream::from(fd))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn unix_addr(addr_bytes: &[u8], is_abstract: bool) -> io::Result<UnixAddr> {
    use std::os::unix::ffi::OsStrExt;
    if is_abstract {
        Ok(UnixAddr::new_abstract(&addr_bytes[1..])?)
    } else {
        Ok(UnixAddr::new(std::ffi::OsStr::from_bytes(addr_bytes))?)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn unix_addr(addr_bytes: &[u8], is_abstract: bool) -> io::Result<UnixAddr> {
    use std::os::unix::ffi::OsStrExt;
    if is_abstract {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "abstract socket names exist only on Linux",
        ));
    }
    Ok(UnixAddr::new(std::ffi::OsStr::from_bytes(addr_bytes))?)
}

/// A new non-blocking, close-on-exec Unix stream socket.
fn new_stream_socket() -> io::Result<OwnedFd> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        Ok(socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )?;
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(fd)
    }
}

/// Asks the kernel to let up to `bytes` of written data wait in the
/// socket's send buffer (`SO_SNDBUF`; the kernel caps it at its own maximum,
/// `net.core.wmem_max` on Linux). A Unix stream socket's send buffer bounds
/// how much one connection can have in flight, so a multiplexed connection
/// carrying large frames for many callers needs more than the default.
pub(crate) fn set_send_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    socket::setsockopt(&fd, sockopt::SndBuf, &bytes)?;
    Ok(())
}

/// Shuts down the write side of a connected socket (`shutdown(SHUT_WR)`):
/// the peer reads end-of-stream once it has read everything sent before.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket::shutdown(fd.as_raw_fd(), socket::Shutdown::Write)?;
    Ok(())
}

/// Whether an `accept` error means the process or system is out of a
/// resource (descriptors, memory) that may come back: back off and retry.
pub(crate) fn is_resource_exhaustion(err: &io::Error) -> bool {
    let errno = err.raw_os_error().map(Errno::from_raw);
    matches!(
        errno,
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

/// Whether an `accept` error concerns only the one connection being
/// accepted (it went away before we took it): skip it and go on.
pub(crate) fn is_per_connection_accept_error(err: &io::Error) -> bool {
    let errno = err.raw_os_error().map(Errno::from_raw);
    matches!(
        errno,
        Some(Errno::ECONNABORTED | Errno::EPROTO | Errno::EPERM | Errno::EINTR)
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

    #[test]
    fn send_buffer_and_shutdown_work_on_a_pair() {
        use std::io::Read;
        use std::os::fd::AsFd;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        set_send_buffer(a.as_fd(), 256 * 1024).unwrap();
        shutdown_write(a.as_fd()).unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            b.read_to_end(&mut buf).unwrap(),
            0,
            "peer sees end of stream"
        );
    }

    #[test]
    fn probe_tells_stale_from_gone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        assert_eq!(probe_socket(&p).unwrap(), Probe::Gone);
        drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
        assert_eq!(probe_socket(&p).unwrap(), Probe::Stale);
        let _live = std::os::unix::net::UnixListener::bind(dir.path().join("t")).unwrap();
        assert_eq!(probe_socket(&dir.path().join("t")).unwrap(), Probe::Live);
    }
}
