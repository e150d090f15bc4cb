//! The socket file's lifecycle: lock, stale-socket removal, private staging
//! directory, bind, mode and owner, publish, cleanup.
//!
//! Every step works through directory descriptors. The socket's parent
//! directory is opened once (the caller chose its path); inside it, the lock
//! file is opened with `O_NOFOLLOW`, the staging directory is created with
//! `mkdirat` and opened with `O_DIRECTORY | O_NOFOLLOW`, and checked with
//! `fstat` (a directory, ours, mode 0700 or stricter). The socket is bound
//! inside that descriptor (on Linux through `/proc/self/fd/N/s`), given its
//! mode and owner with `fchmodat`/`fchownat` on the descriptor, hard-linked
//! into the parent's descriptor with `linkat`, and removed with `unlinkat`.
//! Nothing re-resolves a path that another user could have changed: a user
//! who can write the parent directory can make a bind fail, never make it
//! chmod, chown, link or delete a file of someone else's.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{FileKind, NetError};
use super::path::{self as paths, FileId};
use crate::sys;
use crate::sys::fs as at;

/// The name of the socket inside the staging directory.
const STAGED: &str = "s";

/// A published socket file: removed (if it is still ours) when dropped,
/// then its lock is released.
#[derive(Debug)]
pub(crate) struct SocketFile {
    parent: OwnedFd,
    name: OsString,
    id: FileId,
    path: PathBuf,
    lock: Option<PathLock>,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Remove only our own socket: if someone replaced the entry, it is
        // theirs. Holding the path's lock, no other uds listener can be
        // publishing there meanwhile; `unlinkat` never follows a link.
        match at::stat_at(self.parent.as_fd(), &self.name) {
            Ok(Some(st)) if FileId::of_stat(&st) == self.id => {
                if let Err(err) = at::unlink_at(self.parent.as_fd(), &self.name) {
                    tracing::warn!(path = %self.path.display(), %err, "could not remove socket file");
                }
            }
            Ok(Some(_)) => {
                tracing::warn!(path = %self.path.display(), "socket file was replaced; leaving it");
            }
            Ok(None) | Err(_) => {}
        }
        if let Some(lock) = self.lock.take() {
            lock.release(&self.parent);
        }
    }
}

/// Binds a listening socket at `path` with the given mode and owner, never
/// reachable there with looser permissions, and returns it with the handle
/// that removes the file again.
pub(crate) fn bind(
    path: &Path,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<(StdListener, SocketFile), NetError> {
    paths::check_len(path)?;
    let (parent_path, name) = split(path)?;
    let parent =
        at::open_dir(parent_path).map_err(|e| NetError::io("open directory", parent_path, e))?;
    let lock = PathLock::acquire(&parent, &name, path)?;
    match bind_locked(&parent, parent_path, &name, path, mode, owner, group) {
        Ok((listener, id)) => Ok((
            listener,
            SocketFile {
                parent,
                name,
                id,
                path: path.to_path_buf(),
                lock: Some(lock),
            },
        )),
        Err(e) => {
            // A refused bind leaves no lock file behind.
            lock.release(&parent);
            Err(e)
        }
    }
}

/// The directory and the file name of a socket path.
fn split(path: &Path) -> Result<(&Path, OsString), NetError> {
    let name = path
        .file_name()
        .ok_or_else(|| NetError::InvalidPath { path: path.into() })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name.to_owned()))
}

/// The part of [`bind`] done while holding the path's lock.
fn bind_locked(
    parent: &OwnedFd,
    parent_path: &Path,
    name: &OsStr,
    path: &Path,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<(StdListener, FileId), NetError> {
    clear_stale(parent, name, path)?;
    let stage = Staging::create(parent, parent_path, path)?;
    let listener = stage.bind(path)?;
    let staged = OsStr::new(STAGED);
    stage.check_socket(path)?;
    at::chmod_at(stage.fd.as_fd(), staged, mode & 0o7777)
        .map_err(|e| NetError::io("chmod", stage.display(), e))?;
    if owner.is_some() || group.is_some() {
        at::chown_at(stage.fd.as_fd(), staged, owner, group)
            .map_err(|e| NetError::io("chown", stage.display(), e))?;
    }
    let id = stage.check_socket(path)?;
    publish(&stage, parent, name, path)?;
    Ok((listener, id))
}

/// Makes the staged socket visible at `path` without replacing anything that
/// appeared there meanwhile: a hard link fails if the name exists. (No
/// fallback to `rename`, which would replace it.)
fn publish(
    stage: &Staging<'_>,
    parent: &OwnedFd,
    name: &OsStr,
    path: &Path,
) -> Result<(), NetError> {
    for attempt in 0..2 {
        match at::link_at(stage.fd.as_fd(), OsStr::new(STAGED), parent.as_fd(), name) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt == 0 => {
                // Something (not a uds listener: we hold the lock) appeared.
                clear_stale(parent, name, path)?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(NetError::AddressInUse { path: path.into() });
            }
            Err(e) => return Err(NetError::io("link socket into place at", path, e)),
        }
    }
    Err(NetError::AddressInUse { path: path.into() })
}

