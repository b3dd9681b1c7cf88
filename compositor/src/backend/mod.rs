//! Where frames go. `headless` today; `tty` (KMS) and `nested` (winit) join as
//! further variants of [`Backend`] with the same surface: outputs, a renderer that
//! imports client buffers, and one frame clock per output driving
//! [`crate::State::present_frame`].

pub mod cpu_renderer;
pub mod headless;

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
};

use crate::{cli::BackendChoice, frame_clock::FrameClock};

pub use headless::HeadlessBackend;

/// Errors of the backends.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend exists on the command line but not in this build yet.
    #[error("the {0} backend is not yet implemented in this build (use --backend headless)")]
    NotImplemented(&'static str),
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
    /// No output with this index.
    #[error("no output #{0}")]
    NoSuchOutput(usize),
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

/// Resolve `--backend` for this machine.
pub fn select(choice: BackendChoice) -> Result<BackendSelection, BackendError> {
    match choice {
        BackendChoice::Headless => Ok(BackendSelection {
            kind: BackendKind::Headless,
            reason: "requested with --backend headless".into(),
        }),
        BackendChoice::Nested => Err(BackendError::NotImplemented("nested")),
        BackendChoice::Tty => Err(BackendError::NotImplemented("tty")),
        BackendChoice::Auto => {
            let session = ["WAYLAND_DISPLAY", "DISPLAY"]
                .into_iter()
                .find(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
            let has_dri = std::path::Path::new("/dev/dri").exists();
            let why = match (session, has_dri) {
                (Some(var), _) => {
                    format!("{var} is set, but the nested backend is not in this build yet")
                }
                (None, true) => {
                    "/dev/dri exists, but the tty backend is not in this build yet".to_string()
                }
                (None, false) => {
                    "no display session (WAYLAND_DISPLAY/DISPLAY unset) and no /dev/dri".to_string()
                }
            };
            Ok(BackendSelection {
                kind: BackendKind::Headless,
                reason: format!("--backend auto: {why}; using headless"),
            })
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
}

impl Backend {
    /// Backend name.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Headless(_) => BackendKind::Headless.name(),
        }
    }

    /// Renderer name.
    pub fn renderer_name(&self) -> &'static str {
        match self {
            Backend::Headless(_) => "pixman",
        }
    }

    /// The outputs, in order.
    pub fn outputs(&self) -> Vec<Output> {
        match self {
            Backend::Headless(b) => b.outputs(),
        }
    }

    /// dma-buf formats the renderer imports.
    pub fn dmabuf_formats(&self) -> Vec<Format> {
        match self {
            Backend::Headless(b) => b.dmabuf_formats(),
        }
    }

    /// Check that the renderer can use a client dma-buf.
    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<(), BackendError> {
        match self {
            Backend::Headless(b) => b.import_dmabuf(dmabuf),
        }
    }

    /// Render output `index` from `space`.
    pub fn render(
        &mut self,
        index: usize,
        space: &Space<Window>,
    ) -> Result<RenderedFrame, BackendError> {
        match self {
            Backend::Headless(b) => b.render(index, space),
        }
    }

    /// The frame clock of output `index`.
    pub fn frame_clock_mut(&mut self, index: usize) -> Option<&mut FrameClock> {
        match self {
            Backend::Headless(b) => b.frame_clock_mut(index),
        }
    }
}
