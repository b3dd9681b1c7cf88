//! The headless backend: virtual outputs rendered offscreen with pixman, each paced
//! by its own calloop timer at the output's refresh interval.
//!
//! pixman reads client dma-bufs through an mmap bracketed by `DMA_BUF_IOCTL_SYNC`,
//! which blocks on unsignalled fences: this backend relies on the fence bridge never
//! letting a commit apply before its acquire fence signalled.

use std::time::Instant;

use smithay::{
    backend::{
        allocator::{dmabuf::Dmabuf, Format, Fourcc},
        renderer::{
            damage::{OutputDamageTracker, RenderOutputResult},
            Bind, Offscreen, Renderer,
        },
    },
    desktop::{Space, Window},
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
    cpu_renderer::{ready_render_elements, CpuRenderer},
    BackendError, RenderedFrame,
};
use crate::{config::OutputConfig, frame_clock::FrameClock, state::State};

/// Background of the outputs (dark grey, opaque).
const CLEAR_COLOR: [f32; 4] = [0.1, 0.1, 0.12, 1.0];

/// One virtual output.
#[derive(Debug)]
pub struct HeadlessOutput {
    output: Output,
    _global: GlobalId,
    framebuffer: Image<'static, 'static>,
    damage_tracker: OutputDamageTracker,
    clock: FrameClock,
    rendered_once: bool,
    timer: Option<RegistrationToken>,
    /// Windows held back in the last frame (buffers not readable without blocking).
    held_back: usize,
    /// Frames that held back at least one window.
    held_back_frames: u64,
}

/// Virtual outputs + pixman.
#[derive(Debug)]
pub struct HeadlessBackend {
    renderer: CpuRenderer,
    outputs: Vec<HeadlessOutput>,
}

impl HeadlessBackend {
    /// Create the outputs (and their wl_output globals), laid out left to right.
    /// `now_monotonic` is CLOCK_MONOTONIC now, to anchor the frame clocks.
    pub fn new(
        dh: &DisplayHandle,
        outputs: &[OutputConfig],
        now_monotonic: std::time::Duration,
    ) -> Result<Self, BackendError> {
        let mut renderer = CpuRenderer::new().map_err(BackendError::RendererInit)?;
        let now = Instant::now();
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

            let size: Size<i32, Physical> = config.size.into();
            let framebuffer = renderer
                .pixman()
                .create_buffer(
                    Fourcc::Xrgb8888,
                    size.to_logical(1).to_buffer(1, Transform::Normal),
                )
                .map_err(|source| BackendError::Offscreen {
                    output: config.name.clone(),
                    source,
                })?;
            created.push(HeadlessOutput {
                damage_tracker: OutputDamageTracker::from_output(&output),
                output,
                _global: global,
                framebuffer,
                clock: FrameClock::new(config.refresh_interval(), now, now_monotonic),
                rendered_once: false,
                timer: None,
                held_back: 0,
                held_back_frames: 0,
            });
        }
        Ok(Self {
            renderer,
            outputs: created,
        })
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

    /// Formats pixman imports (single-plane, linear).
    pub fn dmabuf_formats(&self) -> Vec<Format> {
        self.renderer.dmabuf_formats()
    }

    /// Refuse a client dma-buf at creation if pixman cannot use it. Does not map or
    /// sync it: that would block on the client's fences (see [`CpuRenderer`]).
    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<(), BackendError> {
        Ok(self.renderer.check_dmabuf(dmabuf)?)
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

    /// The last rendered image of output `index` (for screenshots).
    pub fn framebuffer(&self, index: usize) -> Option<&Image<'static, 'static>> {
        self.outputs.get(index).map(|o| &o.framebuffer)
    }

    /// Render output `index`.
    pub fn render(
        &mut self,
        index: usize,
        space: &Space<Window>,
    ) -> Result<RenderedFrame, BackendError> {
        let Self { renderer, outputs } = self;
        let out = outputs
            .get_mut(index)
            .ok_or(BackendError::NoSuchOutput(index))?;
        let name = out.output.name();
        // One persistent buffer: it holds the previous frame (age 1) after the first.
        let age = usize::from(out.rendered_once);
        let mut target = renderer
            .pixman()
            .bind(&mut out.framebuffer)
            .map_err(|source| BackendError::Bind {
                output: name.clone(),
                source,
            })?;
        // Windows whose dma-bufs a client fenced again after they were committed would
        // block pixman's DMA_BUF_IOCTL_SYNC: they sit this frame out.
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
        let RenderOutputResult {
            sync,
            damage,
            states,
        } = out
            .damage_tracker
            .render_output(renderer, &mut target, age, &elements, CLEAR_COLOR)
            .map_err(|source| BackendError::Render {
                output: name,
                source,
            })?;
        let damaged = damage.is_some_and(|d| !d.is_empty());
        out.rendered_once = true;
        // Drop mappings of client buffers that are gone (pixman caches dma-buf mmaps).
        if let Err(err) = renderer.cleanup_texture_cache() {
            tracing::debug!(%err, "texture cache cleanup");
        }
        Ok(RenderedFrame {
            output: out.output.clone(),
            damaged,
            states,
            sync,
        })
    }
}
