//! The nested backend: one output shown in a window of an existing X11 or Wayland
//! session (smithay's winit backend), rendered with GLES (Mesa's llvmpipe is fine).
//!
//! Pacing: a timer at the output's refresh interval asks the host for a redraw; the
//! frame is rendered when the host delivers it (`WinitEvent::Redraw`), so a host that
//! throttles the window (a Wayland compositor withholding frame callbacks) throttles
//! us too. Resizing the window changes the output's mode. Input is in [`input`].
//!
//! Sync: the same bridge paths as every backend ([`crate::State::present_frame`]):
//! after each render the GLES sync point, exported as a sync_file when the EGL display
//! has native fences, is handed to `SyncBridge::frame_rendered`; otherwise (llvmpipe) the
//! sampled buffers are held until a thread saw the sync point reached ([`crate::render_wait`]).

pub mod input;

use smithay::{
    backend::{
        allocator::{dmabuf::Dmabuf, Format, Fourcc},
        renderer::{
            damage::{Error as DamageError, OutputDamageTracker, RenderOutputResult},
            element::surface::WaylandSurfaceRenderElement,
            gles::{GlesError, GlesRenderer},
            ExportMem, ImportDma, TextureMapping,
        },
        winit::{self, WinitEventLoop, WinitGraphicsBackend},
        SwapBuffersError,
    },
    desktop::{
        space::{render_output, space_render_elements},
        Space, Window,
    },
    output::{Mode, Output, PhysicalProperties, Subpixel},
    reexports::{
        calloop::{
            timer::{TimeoutAction, Timer},
            LoopHandle,
        },
        wayland_server::{backend::GlobalId, DisplayHandle},
        winit::{dpi::PhysicalSize, window::Window as WinitWindow},
    },
    utils::{Physical, Rectangle, Size, Transform},
};

use super::RenderedFrame;
use crate::{
    config::OutputConfig,
    frame_clock::FrameClock,
    screenshot::{PixelOrder, Screenshot, ScreenshotError},
    state::State,
};

/// Background of the output (same dark grey as headless).
const CLEAR_COLOR: [f32; 4] = [0.1, 0.1, 0.12, 1.0];

/// The transform the output is rendered with into the window. A window's default
/// framebuffer has GL's bottom-left origin, and smithay's GlesRenderer maps the
/// output's top row to GL's y = 0 under `Transform::Normal`: the window (on X11 and
/// Wayland hosts alike) would show the output upside down. Rendering with
/// `Flipped180` puts the top row at the top of the window (smithay's anvil and
/// smallvil do the same, but also advertise it in `wl_output`; we keep advertising
/// `Normal`, which is what the output looks like to its clients).
const WINDOW_TRANSFORM: Transform = Transform::Flipped180;

/// A damage tracker for rendering the output, of `size`, into the window.
fn window_tracker(size: Size<i32, Physical>) -> OutputDamageTracker {
    OutputDamageTracker::new(size, 1.0, WINDOW_TRANSFORM)
}

