//! Overlay planes: windows whose buffer a plane can show as is go there instead of being
//! composited, and the composition below leaves them out.
//!
//! Which windows: walking the stack from the top, a window whose buffer
//! [fits a plane](super::planes::fits_a_plane), lies wholly on the output, has no popups,
//! and is overlapped by no window above it (popups included). The last rule stands in
//! for `zpos`: every overlay is above the primary plane, and drivers without a `zpos`
//! property give overlays no defined order among themselves, so two overlays never
//! overlap and nothing composited may lie above one. The first such windows get the
//! output's overlay planes, topmost first; the kernel has the last word (TEST_ONLY), and a
//! buffer it refuses on an overlay is composited from then on.
//!
//! A buffer on an overlay plane is a scanout reader like the primary plane's: its
//! [`ClientScanout`] holds the buffer, the bridge's ids and the framebuffer, and the
//! commit that takes it off the plane releases it early with its out-fence (or at the
//! flip), exactly as for the primary plane.

use std::{collections::HashSet, rc::Rc};

use smithay::{
    backend::allocator::{
        dmabuf::{Dmabuf, WeakDmabuf},
        Buffer as _,
    },
    desktop::{PopupManager, Space, Window},
    output::Output,
    reexports::{
        drm::control::{atomic::AtomicModeReq, crtc, framebuffer, plane},
        wayland_server::protocol::wl_surface::WlSurface,
    },
    utils::{Physical, Rectangle, Transform},
    wayland::seat::WaylandFocus,
};
use syncbridge_bridge::SyncFile;
use syncbridge_protocols::BufferId;

use super::{
    atomic::{set_plane, PlaneState},
    planes::{fits_a_plane, Candidate, ClientFb},
    scanout::{ClientScanout, PlaneProps},
};

/// One overlay plane an output owns.
#[derive(Debug)]
pub struct OverlayPlane {
    /// The plane.
    pub handle: plane::Handle,
    /// Its properties.
    pub props: PlaneProps,
    /// The client buffer it shows, where (output coordinates).
    pub shown: Option<(ClientScanout, Rectangle<i32, Physical>)>,
}

impl OverlayPlane {
    /// Whether the plane shows `fb` at `dst` now.
    fn shows(&self, fb: &Rc<ClientFb>, dst: Rectangle<i32, Physical>) -> bool {
        self.shown
            .as_ref()
            .is_some_and(|(s, at)| Rc::ptr_eq(&s.fb, fb) && *at == dst)
    }
}

/// A window that may go on an overlay plane, and where.
#[derive(Debug)]
pub struct OverlayCandidate {
    /// Its buffer.
    pub candidate: Candidate,
    /// Its place on the output, in pixels.
    pub dst: Rectangle<i32, Physical>,
}

/// Up to `max` windows of `output` that may go on overlay planes, topmost first (see the
/// module docs for the rules).
pub fn candidates(
    space: &Space<Window>,
    output: &Output,
    max: usize,
    buffer_id: &dyn Fn(&WlSurface) -> Option<BufferId>,
) -> Vec<OverlayCandidate> {
    let mut found = Vec::new();
    let Some(geo) = space.output_geometry(output) else {
        return found;
    };
    // Logical is physical only at scale 1, untransformed.
    if max == 0
        || output.current_scale().integer_scale() != 1
        || output.current_transform() != Transform::Normal
    {
        return found;
    }
    let mut above: Vec<Rectangle<i32, smithay::utils::Logical>> = Vec::new();
    for window in space.elements().rev() {
        // The bbox includes the window's popups.
        let Some(bbox) = space.element_bbox(window) else {
            continue;
        };
        if !bbox.overlaps(geo) {
            continue;
        }
        let free = !above.iter().any(|a| a.overlaps(bbox));
        above.push(bbox);
        if !free || !geo.contains_rect(bbox) {
            continue;
        }
        let Some(surface) = window.wl_surface() else {
            continue;
        };
        if PopupManager::popups_for_surface(&surface).next().is_some() {
            continue;
        }
        let Some(candidate) = fits_a_plane(&surface, buffer_id) else {
            continue;
        };
        let size = (
            i32::try_from(candidate.dmabuf.width()).unwrap_or(0),
            i32::try_from(candidate.dmabuf.height()).unwrap_or(0),
        );
        // A single surface: the bbox is that surface's rectangle.
        if (bbox.size.w, bbox.size.h) != size {
            continue;
        }
        let loc = bbox.loc - geo.loc;
        found.push(OverlayCandidate {
            candidate,
            dst: Rectangle::new((loc.x, loc.y).into(), size.into()),
        });
        if found.len() == max {
            break;
        }
    }
    found
}

/// What one refresh cycle does with an overlay plane.
#[derive(Debug)]
pub enum Assignment {
    /// It keeps showing what it shows (`reread`: a re-commit of that buffer, a reader
    /// from now on; `commit`: the surface committed since, so the plane is committed
    /// again and the client's feedback follows a flip).
    Keep {
        /// The re-commit's id, when it has a new one.
        reread: Option<BufferId>,
        /// The surface's new commit counter, when it moved.
        commit: Option<smithay::backend::renderer::utils::CommitCounter>,
    },
    /// It shows a new buffer (or the same buffer somewhere else).
    Show {
        /// The window's buffer.
        candidate: Candidate,
        /// Its framebuffer.
        fb: Rc<ClientFb>,
        /// Where.
        dst: Rectangle<i32, Physical>,
    },
    /// It is switched off (it showed something).
    Clear,
    /// It shows nothing and stays so.
    Idle,
}

