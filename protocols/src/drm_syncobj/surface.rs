//! `wp_linux_drm_syncobj_surface_v1`: per-surface acquire/release points.
//!
//! The points are double-buffered ([`SyncobjCachedState`] in smithay's cached state). The
//! pre-commit hook of [`SyncBridge`](crate::SyncBridge) checks them
//! ([`crate::commit_check::check_syncobj_commit`]), takes the acquire point into a wait,
//! and leaves the release point to travel with the commit until it is applied.
//!
//! ```no_run
//! # use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
//! use smithay::wayland::compositor::with_states;
//! use syncbridge_protocols::drm_syncobj::SyncobjCachedState;
//! # fn demo(surface: &WlSurface) {
//! let has_pending_release = with_states(surface, |states| {
//!     states.cached_state.get::<SyncobjCachedState>().pending().release.is_some()
//! });
//! # }
//! ```

use smithay::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_surface_v1::{
    self, WpLinuxDrmSyncobjSurfaceV1,
};
use smithay::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1;
use smithay::reexports::wayland_server::{
    protocol::wl_surface::WlSurface, Client, DataInit, Dispatch, DisplayHandle, Resource, Weak,
};
use smithay::wayland::compositor::{with_states, Cacheable};

use super::{point_from_hi_lo, DrmSyncobjState, SyncobjPoint, SyncobjTimelineData};
use crate::release_target::SyncobjRelease;
use crate::surface_state::{with_surface_sync_in, Extension};
use crate::sync_bridge::SyncBridgeHandler;

/// Double-buffered syncobj state of a surface.
#[derive(Debug, Default)]
pub struct SyncobjCachedState {
    /// Point to wait for before the buffer may be read.
    pub acquire: Option<SyncobjPoint>,
    /// Point to signal once the buffer is no longer read.
    pub release: Option<SyncobjRelease>,
}

impl Cacheable for SyncobjCachedState {
    fn commit(&mut self, _dh: &DisplayHandle) -> Self {
        Self {
            acquire: self.acquire.take(),
            release: self.release.take(),
        }
    }

    fn merge_into(self, into: &mut Self, _dh: &DisplayHandle) {
        // A commit with a buffer always carries both points (checked at commit time); it
        // replaces an older, never applied one, whose release point is then signalled by
        // `SyncobjRelease`'s Drop (that buffer was never read).
        if self.acquire.is_some() || self.release.is_some() {
            into.acquire = self.acquire;
            into.release = self.release;
        }
    }
}

/// User data of a `wp_linux_drm_syncobj_surface_v1` object.
#[derive(Debug)]
pub struct SyncobjSurfaceData {
    surface: Weak<WlSurface>,
}

impl SyncobjSurfaceData {
    pub(crate) fn new(surface: &WlSurface) -> Self {
        Self {
            surface: surface.downgrade(),
        }
    }

    /// The surface this object extends, while it lives.
    pub fn surface(&self) -> Option<WlSurface> {
        self.surface.upgrade().ok()
    }
}

fn point_of(timeline: &WpLinuxDrmSyncobjTimelineV1, hi: u32, lo: u32) -> Option<SyncobjPoint> {
    let data = timeline.data::<SyncobjTimelineData>()?;
    Some(SyncobjPoint {
        timeline: data.timeline()?.clone(),
        point: point_from_hi_lo(hi, lo),
    })
}

impl<D> Dispatch<WpLinuxDrmSyncobjSurfaceV1, SyncobjSurfaceData, D> for DrmSyncobjState
where
    D: Dispatch<WpLinuxDrmSyncobjSurfaceV1, SyncobjSurfaceData> + SyncBridgeHandler,
{
    fn request(
        state: &mut D,
        _client: &Client,
        resource: &WpLinuxDrmSyncobjSurfaceV1,
        request: wp_linux_drm_syncobj_surface_v1::Request,
        data: &SyncobjSurfaceData,
        _dh: &DisplayHandle,
        _data_init: &mut DataInit<'_, D>,
    ) {
        use wp_linux_drm_syncobj_surface_v1::{Error, Request};
        let surface = data.surface();
        match request {
            Request::Destroy => {
                let Some(surface) = surface else { return };
                with_states(&surface, |states| {
                    with_surface_sync_in(states, |s| {
                        if matches!(&s.extension, Extension::Syncobj(obj) if obj == resource) {
                            s.extension = Extension::None;
                        }
                    });
                    // Points set since the last commit are discarded (the release point is
                    // signalled on drop: that buffer was never read under this commit).
                    let mut cached = states.cached_state.get::<SyncobjCachedState>();
                    let pending = cached.pending();
                    pending.acquire = None;
                    pending.release = None;
                });
            }
            Request::SetAcquirePoint {
                timeline,
                point_hi,
                point_lo,
            }
            | Request::SetReleasePoint {
                timeline,
                point_hi,
                point_lo,
            } if surface.is_none() => {
                let _ = (timeline, point_hi, point_lo);
                state.sync_bridge().note_protocol_error();
                resource.post_error(Error::NoSurface, "the wl_surface was destroyed");
            }
            Request::SetAcquirePoint {
                timeline,
                point_hi,
                point_lo,
            } => {
                let (Some(surface), Some(point)) =
                    (surface, point_of(&timeline, point_hi, point_lo))
                else {
                    return;
                };
                with_states(&surface, |states| {
                    states
                        .cached_state
                        .get::<SyncobjCachedState>()
                        .pending()
                        .acquire = Some(point);
                });
            }
            Request::SetReleasePoint {
                timeline,
                point_hi,
                point_lo,
            } => {
                let (Some(surface), Some(point)) =
                    (surface, point_of(&timeline, point_hi, point_lo))
                else {
                    return;
                };
                with_states(&surface, |states| {
                    // A replaced, never committed release point is signalled by its Drop.
                    states
                        .cached_state
                        .get::<SyncobjCachedState>()
                        .pending()
                        .release = Some(SyncobjRelease::new(point));
                });
            }
            _ => {}
        }
    }
}
