//! pixman, with two things smithay's `PixmanRenderer` does not do for us:
//!
//! * client dma-bufs created without an explicit modifier (`DRM_FORMAT_MOD_INVALID`,
//!   what Mesa's kms_swrast and other modifier-less allocators send for dumb buffers)
//!   are imported as linear, through a relabelled duplicate of the same planes;
//! * dma-buf creation is validated without mapping the buffer: pixman's import calls
//!   `DMA_BUF_IOCTL_SYNC`, which blocks on unsignalled fences, so the real import waits
//!   for render time, when the fence bridge has already waited for the acquire fence;
//! * a window whose dma-buf gained a write fence *after* its commit applied (a client
//!   drawing into a buffer the compositor shows) is left out of the frame instead of
//!   stalling every output in `DMA_BUF_IOCTL_SYNC` ([`ready_render_elements`]).

use std::collections::HashMap;

use smithay::{
    backend::{
        allocator::{
            dmabuf::{Dmabuf, DmabufFlags, WeakDmabuf},
            Buffer, Format, Fourcc, Modifier,
        },
        renderer::{
            buffer_type,
            pixman::{PixmanError, PixmanFrame, PixmanRenderer, PixmanTarget, PixmanTexture},
            sync::SyncPoint,
            BufferType, ContextId, DebugFlags, ImportAll, ImportDma, ImportMemWl, Renderer,
            RendererSuper, TextureFilter,
        },
        renderer::{
            element::{surface::WaylandSurfaceRenderElement, AsRenderElements},
            utils::RendererSurfaceStateUserData,
        },
    },
    desktop::{Space, Window},
    output::Output,
    reexports::wayland_server::protocol::wl_buffer::WlBuffer,
    utils::{Buffer as BufferCoords, Physical, Rectangle, Size, Transform},
    wayland::{compositor::SurfaceData, dmabuf::get_dmabuf},
};

