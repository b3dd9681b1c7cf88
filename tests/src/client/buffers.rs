//! Real dma-bufs for test clients: vgem dumb buffers (with fences the test controls),
//! virtio-gpu dumb buffers (allocated on its primary node, as Mesa's kms_swrast does) and
//! udmabuf (memfd pages).
//!
//! ```no_run
//! use syncbridge_tests::client::buffers::Allocator;
//! let vgem = Allocator::vgem();
//! let buf = vgem.allocate(64, 64).expect("vgem buffer");
//! let fence = vgem.attach_write_fence(&buf).expect("vgem fence");
//! // ... commit it: the compositor must not show it ...
//! vgem.signal(fence).expect("signal");
//! ```

use std::os::fd::{AsFd, OwnedFd};

use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::Device as _;

use crate::kernel::card::{Card, NodeKind};
use crate::kernel::udmabuf;
use crate::kernel::vgem::{FenceAccess, Vgem, VgemBuffer, VgemFence};
use crate::kernel::virtio_gpu::{open_virtio_gpu, VirtioGpu};

/// Where a buffer's memory comes from.
#[derive(Debug)]
pub enum Allocator {
    /// vgem dumb buffers; fences attachable.
    Vgem(Vgem),
    /// Dumb buffers on a KMS primary node (virtio_gpu's card).
    Dumb(Card),
    /// udmabuf (memfd pages).
    Udmabuf,
}

/// A single-plane XRGB8888 linear dma-buf.
#[derive(Debug)]
pub struct DmaBuffer {
    /// The dma-buf.
    pub fd: OwnedFd,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row.
    pub stride: u32,
    /// The vgem buffer (for fences), when it came from vgem.
    pub vgem: Option<VgemBuffer>,
}

impl Allocator {
    /// vgem.
    pub fn vgem() -> Self {
        Allocator::Vgem(Vgem::open())
    }

    /// Dumb buffers on virtio_gpu's primary node.
    pub fn virtio_dumb() -> Self {
        Allocator::Dumb(open_virtio_gpu(VirtioGpu::Plain, NodeKind::Primary))
    }

    /// udmabuf.
    pub fn udmabuf() -> Self {
        Allocator::Udmabuf
    }

    /// A `width`x`height` XRGB8888 buffer.
    pub fn allocate(&self, width: u32, height: u32) -> std::io::Result<DmaBuffer> {
        match self {
            Allocator::Vgem(vgem) => {
                let buf = vgem.create_buffer(width, height)?;
                let fd = buf.dmabuf.try_clone()?;
                Ok(DmaBuffer {
                    fd,
                    width,
                    height,
                    stride: buf.pitch,
                    vgem: Some(buf),
                })
            }
            Allocator::Dumb(card) => {
                let db = card.create_dumb_buffer((width, height), DrmFourcc::Xrgb8888, 32)?;
                let flags = (rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::RDWR).bits();
                let fd = card.buffer_to_prime_fd(db.handle(), flags)?;
                // The dma-buf keeps the GEM object alive; the handle goes with the card.
                Ok(DmaBuffer {
                    fd,
                    width,
                    height,
                    stride: db.pitch(),
                    vgem: None,
                })
            }
            Allocator::Udmabuf => {
                let stride = width * 4;
                let fd = udmabuf::create(u64::from(stride) * u64::from(height))?;
                Ok(DmaBuffer {
                    fd,
                    width,
                    height,
                    stride,
                    vgem: None,
                })
            }
        }
    }

    /// The vgem device, for fences.
    pub fn as_vgem(&self) -> &Vgem {
        match self {
            Allocator::Vgem(v) => v,
            _ => panic!("this allocator is not vgem: no controllable fences"),
        }
    }

    /// Attaches a new unsignalled write fence to a vgem buffer.
    pub fn attach_write_fence(&self, buf: &DmaBuffer) -> std::io::Result<VgemFence> {
        let vb = buf
            .vgem
            .as_ref()
            .expect("fences need a vgem buffer (Allocator::vgem)");
        self.as_vgem().attach(vb, FenceAccess::Write)
    }

    /// Signals a vgem fence.
    pub fn signal(&self, fence: VgemFence) -> std::io::Result<()> {
        self.as_vgem().signal(fence)
    }
}

impl DmaBuffer {
    /// The buffer's read fences (what a reader must wait for) as a sync_file, e.g. to pass
    /// as an explicit acquire fence.
    pub fn export_write_fences(
        &self,
    ) -> Result<syncbridge_bridge::SyncFile, syncbridge_bridge::dmabuf::DmabufFenceError> {
        syncbridge_bridge::dmabuf::export_sync_file(
            self.fd.as_fd(),
            syncbridge_bridge::dmabuf::Access::Read,
        )
    }
}
