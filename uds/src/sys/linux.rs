//! Linux (and Android): peer credentials from `SO_PEERCRED` and
//! `SO_PEERGROUPS`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt};

use super::RawCred;

/// The supplementary groups of this process.
pub(super) fn current_groups() -> io::Result<Vec<u32>> {
    Ok(nix::unistd::getgroups()?
        .into_iter()
        .map(nix::unistd::Gid::as_raw)
        .collect())
}

/// Reads the peer credentials of a connected Unix socket from the kernel.
///
/// For an accepted socket these are the client's credentials at `connect`;
/// for a connected client socket, the server's at `listen`; for a
/// `socketpair`, the creator's.
pub(crate) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<RawCred> {
    let cred = getsockopt(&fd, sockopt::PeerCredentials)?;
    Ok(RawCred {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
        groups: peer_groups(fd)?,
    })
}

/// The peer's supplementary groups via `SO_PEERGROUPS` (Linux 4.13+);
/// `None` when the kernel does not support the option.
///
/// Hand-written: nix has no wrapper for `SO_PEERGROUPS`, whose value is a
/// variable-length array.
fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Option<Vec<u32>>> {
    // The kernel caps supplementary groups at NGROUPS_MAX (65536); start
    // small and grow on ERANGE, which reports the size it needs.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `groups` is writable for `len` bytes and outlives the call;
        // `len` is a live socklen_t; `fd` is a live descriptor for the borrow.
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
        match Errno::last() {
            Errno::ERANGE if groups.len() < 65_536 => {
                let want = (len as usize / size_of::<libc::gid_t>()).max(groups.len() * 2);
                groups.resize(want.min(65_536), 0);
            }
            Errno::ENOPROTOOPT => return Ok(None),
            errno => return Err(errno.into()),
        }
    }
}
