//! macOS and iOS: peer credentials from `LOCAL_PEERCRED` and
//! `LOCAL_PEERPID`.

use std::io;
use std::os::fd::BorrowedFd;

use nix::sys::socket::{getsockopt, sockopt};

use super::RawCred;

/// The supplementary groups of this process.
///
/// Hand-written: nix leaves `getgroups` out on Apple platforms.
pub(super) fn current_groups() -> io::Result<Vec<u32>> {
    // SAFETY: with a size of 0, getgroups writes nothing and returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let count = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let mut groups: Vec<libc::gid_t> = vec![0; count];
    // SAFETY: the buffer holds `n` gids, and we pass `n` as its capacity.
    let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    groups.truncate(got);
    Ok(groups)
}

/// Reads the peer credentials of a connected Unix socket from the kernel.
pub(crate) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<RawCred> {
    let cred = getsockopt(&fd, sockopt::LocalPeerCred)?;
    if cred.version() != libc::XUCRED_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "LOCAL_PEERCRED returned an unknown xucred version",
        ));
    }
    let pid = getsockopt(&fd, sockopt::LocalPeerPid)?;
    // groups()[0] is the effective gid; the rest are supplementary.
    let groups = cred.groups();
    Ok(RawCred {
        pid,
        uid: cred.uid(),
        gid: groups.first().copied().unwrap_or(0),
        groups: Some(groups.to_vec()),
    })
}
