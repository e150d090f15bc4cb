//! Socket path validation and inspection, shared by the listener and the client.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

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
    pub(crate) fn of_stat(st: &sys::fs::Stat) -> Self {
        FileId {
            dev: st.dev,
            ino: st.ino,
        }
    }
}

/// What kind of file an `fstatat` found.
pub(crate) fn kind_of_stat(st: &sys::fs::Stat) -> FileKind {
    if st.is_socket() {
        FileKind::Socket
    } else if st.is_file() {
        FileKind::File
    } else if st.is_dir() {
        FileKind::Directory
    } else if st.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    }
}

/// How an abstract socket name is shown in errors and logs: `@name`.
pub(crate) fn abstract_display(name: &[u8]) -> PathBuf {
    PathBuf::from(format!("@{}", String::from_utf8_lossy(name)))
}
