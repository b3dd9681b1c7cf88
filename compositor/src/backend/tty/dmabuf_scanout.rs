//! What the tty backend tells linux-dmabuf feedback: the main device (the GPU that
//! composites) and, per output, the scanout tranches (the KMS device and what its
//! primary plane, or every one of its overlay planes, scans out). See
//! [`handlers::dmabuf_surface`](crate::handlers::dmabuf_surface) for which surfaces get
//! them.

use std::path::PathBuf;

use smithay::{
    backend::{allocator::Format, drm::NodeType},
    output::Output,
};

use super::{kms::in_formats, TtyBackend};

/// Which of an output's planes a scanout tranche is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneKind {
    /// The primary plane (a window that covers the output).
    Primary,
    /// The overlay planes (a window that lies on the output, overlapped by nothing
    /// above it; see [`kms::overlay`](super::kms::overlay)).
    Overlay,
}

impl PlaneKind {
    /// For logs.
    pub fn name(self) -> &'static str {
        match self {
            PlaneKind::Primary => "primary plane",
            PlaneKind::Overlay => "overlay planes",
        }
    }
}

/// A preferred tranche for buffers that may go on an output's primary or overlay planes.
#[derive(Debug, Clone)]
pub struct ScanoutTranche {
    /// `dev_t` of the KMS device (its card node): the tranche's target device.
    pub device: u64,
    /// What the planes scan out (IN_FORMATS), format and modifier: for the overlay
    /// planes, what every one of them takes (a candidate may get any of them).
    pub formats: Vec<Format>,
    /// How many such planes the output has (1 for the primary plane).
    pub planes: usize,
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

    /// The scanout tranche of `output`'s `kind` of planes: the KMS device and the planes'
    /// formats. `None` for an output that is not this backend's (or gone), for overlay
    /// planes when it has none or they are off (`--overlay-planes off`), or when the
    /// planes' formats cannot be read (logged).
    pub fn scanout_tranche(&self, output: &Output, kind: PlaneKind) -> Option<ScanoutTranche> {
        let device = self.device.dev_id()?;
        let out = self
            .outputs
            .iter()
            .find(|o| o.alive && o.output == *output)?;
        let planes: Vec<_> = match kind {
            PlaneKind::Primary => vec![out.plane],
            PlaneKind::Overlay if self.overlays_enabled => {
                out.overlays.iter().map(|o| o.handle).collect()
            }
            PlaneKind::Overlay => Vec::new(),
        };
        let mut formats: Option<Vec<Format>> = None;
        for plane in &planes {
            match in_formats::plane_formats(&self.device.fd, *plane) {
                Ok(these) => {
                    formats = Some(match formats {
                        None => these,
                        Some(mut all) => {
                            all.retain(|f| these.contains(f));
                            all
                        }
                    })
                }
                Err(err) => {
                    tracing::warn!(output = %output.name(), plane = ?plane, %err, "no scanout tranche for the {}: a plane's formats are unknown", kind.name());
                    return None;
                }
            }
        }
        Some(ScanoutTranche {
            device,
            formats: formats?,
            planes: planes.len(),
        })
    }
}
