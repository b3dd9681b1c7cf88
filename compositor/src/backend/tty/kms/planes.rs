//! Direct scanout: which client buffer may go on the primary plane, and importing a
//! client dma-buf into the KMS device as a framebuffer (PRIME import, e.g. a vgem
//! buffer into VKMS).
//!
//! A candidate is the only window on the output, whose single surface (no subsurfaces
//! with content) has a dma-buf exactly the size of the mode, at the output's origin,
//! untransformed. It is current, so the fence bridge already waited for its acquire
//! fence (commits are applied only after their blockers cleared).
//!
//! The candidate carries the bridge's [`BufferId`] of that buffer, read together with the
//! buffer itself: the id a plane reads is recorded when the plane is assigned, never looked
//! up by surface later (a fifo or commit-timing barrier released after the commit may
//! apply the surface's next buffer in between).

use std::{collections::HashMap, rc::Rc};

use smithay::{
    backend::{
        allocator::{
            dmabuf::{Dmabuf, WeakDmabuf},
            Buffer as _, Modifier,
        },
        drm::DrmDeviceFd,
        renderer::utils::{
            with_renderer_surface_state, Buffer, CommitCounter, RendererSurfaceStateUserData,
        },
    },
    desktop::{Space, Window},
    output::Output,
    reexports::{
        drm::{
            self,
            buffer::{DrmFourcc, DrmModifier, PlanarBuffer},
            control::{framebuffer, Device as _, FbCmd2Flags},
        },
        wayland_server::protocol::wl_surface::WlSurface,
    },
    utils::Transform,
    wayland::{
        compositor::{with_surface_tree_downward, TraversalAction},
        dmabuf::get_dmabuf,
        seat::WaylandFocus,
    },
};
use syncbridge_protocols::BufferId;

use super::gem::{GemHandle, GemHandles};

/// A client buffer that may be scanned out.
#[derive(Debug)]
pub struct Candidate {
    /// The surface.
    pub surface: WlSurface,
    /// Our clone of its smithay buffer.
    pub buffer: Buffer,
    /// Its dma-buf.
    pub dmabuf: Dmabuf,
    /// The fence bridge's id of this attachment of the buffer (`None`: not tracked).
    pub id: Option<BufferId>,
    /// The surface's commit counter (smithay's; it moves with every attach).
    pub commit: CommitCounter,
}

/// The direct-scanout candidate of `output` (mode size `size`), if any. `buffer_id` is
/// the fence bridge's lookup of a surface's current [`BufferId`]
/// ([`SyncBridge::buffer_id`](syncbridge_protocols::SyncBridge::buffer_id)).
pub fn candidate(
    space: &Space<Window>,
    output: &Output,
    size: (u32, u32),
    buffer_id: &dyn Fn(&WlSurface) -> Option<BufferId>,
) -> Option<Candidate> {
    let geo = space.output_geometry(output)?;
    let mut on_output = space
        .elements()
        .filter(|w| space.element_bbox(w).is_some_and(|b| b.overlaps(geo)));
    let window = on_output.next()?;
    if on_output.next().is_some() {
        return None;
    }
    if space.element_location(window)? != geo.loc {
        return None;
    }
    let surface = window.wl_surface()?.into_owned();
    let c = fits_a_plane(&surface, buffer_id)?;
    ((c.dmabuf.width(), c.dmabuf.height()) == size).then_some(c)
}

/// `surface`'s buffer, if the surface can be shown on a plane as is: it is the only
/// surface of its tree with content (no subsurface shows anything), and its buffer is a
/// dma-buf, untransformed, at scale 1, the surface's own size. It is current, so the
/// fence bridge already waited for its acquire fence (commits are applied only after
/// their blockers cleared).
pub fn fits_a_plane(
    surface: &WlSurface,
    buffer_id: &dyn Fn(&WlSurface) -> Option<BufferId>,
) -> Option<Candidate> {
    // Only the root surface may have content.
    let mut with_content = 0;
    with_surface_tree_downward(
        surface,
        (),
        |_, _, _| TraversalAction::DoChildren(()),
        |_, states, _| {
            // Inside the traversal the surface's state is locked: read it from `states`.
            let has_buffer = states
                .data_map
                .get::<RendererSurfaceStateUserData>()
                .and_then(|d| d.lock().ok().map(|st| st.buffer().is_some()))
                .unwrap_or(false);
            if has_buffer {
                with_content += 1;
            }
        },
        |_, _, _| true,
    );
    if with_content != 1 {
        return None;
    }
    let (buffer, fits, commit) = with_renderer_surface_state(surface, |st| {
        let fits = st.buffer_transform() == Transform::Normal
            && st.buffer_scale() == 1
            && st.buffer_size().is_some()
            && st.surface_size() == st.buffer_size();
        (st.buffer().cloned(), fits, st.current_commit())
    })?;
    let buffer = buffer?;
    if !fits {
        return None;
    }
    let dmabuf = get_dmabuf(&buffer).ok()?.clone();
    // The id of exactly this buffer: read in the same dispatch as the buffer, outside
    // the surface's state lock (the lookup takes it).
    let id = buffer_id(surface);
    // Any format: the kernel decides (ADDFB2 refuses formats no plane has, TEST_ONLY
    // what this plane cannot show), and a refused buffer is composited.
    Some(Candidate {
        surface: surface.clone(),
        buffer,
        dmabuf,
        id,
        commit,
    })
}

