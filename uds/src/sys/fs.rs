//! File operations relative to directory descriptors (`openat`, `fstatat`,
//! `mkdirat`, `fchmodat`, `fchownat`, `linkat`, `unlinkat`).
//!
//! The socket file's lifecycle is built on these so that nothing re-resolves
//! a path another user could change in between: a directory is opened once,
//! checked with `fstat`, and every later step names a file *inside* that
//! descriptor, never following a symlink.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, fchmodat, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, unlinkat};

/// What `fstat`/`fstatat` tell about a file, in the crate's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Device of the file system holding the file.
    pub(crate) dev: u64,
    /// Inode number.
    pub(crate) ino: u64,
    /// `st_mode`: file type and permission bits.
    pub(crate) mode: u32,
    /// Owner uid.
    pub(crate) uid: u32,
    /// Number of hard links.
    pub(crate) nlink: u64,
}

impl Stat {
    #[allow(
        clippy::unnecessary_cast,
        clippy::useless_conversion,
        clippy::cast_sign_loss,
        clippy::cast_lossless
    )] // field widths and signs differ per OS (dev_t is i32 on macOS)
    fn from_nix(st: &FileStat) -> Self {
        Stat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: u32::from(st.st_mode),
            uid: st.st_uid,
            nlink: st.st_nlink as u64,
        }
    }

    fn kind(&self) -> SFlag {
        SFlag::from_bits_truncate(self.mode as libc::mode_t & SFlag::S_IFMT.bits())
    }

    /// Whether the file is a socket.
    pub(crate) fn is_socket(&self) -> bool {
        self.kind() == SFlag::S_IFSOCK
    }

    /// Whether the file is a directory.
    pub(crate) fn is_dir(&self) -> bool {
        self.kind() == SFlag::S_IFDIR
    }

    /// Whether the file is a regular file.
    pub(crate) fn is_file(&self) -> bool {
        self.kind() == SFlag::S_IFREG
    }

    /// Whether the file is a symbolic link.
    pub(crate) fn is_symlink(&self) -> bool {
        self.kind() == SFlag::S_IFLNK
    }

    /// The permission bits (including setuid, setgid and sticky).
    pub(crate) fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// Opens a directory the caller named (symlinks in `path` are followed:
/// the path is the caller's own choice). Close-on-exec.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `name` inside `dir`, refusing a symlink
/// (`O_DIRECTORY | O_NOFOLLOW`). Close-on-exec.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates the directory `name` inside `dir` with `mode` (less the umask).
pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    mkdirat(dir, name, mode_bits(mode))?;
    Ok(())
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the entry itself, never a
/// symlink's target. `None` when there is no such entry.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Stat::from_nix(&st))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `fstat` of an open descriptor.
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(Stat::from_nix(&fstat(fd)?))
}

