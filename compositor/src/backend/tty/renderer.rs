//! What composites on the tty backend, and the buffers it composites into.
//!
//! GLES ([`GpuRenderer`]) on the KMS device's own GPU, with GBM buffers, when EGL and
//! GBM can be set up on a hardware driver; pixman ([`CpuRenderer`]) on KMS dumb buffers
//! otherwise. `--renderer` forces either. The choice and its reason are logged once at
//! start-up and kept for the stats.
//!
//! With GLES a composited frame's render fence becomes the primary plane's
//! `IN_FENCE_FD` ([`Composited::in_fence`]): the kernel, not the compositor, waits for
//! the render before scanning out.
//!
//! GLES never runs on the KMS file itself: it gets a file of its own on the same GPU
//! (the device's render node, else the card node opened again), as wlroots' renderer
//! does. GEM handles belong to a file, and a PRIME import of a dma-buf the file already
//! knows returns the handle it returned before: if Mesa's GBM shared the KMS file, a
//! client buffer imported both for scanout (by us) and for texturing (by Mesa) would get
//! one handle, and whichever side closed it first would take the buffer from the other
//! (GL then samples nothing: an all-transparent window). Our composition buffers reach
//! KMS as dma-bufs, imported into the KMS file through our counted table of handles.

use smithay::{
    backend::{
        allocator::{
            dmabuf::{AsDmabuf, Dmabuf},
            dumb::{DumbAllocator, DumbBuffer},
            gbm::GbmBuffer,
            Allocator, Format, Fourcc, Modifier,
        },
        drm::{
            dumb::{framebuffer_from_dumb_buffer, DumbFramebuffer},
            DrmDeviceFd, DrmNode, NodeType,
        },
        renderer::{
            damage::{OutputDamageTracker, RenderOutputResult},
            element::{Element as _, Id, RenderElementStates},
            gles::GlesRenderer,
            sync::SyncPoint,
            Bind, Renderer,
        },
    },
    desktop::{space::space_render_elements, Space, Window},
    output::Output,
    reexports::drm::control::framebuffer,
};
use syncbridge_bridge::SyncFile;

use super::{
    kms::{device::KmsDevice, gem::GemHandles, planes::ClientFb},
    scene_snapshot::{LastScene, SceneSnapshot},
    TtyError, CLEAR_COLOR,
};
use crate::backend::{
    cpu_renderer::{self, CpuRenderer},
    gpu_renderer::{self, GpuInfo, GpuRenderer, GpuSetupError, RendererChoice},
};

/// The renderer in use.
#[derive(Debug)]
enum Which {
    Pixman(CpuRenderer),
    Gles(Box<GpuRenderer>),
}

/// The tty backend's renderer and the allocator of its composition buffers.
#[derive(Debug)]
pub struct TtyRenderer {
    which: Which,
    dumb: DumbAllocator,
    /// The KMS file's handles of our GBM buffers (GLES), imported as dma-bufs.
    gem: GemHandles,
    /// Why this renderer runs (for the log and the stats).
    pub reason: String,
}

/// Framebuffer of a composition buffer (removed before the buffer: field order in
/// [`Slot`]).
#[derive(Debug)]
pub enum SlotFb {
    /// Of a KMS dumb buffer (pixman).
    Dumb(DumbFramebuffer),
    /// Of a GBM buffer object (GLES), imported into the KMS file as a dma-buf.
    Gbm(ClientFb),
}

impl SlotFb {
    /// The framebuffer's handle.
    pub fn handle(&self) -> framebuffer::Handle {
        match self {
            SlotFb::Dumb(fb) => *fb.as_ref(),
            SlotFb::Gbm(fb) => fb.fb,
        }
    }
}

/// The memory of a composition buffer.
#[derive(Debug)]
pub enum SlotBuffer {
    /// A KMS dumb buffer.
    Dumb(DumbBuffer),
    /// A GBM buffer object.
    Gbm(GbmBuffer),
}

/// One of an output's composition buffers.
#[derive(Debug)]
pub struct Slot {
    /// The framebuffer (removed before the buffer: field order).
    pub fb: SlotFb,
    /// The same memory as a dma-buf, for the renderer to bind (its own fds).
    pub dmabuf: Dmabuf,
    /// The buffer.
    pub _buffer: SlotBuffer,
    /// `render_count` of the output when last rendered into (0: never).
    pub rendered_at: u64,
}