/// A client dma-buf imported into the KMS device as a framebuffer. Dropping it removes
/// the framebuffer, then gives up its uses of the GEM handles (a handle is closed when no
/// other framebuffer of the same dma-buf uses it; see [`GemHandles`]). Keep it until the
/// flip that stops showing it.
#[derive(Debug)]
pub struct ClientFb {
    /// The framebuffer.
    pub fb: framebuffer::Handle,
    /// Dropped after the framebuffer is removed (fields drop after `Drop::drop`).
    _handles: Vec<GemHandle>,
    dev: DrmDeviceFd,
}

impl Drop for ClientFb {
    fn drop(&mut self) {
        if let Err(err) = self.dev.destroy_framebuffer(self.fb) {
            tracing::debug!(%err, "removing a client framebuffer");
        }
    }
}

struct Planar<'a> {
    dmabuf: &'a Dmabuf,
    handles: [Option<drm::buffer::Handle>; 4],
    /// Describe the buffer without its modifier (for drivers without modifiers).
    no_modifier: bool,
}

impl PlanarBuffer for Planar<'_> {
    fn size(&self) -> (u32, u32) {
        (self.dmabuf.width(), self.dmabuf.height())
    }
    fn format(&self) -> DrmFourcc {
        self.dmabuf.format().code
    }
    fn modifier(&self) -> Option<DrmModifier> {
        match self.dmabuf.format().modifier {
            _ if self.no_modifier => None,
            Modifier::Invalid => None,
            m => Some(m),
        }
    }
    fn pitches(&self) -> [u32; 4] {
        let mut out = [0; 4];
        for (o, s) in out.iter_mut().zip(self.dmabuf.strides()) {
            *o = s;
        }
        out
    }
    fn handles(&self) -> [Option<drm::buffer::Handle>; 4] {
        self.handles
    }
    fn offsets(&self) -> [u32; 4] {
        let mut out = [0; 4];
        for (o, s) in out.iter_mut().zip(self.dmabuf.offsets()) {
            *o = s;
        }
        out
    }
}

/// Import `dmabuf` into `dev` (PRIME, through `gem`, the table of `dev`'s imported
/// handles) and make a framebuffer of it. On failure the handles taken are given back.
pub fn import(dev: &DrmDeviceFd, gem: &GemHandles, dmabuf: &Dmabuf) -> std::io::Result<ClientFb> {
    let mut handles = [None; 4];
    let mut owned = Vec::new();
    for (i, fd) in dmabuf.handles().enumerate().take(4) {
        let h = gem.import(fd)?;
        handles[i] = Some(h.handle());
        owned.push(h);
    }
    let mut planar = Planar {
        dmabuf,
        handles,
        no_modifier: false,
    };
    let flags = if planar.modifier().is_some() {
        FbCmd2Flags::MODIFIERS
    } else {
        FbCmd2Flags::empty()
    };
    let mut result = dev.add_planar_framebuffer(&planar, flags);
    // Drivers without modifier support (virtio_gpu) refuse the MODIFIERS flag; a linear
    // buffer is what they assume without it.
    if result.is_err() && dmabuf.format().modifier == Modifier::Linear {
        planar.no_modifier = true;
        result = dev.add_planar_framebuffer(&planar, FbCmd2Flags::empty());
    }
    Ok(ClientFb {
        fb: result?,
        _handles: owned,
        dev: dev.clone(),
    })
}

/// Imported client framebuffers, by dma-buf; `None` for buffers the device refused
/// (import or TEST_ONLY failure), so they are composited without asking again. Two
/// `wl_buffer`s on one dma-buf are two entries (two framebuffers) sharing GEM handles.
#[derive(Debug, Default)]
pub struct ClientFbCache {
    entries: HashMap<WeakDmabuf, Option<Rc<ClientFb>>>,
    /// The imported GEM handles of the device (made on first use).
    gem: Option<GemHandles>,
}

impl ClientFbCache {
    /// The framebuffer of `dmabuf`, importing it on first use.
    pub fn get(&mut self, dev: &DrmDeviceFd, dmabuf: &Dmabuf) -> Option<Rc<ClientFb>> {
        let key = dmabuf.weak();
        if let Some(entry) = self.entries.get(&key) {
            return entry.clone();
        }
        let gem = match &self.gem {
            Some(gem) if gem.is_for(dev) => gem.clone(),
            _ => self.gem.insert(GemHandles::new(dev.clone())).clone(),
        };
        let entry = match import(dev, &gem, dmabuf) {
            Ok(fb) => Some(Rc::new(fb)),
            Err(err) => {
                tracing::info!(%err, format = ?dmabuf.format(), "client dma-buf not importable for scanout; compositing it");
                None
            }
        };
        self.entries.insert(key, entry.clone());
        entry
    }

    /// Never try `dmabuf` on a plane again (a TEST_ONLY commit refused it).
    pub fn refuse(&mut self, dmabuf: &Dmabuf) {
        self.entries.insert(dmabuf.weak(), None);
    }

    /// Forget buffers the client destroyed (framebuffers still on screen live on in
    /// their `Rc`s until the flip that stops showing them).
    pub fn cleanup(&mut self) {
        self.entries.retain(|k, _| !k.is_gone());
    }
}
