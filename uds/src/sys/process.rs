//! Child processes and descriptor passing, for plugins: letting one
//! descriptor through `exec`, the parent-death signal, taking an inherited
//! descriptor, and sending or receiving a descriptor over a Unix socket
//! (`SCM_RIGHTS`).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Arranges for `fd` (close-on-exec in this process, as every descriptor
/// the crate makes) to stay open across `exec` in the child `cmd` starts:
/// the flag is cleared in the child only, after `fork`. With
/// `parent_death_kill` (Linux), the child also asks the kernel to `SIGKILL`
/// it when the thread that spawned it exits, and exits at once if the parent
/// is already gone.
pub(crate) fn inherit_fd_in_child(
    cmd: &mut std::process::Command,
    fd: RawFd,
    parent_death_kill: bool,
) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    let hook = move || -> io::Result<()> {
        // SAFETY: `fd` stays open in the parent until the child has been
        // spawned (the caller holds it), so after fork it is a live
        // descriptor of the child too; borrowing it for one call is sound.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        if parent_death_kill {
            set_parent_death_kill(parent)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes only fcntl(2), prctl(2)
    // and getppid(2) calls (through nix's allocation-free wrappers) and
    // touches no lock or allocator.
    unsafe {
        cmd.pre_exec(hook);
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_parent_death_kill(parent: nix::unistd::Pid) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    // The parent may have died before the request took effect.
    if nix::unistd::getppid() != parent {
        // No allocation here (between fork and exec): a plain errno, which
        // is all std passes back to the parent anyway.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

// Same signature as the Linux one; there is nothing to do here.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[allow(clippy::unnecessary_wraps)]
fn set_parent_death_kill(_parent: nix::unistd::Pid) -> io::Result<()> {
    Ok(())
}

/// Takes ownership of descriptor `n`, inherited from the parent process, after
/// checking that it is an open socket whose peer is process `peer_pid` (the
/// creator of the socketpair), and marks it close-on-exec so that the
/// plugin's own children do not inherit it.
///
/// The peer check is what makes taking ownership sound: a descriptor this
/// process opened itself has another peer (or is not a socket), so it is
/// never taken for the inherited one. The plugin layer takes it once.
pub(crate) fn take_inherited_socket(n: RawFd, peer_pid: i32) -> io::Result<OwnedFd> {
    if n < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "negative descriptor",
        ));
    }
    // First whether `n` is open at all: a BorrowedFd may only be made of an
    // open descriptor.
    // SAFETY: fcntl(F_GETFD) takes no pointers and is defined for any
    // integer: it fails with EBADF if `n` is not an open descriptor.
    if unsafe { libc::fcntl(n, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is open (just checked), and nothing in this process closes
    // it while this function borrows it: the plugin layer takes it once.
    let borrowed = unsafe { BorrowedFd::borrow_raw(n) };
    let st = super::fs::stat_fd(borrowed)?;
    if !st.is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the inherited descriptor is not a socket",
        ));
    }
    let peer = super::peer_cred(borrowed)?;
    if peer.pid != peer_pid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the descriptor's peer is pid {}, not the host (pid {peer_pid})",
                peer.pid
            ),
        ));
    }
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    // SAFETY: `n` is open (checked above) and is the socket the host passed
    // (its peer is the host), which nothing else in this process owns: the
    // plugin layer takes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Sends `payload` with the descriptor `fd` attached (`SCM_RIGHTS`) over
/// the connected Unix socket `sock`. Blocking or not as `sock` is.
pub(crate) fn send_fd(sock: BorrowedFd<'_>, payload: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(payload)];
    // A host already gone must be an error here, not a SIGPIPE.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = MsgFlags::MSG_NOSIGNAL;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = MsgFlags::empty();
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, flags, None)?;
    if sent != payload.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short descriptor message",
        ));
    }
    Ok(())
}

/// Receives one message into `buf` and the descriptor attached to it, if
/// any, over the Unix socket `sock`; descriptors beyond the first are
/// closed. The received descriptor is close-on-exec. `Ok((0, None))` is end
/// of stream; a socket with nothing to read fails with `WouldBlock` if it
/// is non-blocking.
pub(crate) fn recv_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<OwnedFd>)> {
    // Room for as many descriptors as one message can carry (Linux's
    // SCM_MAX_FD is 253), so the kernel never truncates the control data
    // after installing descriptors we would then not see, and leak.
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let mut iov = [IoSliceMut::new(buf)];
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = MsgFlags::MSG_CMSG_CLOEXEC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = MsgFlags::empty();
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags)?;
    let len = msg.bytes;
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed `raw` in our descriptor
                // table for this message; nothing else refers to it.
                received.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    let first = received.into_iter().next();
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    if let Some(fd) = &first {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    Ok((len, first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_crosses_a_socketpair() {
        use std::io::{Read, Write};
        let (sender, receiver) = std::os::unix::net::UnixStream::pair().unwrap();
        let (passed, kept) = std::os::unix::net::UnixStream::pair().unwrap();
        send_fd(sender.as_fd(), b"hello", passed.as_fd()).unwrap();
        drop(passed);
        let mut buf = [0u8; 16];
        let (len, fd) = recv_fd(receiver.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..len], b"hello");
        // The received descriptor is `passed` again: writing to it reaches `kept`.
        let got = std::os::unix::net::UnixStream::from(fd.unwrap());
        (&got).write_all(b"!").unwrap();
        let mut one = [0u8; 1];
        (&kept).read_exact(&mut one).unwrap();
        assert_eq!(&one, b"!");
        drop(sender);
        assert_eq!(
            recv_fd(receiver.as_fd(), &mut buf).unwrap().0,
            0,
            "end of stream"
        );
    }

    #[test]
    fn only_an_open_socket_is_taken() {
        let me = nix::unistd::getpid().as_raw();
        assert!(take_inherited_socket(-1, me).is_err());
        assert!(take_inherited_socket(1_000_000, me).is_err());
        let file = tempfile::tempfile().unwrap();
        assert!(take_inherited_socket(file.as_raw_fd(), me).is_err());
        // A socket whose peer is not the expected process is left alone.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = take_inherited_socket(a.as_raw_fd(), me + 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }
}
