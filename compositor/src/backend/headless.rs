//! The headless backend: virtual outputs rendered offscreen, each paced by its own
//! calloop timer at the output's refresh interval.
//!
//! What composites is picked by [`HeadlessRenderer`]: GLES on the render device into one
//! GBM buffer per output (bound as a dma-buf target; the frame's sync point goes to the
//! fence bridge as the render fence), or pixman into one pixman image per output.
//!
//! pixman reads client dma-bufs through an mmap bracketed by `DMA_BUF_IOCTL_SYNC`,
//! which blocks on unsignalled fences: this backend relies on the fence bridge never
//! letting a commit apply before its acquire fence signalled.

use smithay::{
    backend::{
        allocator::{dmabuf::Dmabuf, gbm::GbmBuffer, Format, Fourcc},
        renderer::{
            damage::{OutputDamageTracker, RenderOutputResult},
            Bind, Offscreen, Renderer,
        },
    },
    desktop::{space::space_render_elements, Space, Window},
    output::{Mode, Output, PhysicalProperties, Subpixel},
    reexports::{
        calloop::{
            timer::{TimeoutAction, Timer},
            LoopHandle, RegistrationToken,
        },
        pixman::Image,
        wayland_server::{backend::GlobalId, DisplayHandle},
    },
    utils::{Physical, Point, Size, Transform},
};

use super::{
    cpu_renderer::ready_render_elements,
    gpu_renderer::{GpuInfo, GpuRenderer},
    headless_renderer::{HeadlessRenderer, HeadlessRendererConfig},
    BackendError, RenderedFrame,
};
use crate::{config::OutputConfig, frame_clock::FrameClock, state::State};

/// Background of the outputs (dark grey, opaque).
const CLEAR_COLOR: [f32; 4] = [0.1, 0.1, 0.12, 1.0];

/// The buffer an output is composited into.
#[derive(Debug)]
pub enum HeadlessTarget {
    /// A pixman image (pixman).
    Pixman(Image<'static, 'static>),
    /// A GBM buffer of the render device, bound as a dma-buf (GLES).
    Gles {
        /// The buffer as a dma-buf (its own fds), the render target.
        dmabuf: Dmabuf,
        /// The buffer object.
        _buffer: GbmBuffer,
    },
}

/// One virtual output.
#[derive(Debug)]
pub struct HeadlessOutput {
    output: Output,
    _global: GlobalId,
    framebuffer: HeadlessTarget,
    damage_tracker: OutputDamageTracker,
    clock: FrameClock,
    rendered_once: bool,
    timer: Option<RegistrationToken>,
    /// Windows held back in the last frame (buffers not readable without blocking).
    held_back: usize,
    /// Frames that held back at least one window.
    held_back_frames: u64,
}

/// Virtual outputs + their renderer.
#[derive(Debug)]
pub struct HeadlessBackend {
    renderer: HeadlessRenderer,
    /// Why this renderer runs (for the log).
    pub renderer_reason: String,
    outputs: Vec<HeadlessOutput>,
}

impl HeadlessBackend {
    /// Create the outputs (and their wl_output globals), laid out left to right.
    /// `renderer` says which renderer to try on which device.
    pub fn new(
        dh: &DisplayHandle,
        outputs: &[OutputConfig],
        renderer: &HeadlessRendererConfig,
    ) -> Result<Self, BackendError> {
        let (mut renderer, renderer_reason) = HeadlessRenderer::new(renderer)?;
        match &renderer {
            HeadlessRenderer::Gles(gpu) => tracing::info!(
                renderer = "gles",
                reason = %renderer_reason,
                device = %gpu.info.device.display(),
                gl_renderer = %gpu.info.gl_renderer,
                native_fences = gpu.info.native_fences,
                "headless: renderer: GLES on {}",
                gpu.info.device.display()
            ),
            HeadlessRenderer::Pixman(_) => tracing::info!(
                renderer = "pixman",
                reason = %renderer_reason,
                "headless: renderer: pixman (CPU)"
            ),
        }
        let mut x = 0;
        let mut created = Vec::with_capacity(outputs.len());
        for config in outputs {
            let output = Output::new(
                config.name.clone(),
                PhysicalProperties {
                    size: (0, 0).into(),
                    subpixel: Subpixel::Unknown,
                    make: "syncbridge".into(),
                    model: "headless".into(),
                },
            );
            let mode = Mode {
                size: config.size.into(),
                refresh: i32::try_from(config.refresh_mhz).unwrap_or(60_000),
            };
            output.change_current_state(
                Some(mode),
                Some(Transform::Normal),
                None,
                Some(Point::from((x, 0))),
            );
            output.set_preferred(mode);
            x += config.size.0;
            let global = output.create_global::<State>(dh);

            let framebuffer = create_target(&mut renderer, config)?;
            created.push(HeadlessOutput {
                damage_tracker: OutputDamageTracker::from_output(&output),
                output,
                _global: global,
                framebuffer,
                clock: FrameClock::starting_now(config.refresh_interval()),
                rendered_once: false,
                timer: None,
                held_back: 0,
                held_back_frames: 0,
            });
        }
        Ok(Self {
            renderer,
            renderer_reason,
            outputs: created,
        })
    }

