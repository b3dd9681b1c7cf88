//! The test VM's two virtio_gpu cards, told apart by what their device can do.
//!
//! The VM has a 2D virtio-gpu (`virtio-gpu-pci,max_outputs=2`: two heads, no 3D) and a
//! virgl one (`virtio-gpu-gl-pci`: 3D through the host's Mesa). Both report the driver
//! name `virtio_gpu`, and card numbers follow probe order, so a test names the card it
//! means with [`VirtioGpu`] and the lookup asks the kernel, with the virtio-gpu
//! `GETPARAM` ioctl (`VIRTGPU_PARAM_3D_FEATURES`), whether the device has virgl.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::card::{connectors, find_nodes, listing, Card, NodeKind};

/// The driver name both virtio-gpu cards report.
pub const DRIVER: &str = syncbridge_compositor::backend::gl_driver::VIRTIO_GPU;

/// Which of the VM's virtio_gpu cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioGpu {
    /// The 2D card: no virgl, two heads (`max_outputs=2`), timeline syncobjs. Every test
    /// written before the virgl card existed uses this one.
    Plain,
    /// The virgl card: its GL runs on the host's Mesa (llvmpipe), so its render node gives
    /// clients a real GL driver (Mesa's virgl) with real fences.
    Virgl,
}

/// Whether the virtio_gpu device behind an fd has virgl 3D: the compositor's own query
/// (`VIRTGPU_PARAM_3D_FEATURES`), which its `--renderer auto` asks before loading EGL.
pub use syncbridge_compositor::backend::gl_driver::has_virgl;

/// [`has_virgl`] for a node path. Asks on the device's render node when it has one (any
/// process may use a render node; a card node's GETPARAM needs an authenticated or
/// root client).
pub fn path_has_virgl(path: &Path) -> io::Result<bool> {
    let node = sibling(path, NodeKind::Render).unwrap_or_else(|| path.to_path_buf());
    let card = Card::open(&node)?;
    has_virgl(card.as_fd())
}

/// Which virtio_gpu card the node at `path` belongs to (`None`: not virtio_gpu, or the
/// kernel would not say).
pub fn which(path: &Path) -> Option<VirtioGpu> {
    let card = Card::open(path).ok()?;
    if card.driver != DRIVER {
        return None;
    }
    match path_has_virgl(path).ok()? {
        true => Some(VirtioGpu::Virgl),
        false => Some(VirtioGpu::Plain),
    }
}

/// All `kind` nodes of the `which` virtio_gpu card(s), sorted by path.
pub fn find_virtio_gpu_nodes(which_card: VirtioGpu, kind: NodeKind) -> Vec<PathBuf> {
    find_nodes(DRIVER, kind)
        .into_iter()
        .filter(|p| which(p) == Some(which_card))
        .collect()
}

/// The `kind` node of the `which` virtio_gpu card, panicking with what `/dev/dri` has
/// when there is none (a VM test must fail loudly, not skip).
pub fn virtio_gpu_node(which_card: VirtioGpu, kind: NodeKind) -> PathBuf {
    find_virtio_gpu_nodes(which_card, kind)
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            panic!(
                "no {kind:?} node of the {which_card:?} virtio_gpu card; /dev/dri has: {:?}",
                listing()
            )
        })
}

/// Opens the `kind` node of the `which` virtio_gpu card (see [`virtio_gpu_node`]).
pub fn open_virtio_gpu(which_card: VirtioGpu, kind: NodeKind) -> Card {
    let path = virtio_gpu_node(which_card, kind);
    Card::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// The virgl card's two nodes: the card (KMS) and the render node (GL clients, EGL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirglNodes {
    pub card: PathBuf,
    pub render: PathBuf,
}

/// The virgl card, found by driver name plus the virgl feature, with its render node
/// (the same device's, from sysfs); `None` when the VM has none.
pub fn find_virgl() -> Option<VirglNodes> {
    find_virtio_gpu_nodes(VirtioGpu::Virgl, NodeKind::Primary)
        .into_iter()
        .find_map(|card| {
            let render = sibling(&card, NodeKind::Render)?;
            Some(VirglNodes { card, render })
        })
}

/// [`find_virgl`], panicking with what `/dev/dri` has when the VM has no virgl card.
pub fn virgl() -> VirglNodes {
    find_virgl().unwrap_or_else(|| {
        panic!(
            "no virtio_gpu card with virgl (VIRTGPU_PARAM_3D_FEATURES) in this VM; /dev/dri has: {:?}",
            listing()
        )
    })
}

/// The node of `kind` of the same device as the node at `path`: sysfs lists a device's
/// DRM nodes under `/sys/class/drm/<node>/device/drm/`.
pub fn sibling(path: &Path, kind: NodeKind) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let prefix = match kind {
        NodeKind::Primary => "card",
        NodeKind::Render => "renderD",
    };
    let dir = std::fs::read_dir(format!("/sys/class/drm/{name}/device/drm")).ok()?;
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .map(|n| Path::new("/dev/dri").join(n))
}

/// The 2D card's connectors (`/sys/class/drm/cardN-Virtual-M`), in connector order.
fn plain_connectors() -> Vec<PathBuf> {
    find_virtio_gpu_nodes(VirtioGpu::Plain, NodeKind::Primary)
        .first()
        .map(|card| connectors(card))
        .unwrap_or_default()
}

/// The 2D card single-headed, as the suites expect it: QEMU's gtk display (which the
/// virgl card needs) reports every head of the 2D card connected, where `-display none`
/// reported only the first. Forces every connector but the first `off`. Run at guest
/// start-up (`drm-cards --single-head`), after a PCI rescan brings the card back, and by
/// tests that lit the second head, when they end. Errors are returned, not hidden.
pub fn single_head_plain() -> io::Result<()> {
    for connector in plain_connectors().iter().skip(1) {
        std::fs::write(connector.join("status"), "off")?;
    }
    Ok(())
}