/// Why a client dma-buf cannot be used by the CPU renderer.
#[derive(Debug, thiserror::Error)]
pub enum DmabufCheckError {
    /// pixman maps one plane.
    #[error("{0} planes (pixman reads single-plane buffers only)")]
    Planes(usize),
    /// Tiled/compressed layouts cannot be read through a CPU mapping.
    #[error("modifier {0:?} (pixman reads linear buffers only)")]
    Modifier(Modifier),
    /// Format pixman has no code for.
    #[error("format {0:?} not supported by pixman")]
    Format(Fourcc),
    /// Width, height, stride or offset out of range.
    #[error("bad geometry: {0}")]
    Geometry(&'static str),
    /// The buffer is smaller than its layout says.
    #[error("buffer holds {actual} bytes, layout needs {needed}")]
    TooSmall {
        /// Bytes the layout needs.
        needed: u64,
        /// Bytes the dma-buf has.
        actual: u64,
    },
    /// Asking the dma-buf for its size failed.
    #[error("dma-buf size: {0}")]
    Size(#[source] rustix::io::Errno),
}

/// smithay's pixman renderer plus modifier-less dma-buf support.
#[derive(Debug)]
pub struct CpuRenderer {
    inner: PixmanRenderer,
    /// Client dma-bufs without modifier -> the same planes labelled linear. Each entry
    /// lives as long as the client's dma-buf (pixman caches its mapping by the latter).
    linear: HashMap<WeakDmabuf, Dmabuf>,
}

impl CpuRenderer {
    /// A new renderer.
    pub fn new() -> Result<Self, PixmanError> {
        Ok(Self {
            inner: PixmanRenderer::new()?,
            linear: HashMap::new(),
        })
    }

    /// The wrapped pixman renderer (to bind offscreen images).
    pub fn pixman(&mut self) -> &mut PixmanRenderer {
        &mut self.inner
    }

    /// Formats advertised for dma-buf: pixman's single-plane linear formats.
    pub fn dmabuf_formats(&self) -> Vec<Format> {
        self.inner.dmabuf_formats().iter().copied().collect()
    }

    /// Check a client dma-buf at creation without mapping or syncing it.
    pub fn check_dmabuf(&self, dmabuf: &Dmabuf) -> Result<(), DmabufCheckError> {
        if dmabuf.num_planes() != 1 {
            return Err(DmabufCheckError::Planes(dmabuf.num_planes()));
        }
        let format = dmabuf.format();
        if !matches!(format.modifier, Modifier::Linear | Modifier::Invalid) {
            return Err(DmabufCheckError::Modifier(format.modifier));
        }
        let supported = self
            .inner
            .dmabuf_formats()
            .iter()
            .any(|f| f.code == format.code);
        if !supported {
            return Err(DmabufCheckError::Format(format.code));
        }
        let size = dmabuf.size();
        let (Ok(width), Ok(height)) = (u64::try_from(size.w), u64::try_from(size.h)) else {
            return Err(DmabufCheckError::Geometry("negative size"));
        };
        let stride = u64::from(dmabuf.strides().next().unwrap_or(0));
        let offset = u64::from(dmabuf.offsets().next().unwrap_or(0));
        // Every pixman dma-buf format is 16 or 32 bits per pixel.
        if width == 0 || height == 0 || stride < width * 2 {
            return Err(DmabufCheckError::Geometry("stride smaller than a row"));
        }
        let needed = offset + stride * height;
        if let Some(fd) = dmabuf.handles().next() {
            // lseek(SEEK_END) on a dma-buf returns its size without touching its fences.
            let actual = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
                .map_err(DmabufCheckError::Size)?;
            if actual < needed {
                return Err(DmabufCheckError::TooSmall { needed, actual });
            }
        }
        Ok(())
    }

    /// The dma-buf pixman should import for `dmabuf`: itself when linear, else (no
    /// modifier, single plane) a linear-labelled duplicate kept alive alongside it.
    fn importable(&mut self, dmabuf: &Dmabuf) -> Result<Dmabuf, PixmanError> {
        if dmabuf.format().modifier != Modifier::Invalid || dmabuf.num_planes() != 1 {
            return Ok(dmabuf.clone());
        }
        if let Some(linear) = self.linear.get(&dmabuf.weak()) {
            return Ok(linear.clone());
        }
        let linear = relabel_linear(dmabuf).ok_or(PixmanError::ImportFailed)?;
        self.linear.insert(dmabuf.weak(), linear.clone());
        Ok(linear)
    }
}

/// The same planes (fds duplicated) with modifier LINEAR.
fn relabel_linear(dmabuf: &Dmabuf) -> Option<Dmabuf> {
    let format = dmabuf.format();
    let flags = if dmabuf.y_inverted() {
        DmabufFlags::Y_INVERT
    } else {
        DmabufFlags::empty()
    };
    let mut builder = Dmabuf::builder(dmabuf.size(), format.code, Modifier::Linear, flags);
    for (idx, ((fd, offset), stride)) in dmabuf
        .handles()
        .zip(dmabuf.offsets())
        .zip(dmabuf.strides())
        .enumerate()
    {
        let fd = fd.try_clone_to_owned().ok()?;
        builder.add_plane(fd, u32::try_from(idx).ok()?, offset, stride);
    }
    let linear = builder.build()?;
    if let Some(node) = dmabuf.node() {
        linear.set_node(node);
    }
    Some(linear)
}

impl RendererSuper for CpuRenderer {
    type Error = PixmanError;
    type TextureId = PixmanTexture;
    type Framebuffer<'buffer> = PixmanTarget<'buffer>;
    type Frame<'frame, 'buffer>
        = PixmanFrame<'frame, 'buffer>
    where
        'buffer: 'frame;
}

impl Renderer for CpuRenderer {
    fn context_id(&self) -> ContextId<PixmanTexture> {
        self.inner.context_id()
    }

    fn downscale_filter(&mut self, filter: TextureFilter) -> Result<(), PixmanError> {
        self.inner.downscale_filter(filter)
    }

    fn upscale_filter(&mut self, filter: TextureFilter) -> Result<(), PixmanError> {
        self.inner.upscale_filter(filter)
    }

    fn set_debug_flags(&mut self, flags: DebugFlags) {
        self.inner.set_debug_flags(flags)
    }

    fn debug_flags(&self) -> DebugFlags {
        self.inner.debug_flags()
    }

    fn render<'frame, 'buffer>(
        &'frame mut self,
        target: &'frame mut PixmanTarget<'buffer>,
        output_size: Size<i32, Physical>,
        dst_transform: Transform,
    ) -> Result<PixmanFrame<'frame, 'buffer>, PixmanError>
    where
        'buffer: 'frame,
    {
        self.inner.render(target, output_size, dst_transform)
    }

    fn wait(&mut self, sync: &SyncPoint) -> Result<(), PixmanError> {
        self.inner.wait(sync)
    }

    fn cleanup_texture_cache(&mut self) -> Result<(), PixmanError> {
        self.linear.retain(|original, _| !original.is_gone());
        self.inner.cleanup_texture_cache()
    }
}

impl ImportAll for CpuRenderer {
    fn import_buffer(
        &mut self,
        buffer: &WlBuffer,
        surface: Option<&SurfaceData>,
        damage: &[Rectangle<i32, BufferCoords>],
    ) -> Option<Result<PixmanTexture, PixmanError>> {
        match buffer_type(buffer) {
            Some(BufferType::Shm) => Some(self.inner.import_shm_buffer(buffer, surface, damage)),
            Some(BufferType::Dma) => {
                let dmabuf = match get_dmabuf(buffer) {
                    Ok(dmabuf) => dmabuf.clone(),
                    Err(_) => return Some(Err(PixmanError::ImportFailed)),
                };
                Some(
                    self.importable(&dmabuf)
                        .and_then(|d| self.inner.import_dmabuf(&d, Some(damage))),
                )
            }
            _ => None,
        }
    }
}

/// Whether pixman can read every dma-buf `window` shows without blocking: no unsignalled
/// write fence on them (what `DMA_BUF_IOCTL_SYNC(READ)` would wait for; checked with a
/// zero-timeout `poll`). shm buffers are always ready.
pub fn window_buffers_ready(window: &Window) -> bool {
    let mut ready = true;
    window.with_surfaces(|_, states| {
        if !ready {
            return;
        }
        let Some(data) = states.data_map.get::<RendererSurfaceStateUserData>() else {
            return;
        };
        let Ok(data) = data.lock() else {
            return;
        };
        let Some(dmabuf) = data.buffer().and_then(|b| get_dmabuf(b).ok()) else {
            return;
        };
        let planes: Vec<_> = dmabuf.handles().collect();
        match syncbridge_bridge::dmabuf::poll_readable(&planes) {
            Ok(readable) => ready = readable,
            // A poll error means the sync ioctl would fail too, not block.
            Err(err) => tracing::debug!(%err, "polling a client dma-buf"),
        }
    });
    ready
}

/// Render elements of the windows of `space` on `output`, front to back, leaving out
/// windows whose buffers are not [ready](window_buffers_ready). Returns the elements and
/// how many windows were held back.
pub fn ready_render_elements(
    renderer: &mut CpuRenderer,
    space: &Space<Window>,
    output: &Output,
) -> (Vec<WaylandSurfaceRenderElement<CpuRenderer>>, usize) {
    let mut elements = Vec::new();
    let mut held_back = 0;
    let Some(region) = space.output_geometry(output) else {
        return (elements, held_back);
    };
    let scale = output.current_scale().fractional_scale();
    for window in space.elements().rev() {
        let Some(bbox) = space.element_bbox(window) else {
            continue;
        };
        if !region.overlaps(bbox) {
            continue;
        }
        if !window_buffers_ready(window) {
            held_back += 1;
            continue;
        }
        let Some(location) = space.element_location(window) else {
            continue;
        };
        let render_location = location - window.geometry().loc - region.loc;
        elements.extend(AsRenderElements::<CpuRenderer>::render_elements::<
            WaylandSurfaceRenderElement<CpuRenderer>,
        >(
            window,
            renderer,
            render_location.to_physical_precise_round(scale),
            scale.into(),
            1.0,
        ));
    }
    (elements, held_back)
}