/// A composited frame.
#[derive(Debug)]
pub struct Composited {
    /// The target was drawn into (false: skipped, nothing new since the last cycle).
    pub rendered: bool,
    /// The damage tracker saw changes.
    pub damaged: bool,
    /// Which elements were drawn, and how.
    pub states: RenderElementStates,
    /// The render's completion (already reached for pixman).
    pub sync: SyncPoint,
    /// The render's fence for `IN_FENCE_FD`, when it is still running and EGL exports it.
    pub in_fence: Option<SyncFile>,
    /// The render had no exportable fence and was waited for on the CPU before the
    /// commit (GLES without `EGL_ANDROID_native_fence_sync`).
    pub cpu_waited: bool,
    /// Windows were left out because their buffers were not readable yet: a later cycle
    /// must look again even if nothing wakes the output.
    pub held_back: bool,
}

impl Composited {
    /// Nothing drawn: the slot on screen already shows `states`.
    fn skipped(states: RenderElementStates) -> Self {
        Self {
            rendered: false,
            damaged: false,
            states,
            sync: SyncPoint::signaled(),
            in_fence: None,
            cpu_waited: false,
            held_back: false,
        }
    }
}

impl TtyRenderer {
    /// Pick the renderer for `device` as `choice` asks.
    pub fn new(choice: RendererChoice, device: &KmsDevice) -> Result<Self, TtyError> {
        let dumb = DumbAllocator::new(device.fd.clone());
        let gles = |allow_software| {
            let (fd, path) = own_gpu_file(device)?;
            GpuRenderer::new(fd, &path, allow_software).map(Box::new)
        };
        let pixman = || CpuRenderer::new().map_err(|e| TtyError::Pixman(e.to_string()));
        let (which, reason) = match choice {
            RendererChoice::Pixman => (
                Which::Pixman(pixman()?),
                "requested with --renderer pixman".to_string(),
            ),
            RendererChoice::Gles => match gles(true) {
                Ok(gpu) => (
                    Which::Gles(gpu),
                    "requested with --renderer gles".to_string(),
                ),
                Err(err) => return Err(TtyError::Gles(err)),
            },
            RendererChoice::Auto => match gles(false) {
                Ok(gpu) => (
                    Which::Gles(gpu),
                    "--renderer auto: EGL and GBM work on a hardware driver".to_string(),
                ),
                Err(err) if err.is_software() => (
                    Which::Pixman(pixman()?),
                    format!("--renderer auto: {err}: pixman is cheaper there"),
                ),
                Err(err) => (
                    Which::Pixman(pixman()?),
                    format!("--renderer auto: GLES unavailable ({err}); falling back to pixman"),
                ),
            },
        };
        Ok(Self {
            which,
            dumb,
            gem: GemHandles::new(device.fd.clone()),
            reason,
        })
    }

