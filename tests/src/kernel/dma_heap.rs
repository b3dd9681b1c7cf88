//! dma-heaps: dma-bufs from `/dev/dma_heap/<name>`.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use rustix::ioctl::{ioctl, opcode, Updater};

#[repr(C)]
#[derive(Debug, Default)]
struct DmaHeapAllocationData {
    len: u64,
    fd: u32,
    fd_flags: u32,
    heap_flags: u64,
}

/// Allocates `len` bytes from the dma-heap `heap` (e.g. "system"); the caller owns the
/// returned dma-buf fd.
pub fn alloc(heap: &str, len: u64) -> std::io::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/dma_heap/{heap}"))?;
    let mut arg = DmaHeapAllocationData {
        len,
        fd_flags: (rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC).bits(),
        ..Default::default()
    };
    // SAFETY: DMA_HEAP_IOCTL_ALLOC is _IOWR('H', 0x0, struct dma_heap_allocation_data) and
    // `arg` is a live instance of that layout.
    unsafe {
        ioctl(
            dev.as_fd(),
            Updater::<{ opcode::read_write::<DmaHeapAllocationData>(b'H', 0) }, _>::new(&mut arg),
        )
    }?;
    // SAFETY: on success the kernel stored a fresh dma-buf fd in `arg.fd`; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(arg.fd as i32) })
}
