//! vgem: dumb buffers exported as dma-bufs, with fences the test controls.
//!
//! `VGEM_FENCE_ATTACH` puts a real, unsignalled `dma_fence` on the buffer's
//! reservation object (as a write fence with [`FenceAccess::Write`]); it signals when
//! the test calls [`Vgem::signal`] or when the kernel's 10 s timeout forces it.

use std::os::fd::{AsFd, OwnedFd};

use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::Device as _;

use super::card::{open_card_by_driver, Card, NodeKind};

/// Whether an attached fence is a write (exclusive) or read (shared) fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceAccess {
    Read,
    Write,
}

/// An open vgem device.
#[derive(Debug)]
pub struct Vgem {
    pub card: Card,
}

/// A vgem dumb buffer and its dma-buf. The test owns both the GEM handle (closed on
/// drop with the device) and the dma-buf fd.
#[derive(Debug)]
pub struct VgemBuffer {
    pub handle: drm::buffer::Handle,
    pub dmabuf: OwnedFd,
    pub width: u32,
    pub height: u32,
    pub pitch: u32,
}

/// A vgem fence id, signalled by [`Vgem::signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VgemFence(pub u32);

impl Vgem {
    pub fn open() -> Vgem {
        Vgem {
            card: open_card_by_driver("vgem", NodeKind::Primary),
        }
    }

    /// Allocates a `width`x`height` XRGB8888 dumb buffer and exports it as a dma-buf.
    pub fn create_buffer(&self, width: u32, height: u32) -> std::io::Result<VgemBuffer> {
        let db = self
            .card
            .create_dumb_buffer((width, height), DrmFourcc::Xrgb8888, 32)?;
        let handle = db.handle();
        let pitch = db.pitch();
        let flags = (rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::RDWR).bits();
        let dmabuf = self.card.buffer_to_prime_fd(handle, flags)?;
        // `DumbBuffer` is a plain handle (Copy, no Drop): the GEM object stays alive through
        // the dma-buf and the handle until the device is closed.
        Ok(VgemBuffer {
            handle,
            dmabuf,
            width,
            height,
            pitch,
        })
    }

    /// Attaches a new unsignalled fence to `buf`.
    pub fn attach(&self, buf: &VgemBuffer, access: FenceAccess) -> std::io::Result<VgemFence> {
        let id = syncbridge_compositor::backend::tty::vgem::attach_fence(
            self.card.as_fd(),
            u32::from(buf.handle),
            access == FenceAccess::Write,
        )?;
        Ok(VgemFence(id))
    }

    /// Signals a fence made by [`Vgem::attach`].
    pub fn signal(&self, fence: VgemFence) -> std::io::Result<()> {
        syncbridge_compositor::backend::tty::vgem::signal_fence(self.card.as_fd(), fence.0)?;
        Ok(())
    }
}
