//! Which KMS device to drive, and hotplug: udev `change` events on our device rescan its
//! connectors (new ones get outputs, vanished ones are switched off).

use std::path::{Path, PathBuf};

use smithay::{
    backend::udev::{self, UdevBackend, UdevEvent},
    reexports::calloop::LoopHandle,
};

use super::{kms::device::has_crtcs, TtyError};
use crate::state::State;

/// `--drm-device`, else the seat's primary GPU if it can do KMS, else the first card
/// that can.
pub fn select_device(seat: &str, requested: Option<&Path>) -> Result<PathBuf, TtyError> {
    if let Some(path) = requested {
        tracing::info!(path = %path.display(), "tty: KMS device from --drm-device");
        return Ok(path.to_path_buf());
    }
    let primary = udev::primary_gpu(seat).map_err(TtyError::Udev)?;
    let all = udev::all_gpus(seat).map_err(TtyError::Udev)?;
    let mut candidates: Vec<PathBuf> = primary.into_iter().collect();
    candidates.extend(all);
    for path in candidates {
        if let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            let card = Probe(file);
            if has_crtcs(&card) {
                tracing::info!(path = %path.display(), "tty: KMS device picked by udev (primary GPU first)");
                return Ok(path);
            }
        }
    }
    Err(TtyError::NoDevice(seat.to_string()))
}

struct Probe(std::fs::File);
impl std::os::fd::AsFd for Probe {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}
impl smithay::reexports::drm::Device for Probe {}
impl smithay::reexports::drm::control::Device for Probe {}

/// Watch udev for changes to our device.
pub fn register(
    handle: &LoopHandle<'static, State>,
    seat: &str,
    our_dev: Option<u64>,
) -> Result<(), TtyError> {
    let backend = UdevBackend::new(seat).map_err(TtyError::Udev)?;
    handle
        .insert_source(backend, move |event, _, state| {
            tracing::debug!(?event, ?our_dev, "udev event");
            match event {
            UdevEvent::Changed { device_id } if Some(device_id) == our_dev => {
                tracing::info!("udev: our KMS device changed: rescanning connectors");
                state.tty_rescan_connectors();
            }
            UdevEvent::Removed { device_id } if Some(device_id) == our_dev => {
                tracing::warn!("udev: our KMS device was removed: no more presentation");
                state.tty_device_removed();
            }
            UdevEvent::Added { path, .. } => {
                tracing::info!(path = %path.display(), "udev: a DRM device appeared (not used: one device per run)");
            }
            _ => {}
        }})
        .map_err(|e| TtyError::Source(e.error.to_string()))?;
    Ok(())
}
