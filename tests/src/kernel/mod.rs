//! Helpers for tests that run on a real kernel inside the VM (`cargo xtask vm`).
//!
//! These talk to the devices the VM provides: virtio-gpu (two cards: a 2D one with KMS +
//! timeline syncobjs, and a virgl one for GL; see [`virtio_gpu`]),
//! vgem (dma-bufs with controllable fences), VKMS (KMS with a real vblank timer),
//! udmabuf and the `system` dma-heap. They are test scaffolding, not product code:
//! they panic with a clear message when the environment is wrong, so a VM test can
//! never silently pass on a machine without those devices.

pub mod card;
pub mod dma_heap;
pub mod kms;
pub mod proc_stats;
pub mod udmabuf;
pub mod uinput;
pub mod vgem;
pub mod virgl_gl;
pub mod virtio_gpu;

pub use card::{open_card_by_driver, Card, NodeKind};
pub use virtio_gpu::{virtio_gpu_node, VirtioGpu};

/// Panics unless we are inside the test VM (a DRM device is present). VM suites call
/// this first so that running them on a host fails loudly instead of skipping.
pub fn require_vm() {
    let has_dri = std::fs::read_dir("/dev/dri")
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    assert!(
        has_dri,
        "this test needs the syncbridge test VM (no /dev/dri here): run it through `cargo xtask test` or `cargo xtask vm --exec ...`"
    );
}
