//! What the bridge runs with: the timeline device, dma-buf fence support, and bounds.
//!
//! ```no_run
//! use syncbridge_protocols::sync_bridge::{BridgeConfig, Limits};
//! // Probe everything; timelines on the given render node (need not drive the display).
//! let config = BridgeConfig::detect(Some(std::path::Path::new("/dev/dri/renderD128")))?;
//! println!("syncobj: {:?}, dma-buf fences: {:?}", config.syncobj_device.is_some(), config.dmabuf_fences);
//! // Or build it by hand, e.g. on a host without DRM:
//! let host = BridgeConfig { limits: Limits { max_pending_waits_per_surface: 4, ..Limits::default() }, ..BridgeConfig::without_devices() };
//! # let _ = host;
//! # Ok::<(), syncbridge_protocols::sync_bridge::ConfigError>(())
//! ```

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use syncbridge_bridge::dmabuf::DmabufFenceSupport;
use syncbridge_bridge::error::ErrorKind;
use syncbridge_bridge::syncobj::{SyncobjDevice, SyncobjError};

/// Bounds on what one client can make the compositor hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Acquire waits in flight per surface (each holds a fence fd or eventfd). A client
    /// that queues more commits with unsignalled fences is disconnected (`wl_display`
    /// `no_memory`). Legitimate clients keep 1-3.
    pub max_pending_waits_per_surface: usize,
    /// Imported timelines per client, counted while anything keeps them (the protocol
    /// object, or a pending point on a destroyed object); more gets `invalid_timeline`.
    pub max_timelines_per_client: usize,
    /// fds the bridge holds for one client (queued acquire fences, acquire waits' sync_files
    /// and eventfds, reader fences for its releases). A request that would go over it
    /// disconnects the client (`wl_display` `no_memory`). Keep it well below the process's
    /// fd limit divided by the clients you expect.
    pub max_fds_per_client: usize,
    /// Fences the bridge holds for one client (as `max_fds_per_client`, plus waits that
    /// hold no fd of their own, e.g. a polled dma-buf).
    pub max_fences_per_client: usize,
    /// dma-buf fds one client's `wl_buffer`s may keep open in the compositor (one per
    /// plane of every linux-dmabuf buffer until it is destroyed); an import over it is
    /// refused. A client with 64 four-plane buffers stays under the default.
    pub max_buffer_fds_per_client: usize,
    /// Latency samples kept for percentiles.
    pub latency_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pending_waits_per_surface: 16,
            max_timelines_per_client: 256,
            max_fds_per_client: 256,
            max_fences_per_client: 512,
            max_buffer_fds_per_client: 512,
            latency_samples: 4096,
        }
    }
}

/// How the bridge waits for a dma-buf's implicit fences before it applies a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImplicitWait {
    /// Export the buffer's write fences as one sync_file at commit time and wait for it
    /// (polls the dma-buf instead when the kernel has no export ioctl).
    #[default]
    Export,
    /// Always poll the dma-buf fd (smithay's `Dmabuf::generate_blocker`), as other smithay
    /// compositors do. For comparisons (`syncbridge --implicit-wait poll`).
    Poll,
}

/// Errors of [`BridgeConfig::detect`] (the errno is kept in the source).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The timeline device could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The timeline device is not usable for a reason other than missing features
    /// (e.g. not a DRM node).
    #[error("timeline device {path}: {source}")]
    Device {
        /// The path.
        path: PathBuf,
        /// The bridge error.
        #[source]
        source: SyncobjError,
    },
}

/// Configuration of a [`SyncBridge`](crate::SyncBridge).
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Device to import client timelines on; `None`: linux-drm-syncobj-v1 is not offered.
    /// It needs timeline syncobjs and `SYNCOBJ_EVENTFD` (Linux 6.6+).
    pub syncobj_device: Option<SyncobjDevice>,
    /// Why there is no syncobj device, for logs.
    pub syncobj_disabled_reason: Option<String>,
    /// Whether dma-buf sync_file export/import works (else poll the dma-buf, CPU release).
    pub dmabuf_fences: DmabufFenceSupport,
    /// Offer zwp_linux_explicit_synchronization_v1.
    pub explicit_sync_v1: bool,
    /// How implicit (dma-buf) acquire fences are waited for.
    pub implicit_wait: ImplicitWait,
    /// Per-client bounds.
    pub limits: Limits,
}

impl BridgeConfig {
    /// No DRM device: explicit-sync-v1 and implicit sync only, with the dma-buf fence
    /// support probed once for the process.
    pub fn without_devices() -> Self {
        Self {
            syncobj_device: None,
            syncobj_disabled_reason: Some("no timeline device configured".into()),
            dmabuf_fences: DmabufFenceSupport::probe(),
            explicit_sync_v1: true,
            implicit_wait: ImplicitWait::Export,
            limits: Limits::default(),
        }
    }

    /// Probes everything. With `timeline_device`, opens it and uses it for syncobj
    /// timelines if it supports them (a device without timelines or eventfds only disables
    /// linux-drm-syncobj-v1, with the reason in `syncobj_disabled_reason`).
    pub fn detect(timeline_device: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = Self::without_devices();
        if let Some(path) = timeline_device {
            let fd: OwnedFd = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|source| ConfigError::Open {
                    path: path.to_owned(),
                    source,
                })?
                .into();
            match SyncobjDevice::new(fd) {
                Ok(dev) => config = config.with_syncobj_device(dev),
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    config.syncobj_disabled_reason = Some(format!("{}: {e}", path.display()));
                }
                Err(source) => {
                    return Err(ConfigError::Device {
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
        Ok(config)
    }

    /// Uses `device` for timelines if it can wait on points without blocking
    /// (`SYNCOBJ_EVENTFD`); otherwise records why not.
    pub fn with_syncobj_device(mut self, device: SyncobjDevice) -> Self {
        if device.supports_eventfd() {
            self.syncobj_device = Some(device);
            self.syncobj_disabled_reason = None;
        } else {
            self.syncobj_disabled_reason = Some(format!(
                "{} has no SYNCOBJ_EVENTFD (Linux 6.6+)",
                device.driver_name()
            ));
            self.syncobj_device = None;
        }
        self
    }
}