    /// "gles" or "pixman".
    pub fn renderer_name(&self) -> &'static str {
        self.renderer.name()
    }

    /// The GPU that composites, with GLES.
    pub fn gpu_info(&self) -> Option<&GpuInfo> {
        match &self.renderer {
            HeadlessRenderer::Gles(gpu) => Some(&gpu.info),
            HeadlessRenderer::Pixman(_) => None,
        }
    }

    /// The GLES renderer, for GL read-back.
    pub fn gles(&mut self) -> Option<&mut GpuRenderer> {
        match &mut self.renderer {
            HeadlessRenderer::Gles(gpu) => Some(gpu),
            HeadlessRenderer::Pixman(_) => None,
        }
    }

    /// Start one timer per output at its refresh interval; each tick calls
    /// [`State::on_frame_timer`].
    pub fn start_frame_clocks(
        &mut self,
        loop_handle: &LoopHandle<'static, State>,
    ) -> Result<(), smithay::reexports::calloop::InsertError<Timer>> {
        for (index, out) in self.outputs.iter_mut().enumerate() {
            let timer = Timer::from_duration(out.clock.refresh());
            let token = loop_handle.insert_source(timer, move |deadline, _, state| match state
                .on_frame_timer(index, deadline)
            {
                Some(next) => TimeoutAction::ToInstant(next),
                None => TimeoutAction::Drop,
            })?;
            out.timer = Some(token);
        }
        Ok(())
    }

    /// The outputs.
    pub fn outputs(&self) -> Vec<Output> {
        self.outputs.iter().map(|o| o.output.clone()).collect()
    }

    /// Formats the renderer imports: pixman's single-plane linear ones, or what GLES
    /// imports (with modifiers).
    pub fn dmabuf_formats(&self) -> Vec<Format> {
        match &self.renderer {
            HeadlessRenderer::Pixman(r) => r.dmabuf_formats(),
            HeadlessRenderer::Gles(gpu) => gpu.dmabuf_formats(),
        }
    }

    /// Refuse a client dma-buf at creation if the renderer cannot use it. pixman does
    /// not map or sync it: that would block on the client's fences (see
    /// [`super::cpu_renderer::CpuRenderer`]); GLES creates the EGLImage now.
    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<(), BackendError> {
        match &mut self.renderer {
            HeadlessRenderer::Pixman(r) => Ok(r.check_dmabuf(dmabuf)?),
            HeadlessRenderer::Gles(gpu) => {
                gpu.check_dmabuf(dmabuf).map_err(BackendError::GlesImport)
            }
        }
    }

    /// The frame clock of output `index`.
    pub fn frame_clock_mut(&mut self, index: usize) -> Option<&mut FrameClock> {
        self.outputs.get_mut(index).map(|o| &mut o.clock)
    }

    /// Frames of output `index` that held back a window whose buffer was not readable
    /// without blocking.
    pub fn held_back_frames(&self, index: usize) -> u64 {
        self.outputs.get(index).map_or(0, |o| o.held_back_frames)
    }

    /// The buffer holding the last rendered frame of output `index` (for screenshots).
    pub fn framebuffer(&self, index: usize) -> Option<&HeadlessTarget> {
        self.outputs.get(index).map(|o| &o.framebuffer)
    }

    /// Render output `index`.
    pub fn render(
        &mut self,
        index: usize,
        space: &Space<Window>,
    ) -> Result<RenderedFrame, BackendError> {
        let Self {
            renderer, outputs, ..
        } = self;
        let out = outputs
            .get_mut(index)
            .ok_or(BackendError::NoSuchOutput(index))?;
        let name = out.output.name();
        // One persistent buffer: it holds the previous frame (age 1) after the first.
        let age = usize::from(out.rendered_once);
        let frame = match (renderer, &mut out.framebuffer) {
            (HeadlessRenderer::Pixman(renderer), HeadlessTarget::Pixman(image)) => {
                let mut target =
                    renderer
                        .pixman()
                        .bind(image)
                        .map_err(|source| BackendError::Bind {
                            output: name.clone(),
                            source,
                        })?;
                // Windows whose dma-bufs a client fenced again after they were committed
                // would block pixman's DMA_BUF_IOCTL_SYNC: they sit this frame out.
                let (elements, held_back) = ready_render_elements(renderer, space, &out.output);
                if held_back > 0 && out.held_back == 0 {
                    tracing::warn!(
                        output = %name,
                        windows = held_back,
                        "holding back windows whose buffers gained an unsignalled write fence \
                         after commit (would block the CPU renderer)"
                    );
                }
                out.held_back = held_back;
                out.held_back_frames += u64::from(held_back > 0);
                let result = out
                    .damage_tracker
                    .render_output(renderer, &mut target, age, &elements, CLEAR_COLOR)
                    .map_err(|source| BackendError::Render {
                        output: name.clone(),
                        source,
                    })?;
                drop(target);
                // Drop mappings of client buffers that are gone (pixman caches dma-buf
                // mmaps).
                if let Err(err) = renderer.cleanup_texture_cache() {
                    tracing::debug!(%err, "texture cache cleanup");
                }
                result
            }
            (HeadlessRenderer::Gles(gpu), HeadlessTarget::Gles { dmabuf, .. }) => {
                let renderer = gpu.gles();
                // The GPU waits for client buffers' implicit fences itself: nothing
                // blocks the CPU, so no window has to sit out.
                let elements =
                    space_render_elements::<_, Window, _>(renderer, [space], &out.output, 1.0)
                        .map_err(|e| BackendError::GlesRender {
                            output: name.clone(),
                            message: format!("render elements: {e}"),
                        })?;
                let mut target = renderer
                    .bind(dmabuf)
                    .map_err(|e| BackendError::GlesRender {
                        output: name.clone(),
                        message: format!("binding the GBM buffer: {e}"),
                    })?;
                let result = out
                    .damage_tracker
                    .render_output(renderer, &mut target, age, &elements, CLEAR_COLOR)
                    .map_err(|e| BackendError::GlesRender {
                        output: name.clone(),
                        message: e.to_string(),
                    })?;
                drop(target);
                if let Err(err) = renderer.cleanup_texture_cache() {
                    tracing::debug!(%err, "texture cache cleanup");
                }
                result
            }
            _ => {
                return Err(BackendError::GlesRender {
                    output: name,
                    message: "the output's buffer belongs to another renderer".into(),
                })
            }
        };
        let RenderOutputResult {
            sync,
            damage,
            states,
        } = frame;
        let damaged = damage.is_some_and(|d| !d.is_empty());
        out.rendered_once = true;
        // GLES: the render may still run; its sync point is the render fence, handed to
        // the fence bridge as is (exported as a sync_file, or waited for off the loop).
        Ok(RenderedFrame {
            output: out.output.clone(),
            damaged,
            states,
            sync,
        })
    }
}

