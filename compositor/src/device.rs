//! Finding the DRM device that linux-dmabuf feedback advertises as its main device.

use std::{
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use smithay::backend::drm::{CreateDrmNodeError, DrmNode, NodeType};
use smithay::reexports::drm;

use crate::config::RenderDeviceSelection;

/// Errors finding or opening the render device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The path named on the command line is not a DRM node.
    #[error("{path}: not a DRM device node: {source}")]
    NotDrm {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: CreateDrmNodeError,
    },
    /// Listing `/dev/dri` failed for a reason other than its absence.
    #[error("listing /dev/dri: {0}")]
    ListDri(#[source] std::io::Error),
}

/// A DRM node the compositor advertises (and, with GPU renderers, renders on).
#[derive(Debug, Clone)]
pub struct RenderDevice {
    /// Device node path.
    pub path: PathBuf,
    /// The node (dev_t, render/primary).
    pub node: DrmNode,
    /// Driver name from DRM_IOCTL_VERSION, when the node could be opened.
    pub driver: Option<String>,
}

impl RenderDevice {
    /// `dev_t` of the node, as linux-dmabuf feedback wants it.
    pub fn dev_id(&self) -> u64 {
        self.node.dev_id()
    }

    /// "render" or "primary".
    pub fn node_kind(&self) -> &'static str {
        match self.node.ty() {
            NodeType::Render => "render",
            NodeType::Primary => "primary",
            NodeType::Control => "control",
        }
    }

    fn open(path: &Path, node: DrmNode) -> Self {
        let driver = driver_name(path)
            .map_err(
                |err| tracing::debug!(path = %path.display(), %err, "DRM_IOCTL_VERSION failed"),
            )
            .ok();
        Self {
            path: path.to_path_buf(),
            node,
            driver,
        }
    }
}

/// A DRM node fd, only to ask for the driver name.
struct Card(OwnedFd);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl drm::Device for Card {}

fn open_node(path: &Path) -> std::io::Result<Card> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    Ok(Card(fd))
}

fn driver_of(card: &Card) -> std::io::Result<String> {
    let driver = drm::Device::get_driver(card)?;
    Ok(driver.name().to_string_lossy().into_owned())
}

fn driver_name(path: &Path) -> std::io::Result<String> {
    driver_of(&open_node(path)?)
}

/// The first primary node (`/dev/dri/card*`, by path) whose driver is `driver`, opened
/// read-write; the caller owns the fd.
pub(crate) fn open_by_driver(driver: &str) -> Option<(PathBuf, OwnedFd)> {
    let mut cards: Vec<PathBuf> = std::fs::read_dir("/dev/dri")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("card"))
        })
        .collect();
    cards.sort();
    cards.into_iter().find_map(|path| {
        let card = open_node(&path).ok()?;
        (driver_of(&card).ok()? == driver).then_some((path, card.0))
    })
}

/// Resolve the selection to a device, or `None` (shm only).
pub fn find_render_device(
    selection: &RenderDeviceSelection,
) -> Result<Option<RenderDevice>, DeviceError> {
    match selection {
        RenderDeviceSelection::Disabled => Ok(None),
        RenderDeviceSelection::Path(path) => {
            let node = DrmNode::from_path(path).map_err(|source| DeviceError::NotDrm {
                path: path.clone(),
                source,
            })?;
            Ok(Some(RenderDevice::open(path, node)))
        }
        RenderDeviceSelection::Auto => {
            let mut nodes = match std::fs::read_dir("/dev/dri") {
                Ok(entries) => entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter_map(|p| DrmNode::from_path(&p).ok().map(|n| (p, n)))
                    .collect::<Vec<_>>(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(err) => return Err(DeviceError::ListDri(err)),
            };
            // Render nodes first, then primary nodes; within a kind, devices that can
            // render before vgem (a memory-only driver for tests: no rendering, no syncobj;
            // as the main device it would send clients to a device they cannot draw on,
            // and its node number depends on probe order), then by path.
            nodes.sort_by_cached_key(|(path, node)| {
                let vgem = driver_name(path).is_ok_and(|d| d == "vgem");
                (node.ty() != NodeType::Render, vgem, path.clone())
            });
            Ok(nodes
                .into_iter()
                .find(|(_, node)| node.ty() != NodeType::Control)
                .map(|(path, node)| RenderDevice::open(&path, node)))
        }
    }
}
