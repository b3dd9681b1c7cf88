//! Helpers for the bridge's VM tests and benchmark (`tests/tests/vm_bridge.rs`,
//! `src/bin/bench_bridge.rs`). Included with `#[path]` so this file stays self-contained.
//! Test scaffolding: panics with a clear message when the VM environment is wrong.

#![allow(dead_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use syncbridge_bridge::dmabuf::{self, Access};
use syncbridge_bridge::{SyncFile, SyncobjDevice};
use syncbridge_tests::kernel::card::find_nodes;
use syncbridge_tests::kernel::vgem::{FenceAccess, Vgem, VgemBuffer, VgemFence};
use syncbridge_tests::kernel::{virtio_gpu_node, NodeKind, VirtioGpu};

/// Opens the first node of `kind` driven by `driver` as a plain `OwnedFd`.
pub fn open_node(driver: &str, kind: NodeKind) -> OwnedFd {
    let path = find_nodes(driver, kind)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {kind:?} node for driver {driver:?} in /dev/dri"));
    open_path(&path)
}

/// Opens the `kind` node of the 2D (non-virgl) virtio_gpu card as a plain `OwnedFd`.
pub fn open_virtio_node(kind: NodeKind) -> OwnedFd {
    open_path(&virtio_gpu_node(VirtioGpu::Plain, kind))
}

/// Opens the DRM node at `path` read-write as a plain `OwnedFd`.
pub fn open_path(path: &std::path::Path) -> OwnedFd {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// The 2D virtio_gpu card's render node as a `SyncobjDevice` (virtio_gpu has timeline
/// syncobjs).
pub fn virtio_syncobj_device() -> SyncobjDevice {
    let fd = open_virtio_node(NodeKind::Render);
    SyncobjDevice::new(fd).expect("virtio_gpu render node with timeline syncobjs")
}

/// A vgem buffer with a pending write fence, and that fence exported as a SyncFile
/// (unsignalled until `vgem.signal(fence)` or the kernel's 10 s timeout).
pub struct PendingFence {
    pub buf: VgemBuffer,
    pub vgem_fence: VgemFence,
    pub sync_file: SyncFile,
}

pub fn pending_fence(vgem: &Vgem) -> PendingFence {
    let buf = vgem.create_buffer(16, 16).expect("vgem buffer");
    let vgem_fence = vgem
        .attach(&buf, FenceAccess::Write)
        .expect("attach write fence");
    let sync_file = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read).expect("export");
    assert!(
        !sync_file.is_signaled().expect("poll"),
        "fresh vgem fence must be pending"
    );
    PendingFence {
        buf,
        vgem_fence,
        sync_file,
    }
}

/// An fd number that is closed right now (it was open a moment ago).
pub fn closed_fd_number() -> RawFd {
    let (r, w) = rustix::pipe::pipe().expect("pipe");
    let raw = r.as_raw_fd();
    drop(r);
    drop(w);
    raw
}

/// Borrows a closed fd number, to prove functions answer EBADF-class errors.
///
/// Only for single-threaded test code: nothing may open a new fd between
/// [`closed_fd_number`] and the use of the returned `BorrowedFd`.
pub fn borrow_closed(raw: RawFd) -> BorrowedFd<'static> {
    // SAFETY: `raw` is not -1. It names no open file, which breaks `BorrowedFd`'s I/O-safety
    // promise on purpose: the only thing done with it is passing it to syscalls (fstatfs,
    // ioctl, poll), which answer EBADF/POLLNVAL; nothing reads, writes or closes it.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

/// User + system CPU time of this process.
pub fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `struct rusage` to the pointer, which points to a
    // zero-initialised `rusage` we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: getrusage succeeded, so the struct is initialised (it was zeroed anyway).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Whether an fd polls readable right now.
pub fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&zero)).expect("poll") == 1
}

/// The fence count of `export(Write)` on a dma-buf: how many fences the buffer holds.
pub fn buffer_fence_count(dmabuf: BorrowedFd<'_>) -> u32 {
    dmabuf::export_sync_file(dmabuf, Access::Write)
        .expect("export(Write)")
        .fence_count()
        .expect("FILE_INFO")
}

/// A self-borrowing helper: fd of anything `AsFd`.
pub fn fd_of(x: &impl AsFd) -> BorrowedFd<'_> {
    x.as_fd()
}
