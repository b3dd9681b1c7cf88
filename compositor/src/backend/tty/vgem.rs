//! vgem's fence ioctls: a real, unsignalled `dma_fence` on a vgem buffer's reservation
//! object, signalled when userspace says so (or by the kernel's 10 s timeout).
//!
//! Written by hand because no maintained crate wraps `DRM_IOCTL_VGEM_FENCE_*` (vgem is a
//! test driver; the drm crate covers the core and KMS ioctls only). Used by the
//! out-fence lag injection ([`super::out_fence_lag`]) and by the test suite's vgem
//! buffers.

use std::os::fd::BorrowedFd;

use rustix::ioctl::{ioctl, opcode, Setter, Updater};

use crate::backend::DRM_COMMAND_BASE;

#[repr(C)]
#[derive(Debug, Default)]
struct DrmVgemFenceAttach {
    handle: u32,
    flags: u32,
    out_fence: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Debug, Default)]
struct DrmVgemFenceSignal {
    fence: u32,
    flags: u32,
}

const VGEM_FENCE_WRITE: u32 = 0x1;

/// Attach a new unsignalled fence to the GEM object `handle` of the vgem device `card`:
/// a write (exclusive) fence when `write`, else a read (shared) one. Returns its id for
/// [`signal_fence`]. A write fence is refused (EBUSY) while another unsignalled fence
/// conflicts with it.
pub fn attach_fence(card: BorrowedFd<'_>, handle: u32, write: bool) -> rustix::io::Result<u32> {
    let mut arg = DrmVgemFenceAttach {
        handle,
        flags: if write { VGEM_FENCE_WRITE } else { 0 },
        ..Default::default()
    };
    // SAFETY: DRM_IOCTL_VGEM_FENCE_ATTACH is _IOWR('d', 0x41, struct drm_vgem_fence_attach)
    // and `arg` is a live, correctly laid out instance of that struct (no pointers in it).
    unsafe {
        ioctl(
            card,
            Updater::<{ opcode::read_write::<DrmVgemFenceAttach>(b'd', DRM_COMMAND_BASE + 1) }, _>::new(
                &mut arg,
            ),
        )
    }?;
    Ok(arg.out_fence)
}

/// Signal the fence `id` made by [`attach_fence`] on `card` (ENOENT once it signalled by
/// timeout, or was signalled already).
pub fn signal_fence(card: BorrowedFd<'_>, id: u32) -> rustix::io::Result<()> {
    let arg = DrmVgemFenceSignal {
        fence: id,
        flags: 0,
    };
    // SAFETY: DRM_IOCTL_VGEM_FENCE_SIGNAL is _IOW('d', 0x42, struct drm_vgem_fence_signal)
    // and `arg` is a live, correctly laid out instance of that struct (no pointers in it).
    unsafe {
        ioctl(
            card,
            Setter::<{ opcode::write::<DrmVgemFenceSignal>(b'd', DRM_COMMAND_BASE + 2) }, _>::new(
                arg,
            ),
        )
    }
}
