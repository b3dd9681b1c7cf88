//! The KMS device: an atomic-capable DRM fd opened through the session, its driver
//! name, and property lookups by name.

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use smithay::{
    backend::drm::{DrmDeviceFd, DrmNode},
    reexports::{
        drm::{
            self,
            control::{property, Device as ControlDevice, ResourceHandle},
            ClientCapability, Device as _,
        },
        rustix::fs::OFlags,
    },
    utils::DeviceFd,
};

use super::super::TtyError;

/// Property handles of one KMS object, by name.
#[derive(Debug, Clone, Default)]
pub struct PropMap {
    map: HashMap<String, (property::Handle, u64)>,
}

impl PropMap {
    /// Read every property of `handle`.
    pub fn read(dev: &impl ControlDevice, handle: impl ResourceHandle) -> std::io::Result<Self> {
        let props = dev.get_properties(handle)?;
        let mut map = HashMap::new();
        for (prop, value) in props.iter() {
            let info = dev.get_property(*prop)?;
            let name = info.name().to_string_lossy().into_owned();
            map.insert(name, (*prop, *value));
        }
        Ok(Self { map })
    }

    /// The handle of property `name`.
    pub fn get(&self, name: &str) -> Option<property::Handle> {
        self.map.get(name).map(|(h, _)| *h)
    }

    /// The value `name` had when read.
    pub fn value(&self, name: &str) -> Option<u64> {
        self.map.get(name).map(|(_, v)| *v)
    }

    /// The handle of `name`, or an error naming the missing property.
    pub fn require(&self, name: &'static str) -> Result<property::Handle, TtyError> {
        self.get(name).ok_or(TtyError::MissingProperty(name))
    }
}

/// An open, atomic-capable KMS device.
#[derive(Debug)]
pub struct KmsDevice {
    /// The fd (master while the session is active).
    pub fd: DrmDeviceFd,
    /// Device node path.
    pub path: PathBuf,
    /// dev_t.
    pub node: Option<DrmNode>,
    /// Driver name from DRM_IOCTL_VERSION.
    pub driver: String,
}

impl KmsDevice {
    /// Wrap an fd the session opened; enable universal planes and atomic modesetting.
    pub fn new(path: &Path, fd: OwnedFd) -> Result<Self, TtyError> {
        let fd = DrmDeviceFd::new(DeviceFd::from(fd));
        let kms = |what: &'static str| {
            let path = path.display().to_string();
            move |source: std::io::Error| TtyError::Kms { what, path, source }
        };
        let driver = fd
            .get_driver()
            .map_err(kms("DRM_IOCTL_VERSION"))?
            .name()
            .to_string_lossy()
            .into_owned();
        fd.set_client_capability(ClientCapability::UniversalPlanes, true)
            .map_err(kms("enabling universal planes"))?;
        fd.set_client_capability(ClientCapability::Atomic, true)
            .map_err(kms("enabling atomic modesetting"))?;
        let node = DrmNode::from_file(&fd).ok();
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            node,
            driver,
        })
    }

    /// Flags to open a device node with.
    pub fn open_flags() -> OFlags {
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
    }

    /// dev_t of the device, if known.
    pub fn dev_id(&self) -> Option<u64> {
        self.node.map(|n| n.dev_id())
    }
}

/// Whether `dev` is a KMS device (has at least one CRTC).
pub fn has_crtcs(dev: &impl ControlDevice) -> bool {
    dev.resource_handles()
        .map(|r| !r.crtcs().is_empty())
        .unwrap_or(false)
}

/// Re-export for sibling modules.
pub use drm::control::Device as Control;
