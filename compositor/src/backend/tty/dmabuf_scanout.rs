//! What the tty backend tells linux-dmabuf feedback: the main device (the GPU that
//! composites) and, per output, the scanout tranche (the KMS device and what its
//! primary plane scans out). See [`handlers::dmabuf_surface`](crate::handlers::dmabuf_surface)
//! for which surfaces get it.

use std::path::PathBuf;

use smithay::{
    backend::{allocator::Format, drm::NodeType},
    output::Output,
};

use super::{kms::in_formats, TtyBackend};

/// A preferred tranche for buffers that may go on an output's primary plane.
#[derive(Debug, Clone)]
pub struct ScanoutTranche {
    /// `dev_t` of the KMS device (its card node): the tranche's target device.
    pub device: u64,
    /// What the primary plane scans out (IN_FORMATS), format and modifier.
    pub formats: Vec<Format>,
}

impl TtyBackend {
    /// The node clients should allocate on when nothing else applies (linux-dmabuf's main
    /// device), and why. GLES composites on the KMS device's GPU through its own file
    /// (see [`renderer`](super::renderer)): the device's render node, else its card node.
    /// pixman composites on the CPU, on no device; the KMS device's render node, when it
    /// has one, is then the closest to the truth (buffers scanned out directly are
    /// imported there). `None`: the KMS device has no render node and pixman composites
    /// (VKMS): the caller keeps its default choice.
    pub fn main_device(&self) -> Option<(PathBuf, &'static str)> {
        let render = self
            .device
            .node
            .and_then(|n| n.node_with_type(NodeType::Render))
            .and_then(Result::ok)
            .and_then(|n| n.dev_path());
        match (render, self.renderer.gpu_info()) {
            (Some(path), Some(_)) => Some((path, "the render node GLES composites on")),
            (None, Some(_)) => Some((
                self.device.path.clone(),
                "the card node GLES composites on (the KMS device has no render node)",
            )),
            (Some(path), None) => Some((
                path,
                "the KMS device's render node (pixman composites on the CPU)",
            )),
            (None, None) => None,
        }
    }

    /// The scanout tranche of `output`: the KMS device and its primary plane's formats.
    /// `None` for an output that is not this backend's (or gone), or when the plane's
    /// formats cannot be read (logged).
    pub fn scanout_tranche(&self, output: &Output) -> Option<ScanoutTranche> {
        let device = self.device.dev_id()?;
        let out = self
            .outputs
            .iter()
            .find(|o| o.alive && o.output == *output)?;
        match in_formats::plane_formats(&self.device.fd, out.plane) {
            Ok(formats) => Some(ScanoutTranche { device, formats }),
            Err(err) => {
                tracing::warn!(output = %output.name(), %err, "no scanout tranche: the primary plane's formats are unknown");
                None
            }
        }
    }
}