/// Errors of the nested backend.
#[derive(Debug, thiserror::Error)]
pub enum NestedError {
    /// No session to open a window in.
    #[error(
        "the nested backend needs a running X11 or Wayland session, \
         but neither WAYLAND_DISPLAY nor DISPLAY is set"
    )]
    NoSession,
    /// The backend needs at least one output configuration.
    #[error("no output configured")]
    NoOutput,
    /// Opening the window or creating the EGL context / GLES renderer failed (the
    /// winit error is not `Send`, so it is kept as its message and source chain).
    #[error("opening the nested window: {0}")]
    Init(String),
    /// Binding the window's back buffer failed.
    #[error("binding the window: {0}")]
    Bind(#[source] SwapBuffersError),
    /// Rendering failed.
    #[error("rendering: {0}")]
    Render(#[source] DamageError<GlesError>),
    /// Presenting (swapping buffers) failed.
    #[error("presenting the window: {0}")]
    Submit(#[source] SwapBuffersError),
    /// The GLES renderer refused a client dma-buf.
    #[error("importing a dma-buf: {0}")]
    Import(#[source] GlesError),
    /// Registering the event sources failed.
    #[error("registering {0} in the event loop")]
    Source(&'static str),
}

/// The window, its renderer and its output.
#[derive(Debug)]
pub struct NestedBackend {
    graphics: WinitGraphicsBackend<GlesRenderer>,
    /// Taken when the frame clock starts (it becomes a calloop source).
    events: Option<WinitEventLoop>,
    output: Output,
    _global: GlobalId,
    damage_tracker: OutputDamageTracker,
    /// Damage since the previous frame (age 1), whatever the window's buffer age is:
    /// without EGL buffer age every frame is repainted in full, but only frames that
    /// changed count as presented (as on the other backends).
    change_tracker: OutputDamageTracker,
    clock: FrameClock,
    refresh_mhz: i32,
    dmabuf_formats: Vec<Format>,
}

/// Whether a host session is named in the environment: the variable's name, if so.
pub fn session_variable() -> Option<&'static str> {
    ["WAYLAND_DISPLAY", "DISPLAY"]
        .into_iter()
        .find(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// `err` and its sources, `: `-separated.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl NestedBackend {
    /// Open a window of the first configured output's size (further outputs are
    /// ignored: one window is one output) and create its `wl_output` global.
    pub fn new(dh: &DisplayHandle, outputs: &[OutputConfig]) -> Result<Self, NestedError> {
        let config = outputs.first().ok_or(NestedError::NoOutput)?;
        let Some(session) = session_variable() else {
            return Err(NestedError::NoSession);
        };
        if outputs.len() > 1 {
            tracing::warn!(
                requested = outputs.len(),
                "nested: one window is one output; extra outputs ignored"
            );
        }
        let (width, height) = config.size;
        let attributes = WinitWindow::default_attributes()
            .with_title("syncbridge (nested)")
            .with_inner_size(PhysicalSize::new(width, height))
            .with_visible(true);
        let (mut graphics, events) = winit::init_from_attributes::<GlesRenderer>(attributes)
            .map_err(|e| NestedError::Init(error_chain(&e)))?;
        let dmabuf_formats = graphics
            .renderer()
            .dmabuf_formats()
            .iter()
            .copied()
            .collect();
        let size = graphics.window_size();
        tracing::info!(
            session,
            size = ?(size.w, size.h),
            scale_factor = graphics.scale_factor(),
            "nested: window open (winit, GLES)"
        );

        let output = Output::new(
            "WINIT-1".to_owned(),
            PhysicalProperties {
                size: (0, 0).into(),
                subpixel: Subpixel::Unknown,
                make: "syncbridge".into(),
                model: "nested".into(),
            },
        );
        let refresh_mhz = i32::try_from(config.refresh_mhz).unwrap_or(60_000);
        let mode = Mode {
            size,
            refresh: refresh_mhz,
        };
        output.change_current_state(
            Some(mode),
            Some(Transform::Normal),
            None,
            Some((0, 0).into()),
        );
        output.set_preferred(mode);
        let global = output.create_global::<State>(dh);

        Ok(Self {
            graphics,
            events: Some(events),
            damage_tracker: window_tracker(size),
            change_tracker: window_tracker(size),
            output,
            _global: global,
            clock: FrameClock::starting_now(config.refresh_interval()),
            refresh_mhz,
            dmabuf_formats,
        })
    }

    /// Register the window's events and the redraw timer in the event loop.
    pub fn start_frame_clocks(
        &mut self,
        loop_handle: &LoopHandle<'static, State>,
    ) -> Result<(), NestedError> {
        let events = self
            .events
            .take()
            .ok_or(NestedError::Source("the window events (already started)"))?;
        loop_handle
            .insert_source(events, |event, _, state| state.on_winit_event(event))
            .map_err(|_| NestedError::Source("the window events"))?;
        let refresh = self.clock.refresh();
        loop_handle
            .insert_source(Timer::from_duration(refresh), move |_, _, state| {
                if let super::Backend::Nested(nested) = &state.backend {
                    nested.graphics.window().request_redraw();
                }
                TimeoutAction::ToDuration(refresh)
            })
            .map_err(|_| NestedError::Source("the redraw timer"))?;
        Ok(())
    }

    /// The output (one).
    pub fn outputs(&self) -> Vec<Output> {
        vec![self.output.clone()]
    }

    /// dma-buf formats the GLES renderer imports (through EGL).
    pub fn dmabuf_formats(&self) -> Vec<Format> {
        self.dmabuf_formats.clone()
    }

    /// Import a client dma-buf into EGL, to refuse it at creation if GLES cannot use it.
    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<(), NestedError> {
        self.graphics
            .renderer()
            .import_dmabuf(dmabuf, None)
            .map(|_| ())
            .map_err(NestedError::Import)
    }

    /// The frame clock (ticks are taken when the host delivers a redraw).
    pub fn frame_clock_mut(&mut self) -> &mut FrameClock {
        &mut self.clock
    }

    /// The window was resized: the output's mode follows. Returns the new size.
    pub fn resized(&mut self, size: Size<i32, Physical>) -> Size<i32, Physical> {
        let mode = Mode {
            size,
            refresh: self.refresh_mhz,
        };
        self.output
            .change_current_state(Some(mode), None, None, None);
        self.output.set_preferred(mode);
        self.damage_tracker = window_tracker(size);
        self.change_tracker = window_tracker(size);
        tracing::info!(size = ?(size.w, size.h), "nested: window resized, output mode follows");
        size
    }

    /// Render `space` into the window and present it (when anything changed).
    pub fn render(&mut self, space: &Space<Window>) -> Result<RenderedFrame, NestedError> {
        let age = self.graphics.buffer_age().unwrap_or(0);
        let (renderer, mut framebuffer) = self.graphics.bind().map_err(NestedError::Bind)?;
        let elements = space_render_elements::<_, Window, _>(renderer, [space], &self.output, 1.0)
            .map_err(|e| NestedError::Render(DamageError::OutputNoMode(e)))?;
        let changed = match self.change_tracker.damage_output(1, &elements) {
            Ok((damage, _)) => damage.is_some_and(|d| !d.is_empty()),
            Err(_) => true,
        };
        let RenderOutputResult {
            sync,
            damage,
            states,
        } = self
            .damage_tracker
            .render_output(renderer, &mut framebuffer, age, &elements, CLEAR_COLOR)
            .map_err(NestedError::Render)?;
        let damage = damage.cloned();
        drop(framebuffer);
        if damage.as_ref().is_some_and(|d| !d.is_empty()) {
            self.graphics
                .submit(damage.as_deref())
                .map_err(NestedError::Submit)?;
        }
        Ok(RenderedFrame {
            output: self.output.clone(),
            damaged: changed,
            states,
            sync,
        })
    }

    /// Render `space` in full into the back buffer and read it back, without
    /// presenting. A separate damage tracker keeps the window's damage history valid:
    /// the back buffer then holds a newer full frame than the one it expects.
    pub fn capture(&mut self, space: &Space<Window>) -> Result<Screenshot, ScreenshotError> {
        let readback = |e: &dyn std::fmt::Display| ScreenshotError::Readback(e.to_string());
        let size = self
            .output
            .current_mode()
            .map(|m| m.size)
            .unwrap_or_else(|| self.graphics.window_size());
        let (renderer, mut framebuffer) = self.graphics.bind().map_err(|e| readback(&e))?;
        let mut tracker = window_tracker(size);
        let custom: &[WaylandSurfaceRenderElement<GlesRenderer>] = &[];
        let result = render_output(
            &self.output,
            renderer,
            &mut framebuffer,
            1.0,
            0,
            [space],
            custom,
            &mut tracker,
            CLEAR_COLOR,
        )
        .map_err(|e| readback(&e))?;
        if let Err(err) = result.sync.wait() {
            tracing::debug!(?err, "screenshot: waiting for the render");
        }
        let region = Rectangle::from_size(size.to_logical(1).to_buffer(1, Transform::Normal));
        let mapping = renderer
            .copy_framebuffer(&framebuffer, region, Fourcc::Abgr8888)
            .map_err(|e| readback(&e))?;
        // Rendered with WINDOW_TRANSFORM, the output's top row is the window's top
        // row, and GL reads rows back bottom-up (GlesMapping::flipped() says so).
        let flipped = mapping.flipped();
        let bytes = renderer.map_texture(&mapping).map_err(|e| readback(&e))?;
        let width = u32::try_from(size.w).map_err(|_| ScreenshotError::Layout("width"))?;
        let height = u32::try_from(size.h).map_err(|_| ScreenshotError::Layout("height"))?;
        Screenshot::from_pixels(
            width,
            height,
            width as usize * 4,
            PixelOrder::Rgbx,
            flipped,
            bytes,
        )
    }
}