/// Makes `name` in `parent` free for a new socket: absent is fine; a socket
/// nobody answers on is removed; anything else is an error and stays
/// untouched.
fn clear_stale(parent: &OwnedFd, name: &OsStr, path: &Path) -> Result<(), NetError> {
    let stat = |what| at::stat_at(parent.as_fd(), name).map_err(|e| NetError::io(what, path, e));
    let Some(found) = stat("lstat")? else {
        return Ok(());
    };
    let kind = paths::kind_of_stat(&found);
    if kind != FileKind::Socket {
        return Err(NetError::NotASocket {
            path: path.into(),
            found: kind,
        });
    }
    // Probe through the parent's descriptor where the platform allows and
    // the address fits; else by the path.
    let probe_path = at::path_in_dir_fd(parent.as_fd(), name)
        .filter(|p| paths::check_len(p).is_ok())
        .unwrap_or_else(|| path.into());
    match sys::probe_socket(&probe_path).map_err(|e| NetError::io("probe", path, e))? {
        sys::Probe::Live => Err(NetError::AddressInUse { path: path.into() }),
        sys::Probe::Gone => Ok(()),
        sys::Probe::Stale => match stat("lstat")? {
            // Only remove the very socket we probed: if the name now holds
            // another file, leave it.
            Some(now) if FileId::of_stat(&now) == FileId::of_stat(&found) => {
                tracing::info!(path = %path.display(), "removing stale socket file");
                match at::unlink_at(parent.as_fd(), name) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(NetError::io("remove stale socket", path, e)),
                }
            }
            // Replaced between the probe and now: someone else owns it.
            Some(now) => match paths::kind_of_stat(&now) {
                FileKind::Socket => Err(NetError::AddressInUse { path: path.into() }),
                found => Err(NetError::NotASocket {
                    path: path.into(),
                    found,
                }),
            },
            None => Ok(()),
        },
    }
}

/// A private (0700) directory next to the socket path, opened once and
/// checked; removed, with what is inside, on drop.
struct Staging<'p> {
    parent: &'p OwnedFd,
    parent_path: &'p Path,
    name: OsString,
    fd: OwnedFd,
    id: FileId,
}

