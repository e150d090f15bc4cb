//! Socket path validation and inspection, shared by the listener and the client.

use std::io;
use std::os::unix::ffi::OsStrExt;
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

/// What kind of file `lstat` found.
pub(crate) fn kind_of(meta: &std::fs::Metadata) -> FileKind {
    use std::os::unix::fs::MetadataExt;
    kind_of_mode(meta.mode())
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
    kind_of_mode(st.mode)
}

/// The kind of file an `st_mode` describes (the type bits are the same on
/// every Unix).
fn kind_of_mode(mode: u32) -> FileKind {
    match mode & 0o170_000 {
        0o140_000 => FileKind::Socket,
        0o100_000 => FileKind::File,
        0o040_000 => FileKind::Directory,
        0o120_000 => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// How an abstract socket name is shown in errors and logs: `@name`.
pub(crate) fn abstract_display(name: &[u8]) -> PathBuf {
    PathBuf::from(format!("@{}", String::from_utf8_lossy(name)))
}
