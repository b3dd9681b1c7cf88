//! `zwp_linux_surface_synchronization_v1`: per-surface acquire fence and release request.
//!
//! Both are double-buffered ([`ExplicitCachedState`]). The acquire fence is validated when
//! it arrives (`invalid_fence`, `duplicate_fence`) and counted on the held-fence gauges;
//! the pre-commit hook checks the buffer (`no_buffer`, `unsupported_buffer`) and turns
//! the fence into a wait.
//!
//! ```no_run
//! # use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
//! use smithay::wayland::compositor::with_states;
//! use syncbridge_protocols::explicit_sync::ExplicitCachedState;
//! # fn demo(surface: &WlSurface) {
//! let fence_pending = with_states(surface, |states| {
//!     states.cached_state.get::<ExplicitCachedState>().pending().acquire.is_some()
//! });
//! # }
//! ```

use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::{
    zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1,
    zwp_linux_surface_synchronization_v1::{self, ZwpLinuxSurfaceSynchronizationV1},
};
use smithay::reexports::wayland_server::{
    protocol::wl_surface::WlSurface, Client, DataInit, Dispatch, DisplayHandle, Resource, Weak,
};
use smithay::wayland::compositor::{with_states, Cacheable};
use syncbridge_bridge::sync_file::SyncFile;

use super::ExplicitSyncState;
use crate::gauge::HeldSyncFile;
use crate::release_target::ExplicitRelease;
use crate::surface_state::{with_surface_sync_in, Extension};
use crate::sync_bridge::SyncBridgeHandler;

/// Double-buffered explicit-sync-v1 state of a surface.
#[derive(Debug, Default)]
pub struct ExplicitCachedState {
    /// The acquire fence for the buffer attached in the same commit.
    pub acquire: Option<HeldSyncFile>,
    /// The release object for the buffer attached in the same commit.
    pub release: Option<ExplicitRelease>,
}

impl Cacheable for ExplicitCachedState {
    fn commit(&mut self, _dh: &DisplayHandle) -> Self {
        Self {
            acquire: self.acquire.take(),
            release: self.release.take(),
        }
    }

    fn merge_into(self, into: &mut Self, _dh: &DisplayHandle) {
        // A newer commit's state replaces an older, never applied one. A replaced release
        // object gets `immediate_release` from its Drop: that buffer was never read.
        if self.acquire.is_some() || self.release.is_some() {
            into.acquire = self.acquire;
            into.release = self.release;
        }
    }
}

/// User data of a `zwp_linux_surface_synchronization_v1` object.
#[derive(Debug)]
pub struct ExplicitSurfaceData {
    surface: Weak<WlSurface>,
}

impl ExplicitSurfaceData {
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

impl<D> Dispatch<ZwpLinuxSurfaceSynchronizationV1, ExplicitSurfaceData, D> for ExplicitSyncState
where
    D: Dispatch<ZwpLinuxSurfaceSynchronizationV1, ExplicitSurfaceData>
        + Dispatch<ZwpLinuxBufferReleaseV1, ()>
        + SyncBridgeHandler,
{
    fn request(
        state: &mut D,
        client: &Client,
        resource: &ZwpLinuxSurfaceSynchronizationV1,
        request: zwp_linux_surface_synchronization_v1::Request,
        data: &ExplicitSurfaceData,
        dh: &DisplayHandle,
        data_init: &mut DataInit<'_, D>,
    ) {
        use zwp_linux_surface_synchronization_v1::{Error, Request};
        let surface = data.surface();
        match request {
            Request::Destroy => {
                let Some(surface) = surface else { return };
                with_states(&surface, |states| {
                    with_surface_sync_in(states, |s| {
                        if matches!(&s.extension, Extension::Explicit(obj) if obj == resource) {
                            s.extension = Extension::None;
                        }
                    });
                    // "Any fence set since the last commit is discarded"; release objects
                    // are not affected and stay with the next commit.
                    states
                        .cached_state
                        .get::<ExplicitCachedState>()
                        .pending()
                        .acquire = None;
                });
            }
            Request::SetAcquireFence { fd } => {
                let Some(surface) = surface else {
                    drop(fd);
                    state.sync_bridge().note_protocol_error();
                    resource.post_error(Error::NoSurface, "the wl_surface was destroyed");
                    return;
                };
                let duplicate = with_states(&surface, |states| {
                    states
                        .cached_state
                        .get::<ExplicitCachedState>()
                        .pending()
                        .acquire
                        .is_some()
                });
                if duplicate {
                    drop(fd);
                    state.sync_bridge().note_protocol_error();
                    resource.post_error(
                        Error::DuplicateFence,
                        "an acquire fence is already set for this commit",
                    );
                    return;
                }
                let fence = match SyncFile::from_fd(fd) {
                    Ok(fence) => fence,
                    Err(err) => {
                        state.sync_bridge().note_protocol_error();
                        resource.post_error(Error::InvalidFence, format!("not a sync_file: {err}"));
                        return;
                    }
                };
                // The fence stays open until its commit is applied or dropped: it counts on
                // the client's budget from now on.
                let bridge = state.sync_bridge();
                if !bridge.charge_or_disconnect(dh, client, 1, 1) {
                    return;
                }
                let budget = bridge.client_budget(dh, &client.id()).held;
                let held = HeldSyncFile::new_for(fence, bridge.held_gauges(), &budget);
                with_states(&surface, |states| {
                    states
                        .cached_state
                        .get::<ExplicitCachedState>()
                        .pending()
                        .acquire = Some(held);
                });
            }
            Request::GetRelease { release } => {
                let object = data_init.init(release, ());
                let Some(surface) = surface else {
                    state.sync_bridge().note_protocol_error();
                    resource.post_error(Error::NoSurface, "the wl_surface was destroyed");
                    return;
                };
                let duplicate = with_states(&surface, |states| {
                    let mut cached = states.cached_state.get::<ExplicitCachedState>();
                    let pending = cached.pending();
                    if pending.release.is_some() {
                        true
                    } else {
                        pending.release = Some(ExplicitRelease::new(object));
                        false
                    }
                });
                if duplicate {
                    state.sync_bridge().note_protocol_error();
                    resource.post_error(
                        Error::DuplicateRelease,
                        "a release object is already requested for this commit",
                    );
                }
            }
            _ => {}
        }
    }
}