/// Sets the permission bits of `name` inside `dir`, not following a symlink
/// where the platform can (`AT_SYMLINK_NOFOLLOW`).
///
/// Some Linux C libraries cannot change a mode without following
/// (`EOPNOTSUPP`); then the call follows. Callers only use this on an entry
/// of a private directory no other user can write, checked to be a socket
/// just before, so the entry cannot have become a symlink in between.
pub(crate) fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    match fchmodat(dir, name, mode_bits(mode), FchmodatFlags::NoFollowSymlink) {
        Ok(()) => Ok(()),
        // A symlink (whose mode Linux cannot change) or a C library without
        // support: refuse the first, follow only for what is not a link.
        Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => match stat_at(dir, name)? {
            Some(st) if !st.is_symlink() => {
                fchmodat(dir, name, mode_bits(mode), FchmodatFlags::FollowSymlink)?;
                Ok(())
            }
            Some(_) => Err(Errno::ELOOP.into()),
            None => Err(Errno::ENOENT.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Changes the owner and/or group of `name` inside `dir`, never following
/// a symlink (`AT_SYMLINK_NOFOLLOW`).
pub(crate) fn chown_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    owner: Option<u32>,
    group: Option<u32>,
) -> io::Result<()> {
    fchownat(
        dir,
        name,
        owner.map(Uid::from_raw),
        group.map(Gid::from_raw),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Hard-links `from` inside `from_dir` as `to` inside `to_dir`, without
/// following a symlink at `from`; fails with `AlreadyExists` if `to` exists
/// (nothing is replaced).
pub(crate) fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<()> {
    linkat(from_dir, from, to_dir, to, AtFlags::empty())?;
    Ok(())
}

/// Removes the non-directory entry `name` inside `dir` (a symlink is removed
/// itself, never its target).
pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    Ok(())
}

/// Removes the empty directory `name` inside `dir` (a symlink there fails
/// with `NotADirectory`).
pub(crate) fn rmdir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(())
}

/// Opens (creating it with mode 0600 if absent) the lock file `name` inside
/// `dir` for reading and writing, refusing a symlink (`O_NOFOLLOW`) and
/// never truncating. Close-on-exec.
pub(crate) fn open_lock_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok(std::fs::File::from(fd))
}

/// A path that names `name` inside the open directory `dir` without
/// resolving the directory's own path again: `/proc/self/fd/N/name` on
/// Linux, when `/proc` is mounted. `None` elsewhere.
pub(crate) fn path_in_dir_fd(dir: BorrowedFd<'_>, name: &OsStr) -> Option<PathBuf> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let fd_dir = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        // The fd's entry must resolve to this very directory.
        let here = stat_fd(dir).ok()?;
        let there = std::fs::metadata(&fd_dir).ok()?;
        {
            use std::os::unix::fs::MetadataExt;
            if (there.dev(), there.ino()) != (here.dev, here.ino) {
                return None;
            }
        }
        Some(fd_dir.join(name))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (dir.as_raw_fd(), name);
        None
    }
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // mode_t is u16 on macOS
fn mode_bits(mode: u32) -> Mode {
    Mode::from_bits_truncate((mode & 0o7777) as libc::mode_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn at_calls_work_inside_a_directory_descriptor() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(tmp.path()).unwrap();
        mkdir_at(dir.as_fd(), OsStr::new("d"), 0o700).unwrap();
        let d = open_dir_at(dir.as_fd(), OsStr::new("d")).unwrap();
        let st = stat_fd(d.as_fd()).unwrap();
        assert!(st.is_dir());
        assert_eq!(st.perm() & 0o077, 0);
        let lock = open_lock_at(d.as_fd(), OsStr::new("l")).unwrap();
        let st = stat_fd(lock.as_fd()).unwrap();
        assert!(st.is_file());
        assert_eq!(st.perm(), 0o600);
        chmod_at(d.as_fd(), OsStr::new("l"), 0o640).unwrap();
        assert_eq!(
            stat_at(d.as_fd(), OsStr::new("l")).unwrap().unwrap().perm(),
            0o640
        );
        link_at(d.as_fd(), OsStr::new("l"), dir.as_fd(), OsStr::new("l2")).unwrap();
        let err = link_at(d.as_fd(), OsStr::new("l"), dir.as_fd(), OsStr::new("l2")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        unlink_at(dir.as_fd(), OsStr::new("l2")).unwrap();
        unlink_at(d.as_fd(), OsStr::new("l")).unwrap();
        assert_eq!(stat_at(d.as_fd(), OsStr::new("l")).unwrap(), None);
        rmdir_at(dir.as_fd(), OsStr::new("d")).unwrap();
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
    }

    #[test]
    fn symlinks_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("f"), b"x").unwrap();
        std::fs::set_permissions(target.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join("link")).unwrap();
        std::os::unix::fs::symlink(target.join("f"), tmp.path().join("flink")).unwrap();
        let dir = open_dir(tmp.path()).unwrap();
        assert!(open_dir_at(dir.as_fd(), OsStr::new("link")).is_err());
        assert!(open_lock_at(dir.as_fd(), OsStr::new("flink")).is_err());
        assert!(
            stat_at(dir.as_fd(), OsStr::new("flink"))
                .unwrap()
                .unwrap()
                .is_symlink()
        );
        assert!(rmdir_at(dir.as_fd(), OsStr::new("link")).is_err());
        unlink_at(dir.as_fd(), OsStr::new("flink")).unwrap();
        assert!(
            target.join("f").exists(),
            "unlink removes the link, not its target"
        );
        // chmod on a symlink never reaches the target.
        std::os::unix::fs::symlink(target.join("f"), tmp.path().join("flink")).unwrap();
        assert!(chmod_at(dir.as_fd(), OsStr::new("flink"), 0o666).is_err());
        let mode = std::fs::metadata(target.join("f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the link's target keeps its mode");
        // chown on a symlink changes the link, never the target.
        let me = nix::unistd::geteuid().as_raw();
        chown_at(dir.as_fd(), OsStr::new("flink"), Some(me), None).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn proc_path_names_the_open_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(tmp.path()).unwrap();
        let Some(p) = path_in_dir_fd(dir.as_fd(), OsStr::new("x")) else {
            eprintln!("SKIPPED proc_path_names_the_open_directory: /proc not mounted");
            return;
        };
        std::fs::write(&p, b"y").unwrap();
        assert_eq!(std::fs::read(tmp.path().join("x")).unwrap(), b"y");
    }
}
