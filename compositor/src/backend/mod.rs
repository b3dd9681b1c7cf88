//! Where frames go: `headless` (offscreen), `nested` (a winit window) and `tty` (KMS),
//! the variants of [`Backend`], each with the same surface: outputs, a renderer that
//! imports client buffers, and frame pacing that drives [`crate::State::present_frame`].

pub mod cpu_renderer;
pub mod gl_driver;
pub mod gpu_renderer;
pub mod headless;
pub mod headless_renderer;
pub mod nested;
pub mod tty;

/// `DRM_COMMAND_BASE` (include/uapi/drm/drm.h): driver-specific ioctls (vgem, virtio-gpu)
/// are numbered from here.
pub(crate) const DRM_COMMAND_BASE: u8 = 0x40;

use smithay::{
    backend::{
        allocator::{dmabuf::Dmabuf, Format},
        renderer::{
            damage::Error as DamageError, element::RenderElementStates, pixman::PixmanError,
            sync::SyncPoint,
        },
    },
    desktop::{Space, Window},
    output::Output,
    reexports::wayland_server::protocol::wl_surface::WlSurface,
};
use syncbridge_protocols::BufferId;

use crate::{
    cli::BackendChoice,
    config::OutputConfig,
    frame_clock::FrameClock,
    screenshot::{Screenshot, ScreenshotError},
    state::State,
};

pub use headless::HeadlessBackend;
pub use nested::{NestedBackend, NestedError};
pub use tty::{TtyBackend, TtyError};

