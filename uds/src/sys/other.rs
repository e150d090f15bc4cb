//! Platforms without a peer-credential call we support.

use std::io;
use std::os::fd::BorrowedFd;

use super::RawCred;

/// Supplementary groups are not read on this platform.
pub(super) fn current_groups() -> io::Result<Vec<u32>> {
    Ok(Vec::new())
}

/// Peer credentials are not implemented for this platform: a typed error,
/// never a made-up uid.
pub(crate) fn peer_cred(_fd: BorrowedFd<'_>) -> io::Result<RawCred> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "peer credentials are not supported on this platform",
    ))
}
