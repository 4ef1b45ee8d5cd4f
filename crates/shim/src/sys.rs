//! The few places that need `unsafe`: taking ownership of file descriptors
//! the kernel hands over (SCM_RIGHTS, an inherited listener) and the pty
//! window-size ioctl. Every block states why it is sound.
#![allow(unsafe_code)]

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::cmsg_space;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// Receives one file descriptor sent with SCM_RIGHTS (runc's console socket
/// protocol: the pty master, with the pty's name as payload).
pub fn recv_fd(stream: &UnixStream) -> std::io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed `fd` in our table for this
                // message; nothing else refers to it, so we may own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other(
        "console socket message carried no fd",
    ))
}

/// Takes ownership of a descriptor inherited across exec.
///
/// # Errors
/// Fails if `fd` is not open in this process.
pub fn adopt_inherited_fd(fd: RawFd) -> std::io::Result<OwnedFd> {
    nix::fcntl::fcntl(
        // SAFETY: only used to probe whether `fd` is open; not kept.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(std::io::Error::from)?;
    // SAFETY: the parent passed this fd to us on purpose (it is named by our
    // own command line protocol) and no other owner exists in this process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets a pty's window size.
pub fn set_winsize(fd: &OwnedFd, width: u16, height: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which points
    // to a live, initialised value; `fd` is a valid open descriptor.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Registers an owned fd with tokio's reactor.
pub fn async_fd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of `fd`, so the descriptor stays
    // open for exactly as long as it is registered and nobody else can
    // close or reuse it meanwhile (the I/O-safety contract of `register`).
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// One malloc arena for the whole shim: every extra thread would otherwise
/// get its own arena, each costing private memory in every shim.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only adjusts allocator tuning; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives freed heap pages back to the kernel. The shim's heap is busiest
/// while it creates and starts a task; once the task is up it idles for
/// days, so the peak need not stay resident.
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory held by the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Spawns `cmd` with `fds` installed as its fds 3, 4, 5, ... (containerd's
/// logging-binary protocol). The child's other inherited fds are closed by
/// FD_CLOEXEC as usual.
pub fn spawn_with_fds(
    mut cmd: std::process::Command,
    fds: Vec<OwnedFd>,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: the closure runs in the forked child before exec and only
    // calls fcntl and dup2, which are async-signal-safe; it allocates
    // nothing (`raw` was built before the fork and is only read).
    unsafe {
        cmd.pre_exec(move || {
            // Move every source out of the way first, so installing one
            // target cannot clobber a source that still has to be read.
            let mut moved = [0 as RawFd; 8];
            for (i, &fd) in raw.iter().enumerate().take(moved.len()) {
                let tmp = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
                if tmp < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved[i] = tmp;
            }
            for (i, &tmp) in moved.iter().enumerate().take(raw.len()) {
                // dup2 clears FD_CLOEXEC on the new descriptor.
                if libc::dup2(tmp, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(fds);
    child
}