impl Assignment {
    /// Whether the commit must touch the plane (a re-commit of the buffer it shows is
    /// committed again, so the client's feedback follows a flip).
    pub fn changes(&self) -> bool {
        matches!(
            self,
            Assignment::Show { .. }
                | Assignment::Clear
                | Assignment::Keep {
                    commit: Some(_),
                    ..
                }
        )
    }
}

/// Buffers an overlay plane refused (TEST_ONLY), composited from then on.
#[derive(Debug, Default)]
pub struct Refused(HashSet<WeakDmabuf>);

impl Refused {
    /// Whether `dmabuf` was refused.
    pub fn contains(&self, dmabuf: &Dmabuf) -> bool {
        self.0.contains(&dmabuf.weak())
    }

    /// Never try `dmabuf` on an overlay again.
    pub fn insert(&mut self, dmabuf: &Dmabuf) {
        self.0.insert(dmabuf.weak());
    }

    /// Forget buffers the clients destroyed.
    pub fn cleanup(&mut self) {
        self.0.retain(|k| !k.is_gone());
    }
}

/// Add `assignment` of `plane` (on `crtc`) to `req`; nothing for planes that keep their
/// state. A new buffer gets `in_fence` (compositor-made only: see
/// [`atomic`](super::atomic)).
pub fn add_to_request(
    req: &mut AtomicModeReq,
    crtc: crtc::Handle,
    plane: &OverlayPlane,
    assignment: &Assignment,
    in_fence: Option<&SyncFile>,
) {
    match assignment {
        Assignment::Show { fb, dst, .. } => {
            set_plane(
                req,
                plane.handle,
                &plane.props,
                crtc,
                Some(placed(fb.fb, *dst)),
                in_fence,
            );
        }
        Assignment::Clear => set_plane(req, plane.handle, &plane.props, crtc, None, None),
        Assignment::Keep {
            commit: Some(_), ..
        } => {
            if let Some((shown, dst)) = &plane.shown {
                let state = placed(shown.fb.fb, *dst);
                set_plane(req, plane.handle, &plane.props, crtc, Some(state), in_fence);
            }
        }
        Assignment::Keep { commit: None, .. } | Assignment::Idle => {}
    }
}

/// `fb` shown whole at `dst`.
pub fn placed(fb: framebuffer::Handle, dst: Rectangle<i32, Physical>) -> PlaneState {
    let size = (
        u32::try_from(dst.size.w).unwrap_or(0),
        u32::try_from(dst.size.h).unwrap_or(0),
    );
    PlaneState {
        fb,
        src: size,
        dst: (dst.loc.x, dst.loc.y),
        dst_size: size,
    }
}

/// Plan the overlay planes of one refresh cycle: `candidates` (topmost first) get the
/// planes in order where the kernel accepts them (TEST_ONLY, with the assignments before
/// them); what no candidate takes is switched off. `none` (direct scanout on the
/// primary): no overlays, those in use are switched off; `modeset`: every plane is
/// switched off (another DRM master may have left something there). A buffer the planes refuse is
/// remembered in `refused` and composited from then on; `test_failures` counts them.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    dev: &super::device::KmsDevice,
    fbs: &mut super::planes::ClientFbCache,
    refused: &mut Refused,
    planes: &[OverlayPlane],
    crtc: crtc::Handle,
    candidates: Vec<OverlayCandidate>,
    none: bool,
    modeset: bool,
    test_failures: &mut u64,
) -> Vec<Assignment> {
    let mut plan: Vec<Assignment> = planes
        .iter()
        .map(|p| {
            if modeset || p.shown.is_some() {
                Assignment::Clear
            } else {
                Assignment::Idle
            }
        })
        .collect();
    if modeset || none {
        return plan;
    }
    let mut next = 0;
    for OverlayCandidate { candidate, dst } in candidates {
        let Some(plane) = planes.get(next) else {
            break;
        };
        if refused.contains(&candidate.dmabuf) {
            continue;
        }
        let Some(fb) = fbs.get(&dev.fd, &candidate.dmabuf) else {
            continue;
        };
        if plane.shows(&fb, dst) {
            let (reread, commit) = match &plane.shown {
                Some((s, _)) => (
                    candidate.id.filter(|id| !s.ids.contains(id)),
                    (s.commit != candidate.commit).then_some(candidate.commit),
                ),
                None => (None, None),
            };
            plan[next] = Assignment::Keep { reread, commit };
            next += 1;
            continue;
        }
        let assignment = Assignment::Show { candidate, fb, dst };
        let mut req = AtomicModeReq::new();
        for (p, a) in planes.iter().zip(&plan).take(next) {
            add_to_request(&mut req, crtc, p, a, None);
        }
        add_to_request(&mut req, crtc, plane, &assignment, None);
        match super::atomic::test(&dev.fd, req, false) {
            Ok(()) => {
                plan[next] = assignment;
                next += 1;
            }
            Err(err) => {
                *test_failures += 1;
                if let Assignment::Show { candidate, .. } = &assignment {
                    tracing::info!(%err, format = ?candidate.dmabuf.format(), "TEST_ONLY refused a client buffer on an overlay plane; compositing it");
                    refused.insert(&candidate.dmabuf);
                }
            }
        }
    }
    plan
}