impl<'p> Staging<'p> {
    fn create(parent: &'p OwnedFd, parent_path: &'p Path, path: &Path) -> Result<Self, NetError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let me = sys::effective_uid();
        for _ in 0..16 {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let name = OsString::from(format!(
                ".uds{:x}",
                (u64::from(std::process::id()) << 32) ^ u64::from(nanos) ^ (n << 20)
            ));
            match at::mkdir_at(parent.as_fd(), &name, 0o700) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(NetError::io("create private directory in", parent_path, e)),
            }
            // Between mkdirat and this open another user may have renamed our
            // directory away and put something in its place: O_NOFOLLOW
            // refuses a symlink, and fstat refuses a directory not ours.
            let fd = match at::open_dir_at(parent.as_fd(), &name) {
                Ok(fd) => fd,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    return Err(NetError::Tampered {
                        path: path.into(),
                        what: "the private staging directory was replaced by a non-directory",
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(NetError::Tampered {
                        path: path.into(),
                        what: "the private staging directory was moved away",
                    });
                }
                Err(e) => {
                    // Out of descriptors, say: remove what we made, if it
                    // is still ours, and report the real cause.
                    remove_own_dir(parent, &name, me);
                    return Err(NetError::io("open private directory in", parent_path, e));
                }
            };
            let st = match at::stat_fd(fd.as_fd()) {
                Ok(st) => st,
                Err(e) => {
                    remove_own_dir(parent, &name, me);
                    return Err(NetError::io("stat private directory in", parent_path, e));
                }
            };
            if !st.is_dir() || st.uid != me || st.perm() & 0o077 != 0 {
                return Err(NetError::Tampered {
                    path: path.into(),
                    what: "the private staging directory was replaced by one not ours",
                });
            }
            return Ok(Staging {
                parent,
                parent_path,
                name,
                fd,
                id: FileId::of_stat(&st),
            });
        }
        Err(NetError::io(
            "create private directory in",
            parent_path,
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    /// The staged socket's path, for messages.
    fn display(&self) -> PathBuf {
        self.parent_path.join(&self.name).join(STAGED)
    }

    /// Binds the socket inside the staging directory.
    ///
    /// On Linux the address is `/proc/self/fd/N/s`, which names the
    /// directory through our descriptor, so the bind lands in it even if
    /// its name was swapped. Elsewhere (or with no `/proc`) the address is
    /// the path; [`Staging::check_socket`] then proves the socket is in our
    /// directory before anything is done to it.
    fn bind(&self, path: &Path) -> Result<StdListener, NetError> {
        let staged = OsStr::new(STAGED);
        if let Some(short) = at::path_in_dir_fd(self.fd.as_fd(), staged) {
            return StdListener::bind(&short).map_err(|e| NetError::io("bind", self.display(), e));
        }
        let full = self.display();
        if paths::check_len(&full).is_err() {
            // The staging directory costs a few bytes of the limit here.
            let extra = full
                .as_os_str()
                .len()
                .saturating_sub(path.as_os_str().len());
            return Err(NetError::PathTooLong {
                path: path.into(),
                len: path.as_os_str().len(),
                max: paths::max_path_len().saturating_sub(extra),
            });
        }
        StdListener::bind(&full).map_err(|e| NetError::io("bind", &full, e))
    }

    /// Checks that the staged entry is a socket in our directory and returns
    /// its identity.
    fn check_socket(&self, path: &Path) -> Result<FileId, NetError> {
        match at::stat_at(self.fd.as_fd(), OsStr::new(STAGED)) {
            Ok(Some(st)) if st.is_socket() => Ok(FileId::of_stat(&st)),
            Ok(_) => Err(NetError::Tampered {
                path: path.into(),
                what: "the socket was not created in the private staging directory",
            }),
            Err(e) => Err(NetError::io("stat", self.display(), e)),
        }
    }
}

/// Removes the directory `name` of `parent` if it is an (empty) directory
/// of `uid`: what `mkdirat` made when the rest of the set-up failed.
fn remove_own_dir(parent: &OwnedFd, name: &OsStr, uid: u32) {
    if let Ok(Some(st)) = at::stat_at(parent.as_fd(), name)
        && st.is_dir()
        && st.uid == uid
    {
        let _ = at::rmdir_at(parent.as_fd(), name);
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        let _ = at::unlink_at(self.fd.as_fd(), OsStr::new(STAGED));
        // Remove the directory by name only if the name still holds it.
        if let Ok(Some(st)) = at::stat_at(self.parent.as_fd(), &self.name)
            && FileId::of_stat(&st) == self.id
        {
            let _ = at::rmdir_at(self.parent.as_fd(), &self.name);
        }
    }
}

/// An exclusive lock on `<socket name>.lock` in the socket's directory,
/// held for a listener's life.
///
/// Without it, two servers starting at once on a stale socket could both
/// judge it stale, and one could delete the other's fresh socket. With it,
/// only the lock holder touches the path. The lock file is opened without
/// following links and must be a regular file with one link; it is removed
/// on close; a taker checks that the file it locked is still the one at the
/// name.
#[derive(Debug)]
struct PathLock {
    name: OsString,
    file: std::fs::File,
    id: FileId,
}

impl PathLock {
    fn acquire(parent: &OwnedFd, socket_name: &OsStr, socket: &Path) -> Result<Self, NetError> {
        let mut name = socket_name.to_owned();
        name.push(".lock");
        let mut display = socket.as_os_str().to_owned();
        display.push(".lock");
        let display = PathBuf::from(display);
        for _ in 0..8 {
            let file = at::open_lock_at(parent.as_fd(), &name)
                .map_err(|e| NetError::io("open lock file", &display, e))?;
            let ours = at::stat_fd(file.as_fd())
                .map_err(|e| NetError::io("stat lock file", &display, e))?;
            if !ours.is_file() || ours.nlink != 1 {
                return Err(NetError::Tampered {
                    path: socket.into(),
                    what: "the lock file is not a plain file of its own",
                });
            }
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(NetError::AddressInUse {
                        path: socket.into(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(NetError::io("lock", &display, e));
                }
            }
            // The previous holder may have removed the file between our open
            // and our lock: then we locked a dead inode; try again.
            let now = at::stat_at(parent.as_fd(), &name)
                .map_err(|e| NetError::io("stat lock file", &display, e))?;
            if now.is_some_and(|now| FileId::of_stat(&now) == FileId::of_stat(&ours)) {
                return Ok(PathLock {
                    name,
                    file,
                    id: FileId::of_stat(&ours),
                });
            }
        }
        Err(NetError::AddressInUse {
            path: socket.into(),
        })
    }

    /// Removes the lock file from `parent` (the directory it was taken in)
    /// while still holding the lock, if the name is still our file; then
    /// unlocks.
    fn release(self, parent: &OwnedFd) {
        if let Ok(Some(st)) = at::stat_at(parent.as_fd(), &self.name)
            && FileId::of_stat(&st) == self.id
        {
            let _ = at::unlink_at(parent.as_fd(), &self.name);
        }
        drop(self.file);
    }
}