    /// "gles" or "pixman".
    pub fn name(&self) -> &'static str {
        match self.which {
            Which::Pixman(_) => "pixman",
            Which::Gles(_) => "gles",
        }
    }

    /// The GPU it runs on, for GLES.
    pub fn gpu_info(&self) -> Option<&GpuInfo> {
        match &self.which {
            Which::Gles(gpu) => Some(&gpu.info),
            Which::Pixman(_) => None,
        }
    }

    /// The GLES renderer, for GL read-back.
    pub fn gles(&mut self) -> Option<&mut GlesRenderer> {
        match &mut self.which {
            Which::Gles(gpu) => Some(gpu.gles()),
            Which::Pixman(_) => None,
        }
    }

    /// Formats the renderer imports from clients.
    pub fn dmabuf_formats(&self) -> Vec<Format> {
        match &self.which {
            Which::Pixman(r) => r.dmabuf_formats(),
            Which::Gles(gpu) => gpu.dmabuf_formats(),
        }
    }

    /// Check a client dma-buf at creation.
    pub fn check_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<(), crate::backend::BackendError> {
        match &mut self.which {
            Which::Pixman(r) => Ok(r.check_dmabuf(dmabuf)?),
            Which::Gles(gpu) => gpu
                .check_dmabuf(dmabuf)
                .map_err(crate::backend::BackendError::GlesImport),
        }
    }

    /// A composition buffer of `width` x `height` for `device`, with its framebuffer.
    pub fn allocate_slot(
        &mut self,
        device: &KmsDevice,
        width: u32,
        height: u32,
    ) -> Result<Slot, TtyError> {
        let path = device.path.display().to_string();
        let kms = |what: &'static str| {
            let path = path.clone();
            move |source: std::io::Error| TtyError::Kms { what, path, source }
        };
        match &mut self.which {
            Which::Pixman(_) => {
                let buffer = self
                    .dumb
                    .create_buffer(width, height, Fourcc::Xrgb8888, &[Modifier::Linear])
                    .map_err(kms("allocating a dumb buffer"))?;
                let fb = framebuffer_from_dumb_buffer(&device.fd, &buffer, true)
                    .map_err(|e| TtyError::Framebuffer(e.to_string()))?;
                let dmabuf = buffer.export().map_err(kms("exporting a dumb buffer"))?;
                Ok(Slot {
                    fb: SlotFb::Dumb(fb),
                    dmabuf,
                    _buffer: SlotBuffer::Dumb(buffer),
                    rendered_at: 0,
                })
            }
            Which::Gles(gpu) => {
                let (buffer, dmabuf) = gpu
                    .allocate(width, height, Fourcc::Xrgb8888)
                    .map_err(kms("allocating a GBM buffer"))?;
                let fb = super::kms::planes::import(&device.fd, &self.gem, &dmabuf)
                    .map_err(|e| TtyError::Framebuffer(e.to_string()))?;
                Ok(Slot {
                    fb: SlotFb::Gbm(fb),
                    dmabuf,
                    _buffer: SlotBuffer::Gbm(buffer),
                    rendered_at: 0,
                })
            }
        }
    }

    /// Composite `space` as `output` shows it into `target` (a slot's dma-buf, `age`
    /// frames old; 0: unknown), leaving out the elements in `on_planes` (surfaces an
    /// overlay plane shows).
    ///
    /// `last` is what the last cycle composed ([`scene_snapshot`]): `tracker` adds the
    /// damage the target missed (its age), which after a frame with damage is never empty
    /// for the other slot, so without that comparison every frame would be drawn and
    /// committed twice, the second time unchanged. With `may_skip` (the output shows a
    /// composited slot that is current, no modeset) nothing is drawn when the scene is
    /// the same as the last cycle's.
    ///
    /// [`scene_snapshot`]: super::scene_snapshot
    #[allow(clippy::too_many_arguments)]
    pub fn composite(
        &mut self,
        target: &mut Dmabuf,
        tracker: &mut OutputDamageTracker,
        last: &mut Option<LastScene>,
        may_skip: bool,
        age: usize,
        space: &Space<Window>,
        output: &Output,
        on_planes: &[Id],
    ) -> Result<Composited, TtyError> {
        let name = output.name();
        match &mut self.which {
            Which::Pixman(renderer) => {
                // Windows whose dma-bufs were fenced again after commit would block
                // pixman's DMA_BUF_IOCTL_SYNC (and with it every output): they sit out.
                let (mut elements, held_back) =
                    cpu_renderer::ready_render_elements(renderer, space, output);
                elements.retain(|e| !on_planes.contains(e.id()));
                if held_back > 0 {
                    tracing::debug!(output = %name, windows = held_back, "windows held back: buffers not readable yet");
                }
                let snapshot = SceneSnapshot::of(output, &elements);
                if let Some(states) = unchanged(last, may_skip, &snapshot) {
                    return Ok(Composited {
                        held_back: held_back > 0,
                        ..Composited::skipped(states)
                    });
                }
                // Bound only to draw: binding syncs the dma-buf for CPU access.
                let mut fb = renderer
                    .pixman()
                    .bind(target)
                    .map_err(|e| TtyError::Render(format!("pixman: binding {name}: {e}")))?;
                let RenderOutputResult {
                    damage,
                    states,
                    sync,
                } = tracker
                    .render_output(renderer, &mut fb, age, &elements, CLEAR_COLOR)
                    .map_err(|e| TtyError::Render(format!("pixman: rendering {name}: {e}")))?;
                let damaged = damage.is_some_and(|d| !d.is_empty());
                drop(fb);
                *last = Some(LastScene {
                    snapshot,
                    states: states.clone(),
                });
                if let Err(err) = renderer.cleanup_texture_cache() {
                    tracing::debug!(%err, "texture cache cleanup");
                }
                Ok(Composited {
                    rendered: true,
                    damaged,
                    states,
                    sync,
                    in_fence: None,
                    cpu_waited: false,
                    held_back: held_back > 0,
                })
            }
            Which::Gles(gpu) => {
                let renderer = gpu.gles();
                // The GPU waits for client buffers' implicit fences itself: nothing
                // blocks the CPU here, so no window has to sit out.
                let mut elements =
                    space_render_elements::<_, Window, _>(renderer, [space], output, 1.0)
                        .map_err(|e| TtyError::Render(format!("gles: elements of {name}: {e}")))?;
                elements.retain(|e| !on_planes.contains(e.id()));
                let snapshot = SceneSnapshot::of(output, &elements);
                if let Some(states) = unchanged(last, may_skip, &snapshot) {
                    return Ok(Composited::skipped(states));
                }
                let mut fb = renderer
                    .bind(target)
                    .map_err(|e| TtyError::Render(format!("gles: binding {name}: {e}")))?;
                let RenderOutputResult {
                    damage,
                    states,
                    sync,
                } = tracker
                    .render_output(renderer, &mut fb, age, &elements, CLEAR_COLOR)
                    .map_err(|e| TtyError::Render(format!("gles: rendering {name}: {e}")))?;
                let damaged = damage.is_some_and(|d| !d.is_empty());
                drop(fb);
                *last = Some(LastScene {
                    snapshot,
                    states: states.clone(),
                });
                if let Err(err) = renderer.cleanup_texture_cache() {
                    tracing::debug!(%err, "texture cache cleanup");
                }
                let in_fence = gpu_renderer::render_fence_fd(&sync).and_then(|fd| {
                    SyncFile::from_fd(fd)
                        .map_err(|err| tracing::warn!(%err, "render fence is not a sync_file"))
                        .ok()
                });
                // No fence for the kernel to wait on (EGL without native fences, or the
                // export failed): the commit must not scan out a render in progress, so
                // wait for it here. llvmpipe is the case; hardware drivers export.
                let mut cpu_waited = false;
                if in_fence.is_none() && !sync.is_reached() {
                    cpu_waited = true;
                    if let Err(err) = sync.wait() {
                        tracing::debug!(?err, "waiting for the render before the commit");
                    }
                }
                Ok(Composited {
                    rendered: true,
                    damaged,
                    states,
                    sync,
                    in_fence,
                    cpu_waited,
                    held_back: false,
                })
            }
        }
    }
}

/// The last composition's render states if the cycle may skip its composition and the
/// scene is the same as that composition's (see [`TtyRenderer::composite`]).
fn unchanged(
    last: &Option<LastScene>,
    may_skip: bool,
    snapshot: &SceneSnapshot,
) -> Option<RenderElementStates> {
    last.as_ref()
        .filter(|l| may_skip && l.snapshot == *snapshot)
        .map(|l| l.states.clone())
}

/// A file of its own on `device`'s GPU for GBM and EGL (see the module docs): its render
/// node, else its card node opened again (not master; rendering needs none). The
/// returned fd is owned by the caller (the renderer keeps it for its lifetime).
fn own_gpu_file(device: &KmsDevice) -> Result<(DrmDeviceFd, std::path::PathBuf), GpuSetupError> {
    let render = device
        .node
        .and_then(|n| n.node_with_type(NodeType::Render))
        .and_then(Result::ok)
        .and_then(|n: DrmNode| n.dev_path());
    let path = render.unwrap_or_else(|| device.path.clone());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| GpuSetupError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let fd = DrmDeviceFd::new(smithay::utils::DeviceFd::from(std::os::fd::OwnedFd::from(
        file,
    )));
    Ok((fd, path))
}
