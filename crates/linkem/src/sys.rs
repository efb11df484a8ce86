//! The two system calls no safe crate wraps: attaching to a TUN device and asking for a real-time
//! scheduling class. Everything else goes through rustix.

use std::{io, os::fd::OwnedFd, path::Path};

use rustix::{
    fd::{AsFd, AsRawFd},
    fs::{Mode, OFlags},
    thread::LinkNameSpaceType,
};

/// Moves the calling thread into the network namespace mounted at `path` (`/run/netns/NAME`).
/// Sockets and devices opened by this thread afterwards belong to that namespace, and so do
/// threads it spawns.
pub(crate) fn enter_netns(path: &Path) -> io::Result<()> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::thread::move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Network))?;
    Ok(())
}

/// Attaches to the existing (persistent) TUN device `name` of the calling thread's namespace,
/// without packet information headers and without offloads: every read is one IP packet of at
/// most the MTU, so loss and rate act on real packets.
pub(crate) fn open_tun(name: &str) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must have 1 to 15 bytes"),
        ));
    }
    let fd = rustix::fs::open(
        "/dev/net/tun",
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `ifreq` is plain old data (integers, arrays and a union of them), so all zeroes is
    // a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, and `req` is one, alive and
    // exclusively borrowed for the call; `fd` is an open descriptor of /dev/net/tun.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Puts the calling thread in the `SCHED_FIFO` class at `priority`, so that on a busy 2-core
/// machine packets are released within microseconds of their time rather than milliseconds.
pub(crate) fn realtime(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid `sched_param` that outlives the
    // call, which only reads it.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