/// The buffer output `config` is composited into, from `renderer`.
fn create_target(
    renderer: &mut HeadlessRenderer,
    config: &OutputConfig,
) -> Result<HeadlessTarget, BackendError> {
    let size: Size<i32, Physical> = config.size.into();
    match renderer {
        HeadlessRenderer::Pixman(renderer) => renderer
            .pixman()
            .create_buffer(
                Fourcc::Xrgb8888,
                size.to_logical(1).to_buffer(1, Transform::Normal),
            )
            .map(HeadlessTarget::Pixman)
            .map_err(|source| BackendError::Offscreen {
                output: config.name.clone(),
                source,
            }),
        HeadlessRenderer::Gles(gpu) => {
            let (width, height) = match (u32::try_from(size.w), u32::try_from(size.h)) {
                (Ok(w), Ok(h)) => (w, h),
                _ => {
                    return Err(BackendError::GbmBuffer {
                        output: config.name.clone(),
                        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                    })
                }
            };
            let (buffer, dmabuf) =
                gpu.allocate(width, height, Fourcc::Xrgb8888)
                    .map_err(|source| BackendError::GbmBuffer {
                        output: config.name.clone(),
                        source,
                    })?;
            Ok(HeadlessTarget::Gles {
                dmabuf,
                _buffer: buffer,
            })
        }
    }
}