/// Errors of the backends.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Creating the renderer failed.
    #[error("creating the pixman renderer: {0}")]
    RendererInit(#[source] PixmanError),
    /// Creating an offscreen buffer failed.
    #[error("creating the offscreen buffer of {output}: {source}")]
    Offscreen {
        /// Output name.
        output: String,
        /// Why.
        #[source]
        source: PixmanError,
    },
    /// Binding an output's buffer as render target failed.
    #[error("binding the buffer of {output}: {source}")]
    Bind {
        /// Output name.
        output: String,
        /// Why.
        #[source]
        source: PixmanError,
    },
    /// Rendering failed.
    #[error("rendering {output}: {source}")]
    Render {
        /// Output name.
        output: String,
        /// Why.
        #[source]
        source: DamageError<PixmanError>,
    },
    /// The renderer cannot use a client dma-buf.
    #[error("unusable dma-buf: {0}")]
    Dmabuf(#[from] cpu_renderer::DmabufCheckError),
    /// GLES cannot import a client dma-buf.
    #[error("GLES cannot import the dma-buf: {0}")]
    GlesImport(#[source] smithay::backend::renderer::gles::GlesError),
    /// `--renderer gles` on the headless backend without a render device.
    #[error("--renderer gles needs a render device (--render-device PATH, or one in /dev/dri)")]
    GlesWithoutDevice,
    /// Opening the render device for GLES failed.
    #[error("{0}")]
    OpenDevice(#[from] headless_renderer::OpenDeviceError),
    /// GLES could not be set up on the render device.
    #[error("{0}")]
    Gles(#[source] gpu_renderer::GpuSetupError),
    /// Allocating a GBM buffer to composite into failed.
    #[error("allocating the GBM buffer of {output}: {source}")]
    GbmBuffer {
        /// Output name.
        output: String,
        /// The OS's (or GBM's) answer.
        #[source]
        source: std::io::Error,
    },
    /// GLES failed to composite an output.
    #[error("GLES rendering {output}: {message}")]
    GlesRender {
        /// Output name.
        output: String,
        /// What failed.
        message: String,
    },
    /// No output with this index.
    #[error("no output #{0}")]
    NoSuchOutput(usize),
    /// The nested (winit) backend failed.
    #[error("nested backend: {0}")]
    Nested(#[from] NestedError),
    /// Starting the frame clocks failed.
    #[error("starting the frame clocks: {0}")]
    FrameClocks(String),
    /// The tty (KMS) backend failed.
    #[error("tty backend: {0}")]
    Tty(#[from] TtyError),
}

/// The backend kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Virtual outputs, offscreen.
    Headless,
    /// A window in an X11/Wayland session.
    Nested,
    /// KMS on a TTY.
    Tty,
}

impl BackendKind {
    /// Lowercase name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Headless => "headless",
            BackendKind::Nested => "nested",
            BackendKind::Tty => "tty",
        }
    }
}

/// The backend to start, and why.
#[derive(Debug, Clone)]
pub struct BackendSelection {
    /// Which one.
    pub kind: BackendKind,
    /// Human-readable reason, for the startup log.
    pub reason: String,
}

/// Why the tty backend can run here (a seat and a DRM primary node), or `None`.
fn tty_available() -> Option<String> {
    let seat = std::env::var_os("XDG_SEAT")
        .map(|s| format!("XDG_SEAT={}", s.to_string_lossy()))
        .or_else(|| {
            ["/run/seatd.sock", "/run/systemd/seats"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .map(|p| format!("{p} exists"))
        })?;
    let card = std::fs::read_dir("/dev/dri")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("card"))?;
    Some(format!("{seat} and /dev/dri/{card}"))
}

/// Resolve `--backend` for this machine.
pub fn select(choice: BackendChoice) -> BackendSelection {
    let kind = |kind, reason: String| BackendSelection { kind, reason };
    match choice {
        BackendChoice::Headless => kind(
            BackendKind::Headless,
            "requested with --backend headless".into(),
        ),
        BackendChoice::Nested => kind(
            BackendKind::Nested,
            "requested with --backend nested".into(),
        ),
        BackendChoice::Tty => kind(BackendKind::Tty, "requested with --backend tty".into()),
        BackendChoice::Auto => {
            if let Some(var) = nested::session_variable() {
                return kind(
                    BackendKind::Nested,
                    format!("--backend auto: {var} is set (a display session); using nested"),
                );
            }
            match tty_available() {
                Some(why) => kind(
                    BackendKind::Tty,
                    format!("--backend auto: no display session, {why}; using tty"),
                ),
                None => kind(
                    BackendKind::Headless,
                    "--backend auto: no display session (WAYLAND_DISPLAY/DISPLAY unset) and \
                     no seat with a DRM device; using headless"
                        .into(),
                ),
            }
        }
    }
}

/// A rendered refresh cycle.
#[derive(Debug)]
pub struct RenderedFrame {
    /// The output.
    pub output: Output,
    /// Whether anything changed on screen.
    pub damaged: bool,
    /// Which elements were drawn, and how.
    pub states: RenderElementStates,
    /// Completion of the render (already signalled for pixman).
    pub sync: SyncPoint,
}

/// The running backend.
#[derive(Debug)]
pub enum Backend {
    /// Virtual outputs.
    Headless(HeadlessBackend),
    /// A window in an X11/Wayland session (boxed: the window and GL state are large).
    Nested(Box<NestedBackend>),
    /// KMS on a TTY (boxed: outputs, session and device state).
    Tty(Box<TtyBackend>),
}

impl Backend {
    /// Start backend `kind`: headless and nested with `outputs`, tty with `tty` (session,
    /// device, one output per connector).
    /// `renderer` is what the headless backend composites with, and where.
    pub fn new(
        kind: BackendKind,
        dh: &smithay::reexports::wayland_server::DisplayHandle,
        outputs: &[OutputConfig],
        tty: &tty::TtyConfig,
        renderer: &headless_renderer::HeadlessRendererConfig,
    ) -> Result<Self, BackendError> {
        match kind {
            BackendKind::Headless => Ok(Backend::Headless(HeadlessBackend::new(
                dh, outputs, renderer,
            )?)),
            BackendKind::Nested => Ok(Backend::Nested(Box::new(NestedBackend::new(dh, outputs)?))),
            BackendKind::Tty => Ok(Backend::Tty(Box::new(TtyBackend::new(dh, tty)?))),
        }
    }

    /// Start pacing frames (timers, window events) in `loop_handle`.
    pub fn start_frame_clocks(
        &mut self,
        loop_handle: &smithay::reexports::calloop::LoopHandle<'static, State>,
    ) -> Result<(), BackendError> {
        match self {
            Backend::Headless(b) => b
                .start_frame_clocks(loop_handle)
                .map_err(|e| BackendError::FrameClocks(e.error.to_string())),
            Backend::Nested(b) => Ok(b.start_frame_clocks(loop_handle)?),
            // Paced by page-flip events: `tty::frame::start` once the state exists.
            Backend::Tty(_) => Ok(()),
        }
    }

    /// Read output `index` back as it is now (`space` for backends that re-render).
    pub fn capture(
        &mut self,
        index: usize,
        space: &Space<Window>,
    ) -> Result<Screenshot, ScreenshotError> {
        match self {
            Backend::Headless(b) => crate::screenshot::capture_headless(b, index),
            Backend::Nested(b) if index == 0 => b.capture(space),
            Backend::Nested(_) => Err(ScreenshotError::NoSuchOutput(index)),
            Backend::Tty(b) => b.capture(index),
        }
    }

    /// Backend name.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Headless(_) => BackendKind::Headless.name(),
            Backend::Nested(_) => BackendKind::Nested.name(),
            Backend::Tty(_) => BackendKind::Tty.name(),
        }
    }

    /// Renderer name.
    pub fn renderer_name(&self) -> &'static str {
        match self {
            Backend::Headless(b) => b.renderer_name(),
            Backend::Nested(_) => "gles",
            Backend::Tty(b) => b.renderer.name(),
        }
    }

    /// The node of the GPU that composites, for linux-dmabuf's main device: GLES on
    /// headless; on tty the node GLES renders on, or with pixman the KMS device's render
    /// node if it has one (see [`TtyBackend::main_device`]). `None`: the caller's default.
    pub fn render_node(&self) -> Option<std::path::PathBuf> {
        match self {
            Backend::Tty(b) => b.main_device().map(|(path, why)| {
                tracing::info!(path = %path.display(), "linux-dmabuf main device: {why}");
                path
            }),
            Backend::Headless(b) => b.gpu_info().and_then(|g| g.render_node.clone()),
            _ => None,
        }
    }

    /// The outputs, in order.
    pub fn outputs(&self) -> Vec<Output> {
        match self {
            Backend::Headless(b) => b.outputs(),
            Backend::Nested(b) => b.outputs(),
            Backend::Tty(b) => b.outputs(),
        }
    }

    /// dma-buf formats the renderer imports.
    pub fn dmabuf_formats(&self) -> Vec<Format> {
        match self {
            Backend::Headless(b) => b.dmabuf_formats(),
            Backend::Nested(b) => b.dmabuf_formats(),
            Backend::Tty(b) => b.dmabuf_formats(),
        }
    }

    /// The scanout tranche of `output`'s `kind` of planes (tty only: nested and
    /// headless put no client buffer on a plane).
    pub fn scanout_tranche(
        &self,
        output: &Output,
        kind: tty::dmabuf_scanout::PlaneKind,
    ) -> Option<tty::dmabuf_scanout::ScanoutTranche> {
        match self {
            Backend::Tty(b) => b.scanout_tranche(output, kind),
            _ => None,
        }
    }

    /// Check that the renderer can use a client dma-buf.
    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<(), BackendError> {
        match self {
            Backend::Headless(b) => b.import_dmabuf(dmabuf),
            Backend::Nested(b) => Ok(b.import_dmabuf(dmabuf)?),
            Backend::Tty(b) => b.import_dmabuf(dmabuf),
        }
    }

    /// Render output `index` from `space`. `buffer_id` is the fence bridge's id of a
    /// surface's current buffer: backends that put client buffers on planes (tty) take it
    /// when they assign the plane, for their scanout report.
    pub fn render(
        &mut self,
        index: usize,
        space: &Space<Window>,
        buffer_id: &dyn Fn(&WlSurface) -> Option<BufferId>,
    ) -> Result<RenderedFrame, BackendError> {
        match self {
            Backend::Headless(b) => b.render(index, space),
            Backend::Nested(b) if index == 0 => Ok(b.render(space)?),
            Backend::Nested(_) => Err(BackendError::NoSuchOutput(index)),
            Backend::Tty(b) => b.render(index, space, buffer_id),
        }
    }

    /// The frame clock of output `index`.
    pub fn frame_clock_mut(&mut self, index: usize) -> Option<&mut FrameClock> {
        match self {
            Backend::Headless(b) => b.frame_clock_mut(index),
            Backend::Nested(b) => (index == 0).then(|| b.frame_clock_mut()),
            Backend::Tty(b) => b.outputs.get_mut(index).map(|o| &mut o.clock),
        }
    }

    /// Backend-specific statistics for `--stats-json` (`kms` for the tty backend).
    pub fn kms_stats(&self) -> Option<serde_json::Value> {
        match self {
            Backend::Tty(b) => Some(b.stats_json()),
            _ => None,
        }
    }
}
