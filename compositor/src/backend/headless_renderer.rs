//! What composites on the headless backend: GLES ([`GpuRenderer`]) on the render device
//! when one is selected and EGL and GBM work there on a hardware driver, pixman
//! ([`CpuRenderer`]) otherwise. `--renderer` forces either, as on the tty backend.
//!
//! The headless backend has no session: the render device is opened directly
//! (`O_RDWR | O_CLOEXEC`); render nodes need no DRM master. The opened fd is owned by the
//! [`GpuRenderer`] (its GBM device and EGL display hold reference-counted duplicates).

use std::path::{Path, PathBuf};

use smithay::{backend::drm::DrmDeviceFd, utils::DeviceFd};

use super::{
    cpu_renderer::CpuRenderer,
    gpu_renderer::{GpuRenderer, GpuSetupError, RendererChoice},
    BackendError,
};

/// How the headless backend picks its renderer.
#[derive(Debug, Clone, Default)]
pub struct HeadlessRendererConfig {
    /// `--renderer`.
    pub choice: RendererChoice,
    /// The selected render device (`--render-device`, or the auto-selected one); `None`
    /// when no DRM device is used.
    pub device: Option<PathBuf>,
}

/// The renderer in use.
#[derive(Debug)]
pub enum HeadlessRenderer {
    /// pixman, on the CPU.
    Pixman(CpuRenderer),
    /// GLES on the render device (boxed: the GL state is large).
    Gles(Box<GpuRenderer>),
}

/// Why [`open_device`] failed.
#[derive(Debug, thiserror::Error)]
#[error("opening {path}: {source}")]
pub struct OpenDeviceError {
    /// The device path.
    pub path: String,
    /// The OS's answer (errno inside).
    #[source]
    pub source: std::io::Error,
}

/// Open `path` read-write for GBM and EGL. The returned fd is owned by the caller.
fn open_device(path: &Path) -> Result<DrmDeviceFd, OpenDeviceError> {
    use rustix::fs::{Mode, OFlags};
    let fd =
        rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(|errno| {
            OpenDeviceError {
                path: path.display().to_string(),
                source: errno.into(),
            }
        })?;
    Ok(DrmDeviceFd::new(DeviceFd::from(fd)))
}

/// Why GLES was not set up, for [`RendererChoice::Auto`]'s fallback.
#[derive(Debug, thiserror::Error)]
enum GlesUnavailable {
    #[error("{0}")]
    Open(#[from] OpenDeviceError),
    #[error("{0}")]
    Setup(#[from] GpuSetupError),
}

fn gles(path: &Path, allow_software: bool) -> Result<Box<GpuRenderer>, GlesUnavailable> {
    let fd = open_device(path)?;
    Ok(Box::new(GpuRenderer::new(fd, path, allow_software)?))
}

impl HeadlessRenderer {
    /// Pick the renderer as `config` asks. Returns it and the reason, for the log.
    pub fn new(config: &HeadlessRendererConfig) -> Result<(Self, String), BackendError> {
        let pixman = || {
            CpuRenderer::new()
                .map(HeadlessRenderer::Pixman)
                .map_err(BackendError::RendererInit)
        };
        match (config.choice, &config.device) {
            (RendererChoice::Pixman, _) => {
                Ok((pixman()?, "requested with --renderer pixman".to_string()))
            }
            (RendererChoice::Gles, None) => Err(BackendError::GlesWithoutDevice),
            (RendererChoice::Gles, Some(path)) => match gles(path, true) {
                Ok(gpu) => Ok((
                    HeadlessRenderer::Gles(gpu),
                    "requested with --renderer gles".to_string(),
                )),
                Err(GlesUnavailable::Open(err)) => Err(BackendError::OpenDevice(err)),
                Err(GlesUnavailable::Setup(err)) => Err(BackendError::Gles(err)),
            },
            (RendererChoice::Auto, None) => Ok((
                pixman()?,
                "--renderer auto: no render device selected".to_string(),
            )),
            (RendererChoice::Auto, Some(path)) => match gles(path, false) {
                Ok(gpu) => Ok((
                    HeadlessRenderer::Gles(gpu),
                    format!(
                        "--renderer auto: EGL and GBM work on a hardware driver on {}",
                        path.display()
                    ),
                )),
                Err(GlesUnavailable::Setup(err)) if err.is_software() => Ok((
                    pixman()?,
                    format!("--renderer auto: {err}: pixman is cheaper there"),
                )),
                Err(err) => Ok((
                    pixman()?,
                    format!("--renderer auto: GLES unavailable ({err}); falling back to pixman"),
                )),
            },
        }
    }

    /// "gles" or "pixman".
    pub fn name(&self) -> &'static str {
        match self {
            HeadlessRenderer::Pixman(_) => "pixman",
            HeadlessRenderer::Gles(_) => "gles",
        }
    }
}
