//! Socket path validation and inspection, shared by the listener and the client.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::error::{FileKind, NetError};
use crate::sys;

/// The longest filesystem socket path this platform accepts, in bytes.
pub fn max_path_len() -> usize {
    sys::max_path_len()
}

/// The longest Linux abstract socket name, in bytes (the leading NUL is not
/// counted).
pub fn max_abstract_name_len() -> usize {
    sys::max_path_len()
}

/// Checks a path's length in bytes against the platform limit.
pub(crate) fn check_len(path: &Path) -> Result<(), NetError> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(NetError::InvalidPath { path: path.into() });
    }
    let max = sys::max_path_len();
    if bytes.len() > max {
        return Err(NetError::PathTooLong {
            path: path.into(),
            len: bytes.len(),
            max,
        });
    }
    Ok(())
}

pub(crate) fn kind_of(meta: &std::fs::Metadata) -> FileKind {
    let t = meta.file_type();
    if t.is_socket() {
        FileKind::Socket
    } else if t.is_file() {
        FileKind::File
    } else if t.is_dir() {
        FileKind::Directory
    } else if t.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    }
}

/// `lstat` of the path: the link itself, never its target.
pub(crate) fn lstat(path: &Path) -> Result<Option<std::fs::Metadata>, NetError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetError::io("lstat", path, e)),
    }
}

/// The identity of a file: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Makes `path` free for a new socket: absent is fine; a socket nobody
/// answers on is removed; anything else is an error and stays untouched.
pub(crate) fn clear_stale(path: &Path) -> Result<(), NetError> {
    let Some(meta) = lstat(path)? else {
        return Ok(());
    };
    let kind = kind_of(&meta);
    if kind != FileKind::Socket {
        return Err(NetError::NotASocket {
            path: path.into(),
            found: kind,
        });
    }
    match sys::probe_socket(path).map_err(|e| NetError::io("probe", path, e))? {
        sys::Probe::Live => Err(NetError::AddressInUse { path: path.into() }),
        sys::Probe::Gone => Ok(()),
        sys::Probe::Stale => {
            // Only remove the very socket we probed: if the path now names
            // another file, leave it.
            match lstat(path)? {
                Some(now) if FileId::of(&now) == FileId::of(&meta) => {
                    tracing::info!(path = %path.display(), "removing stale socket file");
                    match std::fs::remove_file(path) {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                        Err(e) => Err(NetError::io("remove stale socket", path, e)),
                    }
                }
                // Replaced between the probe and now: someone else owns it.
                Some(now) => match kind_of(&now) {
                    FileKind::Socket => Err(NetError::AddressInUse { path: path.into() }),
                    found => Err(NetError::NotASocket {
                        path: path.into(),
                        found,
                    }),
                },
                None => Ok(()),
            }
        }
    }
}
