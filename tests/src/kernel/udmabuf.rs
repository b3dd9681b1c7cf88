//! udmabuf: dma-bufs backed by memfd pages.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::ioctl::opcode;

#[repr(C)]
#[derive(Debug)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

/// Creates a dma-buf of `size` bytes (rounded up to a page) from a sealed memfd.
/// Returns the dma-buf (owned by the caller); the memfd is closed on return, the
/// dma-buf keeps its pages alive.
pub fn create(size: u64) -> std::io::Result<OwnedFd> {
    let page = 4096u64;
    let size = size.div_ceil(page) * page;
    let memfd = rustix::fs::memfd_create(
        "syncbridge-udmabuf",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&memfd, size)?;
    rustix::fs::fcntl_add_seals(&memfd, SealFlags::SHRINK)?;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/udmabuf")?;
    let arg = UdmabufCreate {
        memfd: memfd.as_raw_fd() as u32,
        flags: UDMABUF_FLAGS_CLOEXEC,
        offset: 0,
        size,
    };
    let req = opcode::write::<UdmabufCreate>(b'u', 0x42);
    // SAFETY: UDMABUF_CREATE is _IOW('u', 0x42, struct udmabuf_create); `arg` matches that
    // layout and outlives the call, and the memfd it names is open. The kernel returns the
    // new dma-buf fd as the ioctl's return value.
    let ret = unsafe { libc::ioctl(dev.as_raw_fd(), req as _, &arg as *const UdmabufCreate) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a non-negative return from UDMABUF_CREATE is a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}
