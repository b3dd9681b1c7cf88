//! Finding DRM devices by driver name.
//!
//! Card numbers are not stable inside the VM, and vgem/vkms have no `device/driver`
//! link in sysfs, so devices are identified by the driver name DRM_IOCTL_VERSION reports.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// Primary (`cardN`, KMS-capable, allows dumb buffers) or render (`renderDN`) node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Primary,
    Render,
}

/// An open DRM device node. Owns its fd; implements the `drm` crate's device traits.
#[derive(Debug)]
pub struct Card {
    file: File,
    pub path: PathBuf,
    pub driver: String,
}

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
impl drm::Device for Card {}
impl drm::control::Device for Card {}

impl Card {
    /// Opens `path` read-write and asks the kernel for its driver name.
    pub fn open(path: &Path) -> std::io::Result<Card> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut card = Card {
            file,
            path: path.to_owned(),
            driver: String::new(),
        };
        let driver = drm::Device::get_driver(&card)?;
        card.driver = driver.name().to_string_lossy().into_owned();
        Ok(card)
    }
}

/// All DRM nodes of `kind` whose driver is `driver` (e.g. "vgem", "vkms"). The VM has two
/// virtio_gpu cards: to get one of them, use [`super::virtio_gpu`], which says which.
pub fn find_nodes(driver: &str, kind: NodeKind) -> Vec<PathBuf> {
    let prefix = match kind {
        NodeKind::Primary => "card",
        NodeKind::Render => "renderD",
    };
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/dev/dri") else {
        return found;
    };
    let mut paths: Vec<PathBuf> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    paths.sort();
    for path in paths {
        if let Ok(card) = Card::open(&path) {
            if card.driver == driver {
                found.push(path);
            }
        }
    }
    found
}

/// The connectors of the card node at `card` (`/sys/class/drm/cardN-<type>-M`), in
/// connector order; empty when sysfs lists none.
pub fn connectors(card: &Path) -> Vec<PathBuf> {
    let name = card
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let prefix = format!("{name}-");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/sys/class/drm")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let rest = n.strip_prefix(&prefix)?;
            // "Virtual-2": the number after the last dash orders the connectors.
            let index = rest.rsplit('-').next()?.parse().ok()?;
            Some((index, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Opens the first node of `kind` driven by `driver`, panicking with the list of what
/// exists if there is none (a VM test must fail loudly, not skip).
pub fn open_card_by_driver(driver: &str, kind: NodeKind) -> Card {
    let Some(path) = find_nodes(driver, kind).into_iter().next() else {
        panic!(
            "no {kind:?} DRM node with driver {driver:?}; /dev/dri has: {:?}",
            listing()
        );
    };
    Card::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Every node of `/dev/dri` with its driver (and, for virtio_gpu, whether it has virgl),
/// for failure messages.
pub fn listing() -> Vec<String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/dev/dri")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| !p.is_dir())
        .map(|p| {
            let drv = match Card::open(&p) {
                Ok(c) if c.driver == super::virtio_gpu::DRIVER => {
                    match super::virtio_gpu::path_has_virgl(&p) {
                        Ok(v) => format!("{} virgl={v}", c.driver),
                        Err(e) => format!("{} virgl=({e})", c.driver),
                    }
                }
                Ok(c) => c.driver,
                Err(e) => format!("({e})"),
            };
            format!("{}={}", p.display(), drv)
        })
        .collect()
}
