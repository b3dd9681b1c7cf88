//! `zwp_linux_explicit_synchronization_v1`, server side, on bridge fences.
//!
//! Clients hand an acquire fence (a `sync_file` fd, checked with `SyncFile::from_fd`) per
//! commit and may ask for a `zwp_linux_buffer_release_v1` per commit. syncbridge waits for
//! the acquire fence without blocking anything else, and answers the release object with
//! `fenced_release` carrying the merged fence of every read the compositor made of that
//! buffer (renderer fence, display out-fence), or `immediate_release` when nothing is left
//! to wait for. A commit without an acquire fence falls back to implicit sync (the
//! dma-buf's fences are exported at commit time).
//!
//! Protocol errors raised: `synchronization_exists` (also when the surface already has a
//! linux-drm-syncobj-v1 object), `invalid_fence`, `duplicate_fence`, `duplicate_release`,
//! `no_surface`, `unsupported_buffer` (an acquire fence on a non-dma-buf buffer) and
//! `no_buffer`.
//!
//! Version 2 is advertised: it adds support for opaque EGL (`wl_drm`) buffers, which a
//! compositor using syncbridge does not offer, so the promise is vacuous.
//!
//! ```no_run
//! # use syncbridge_protocols::{SyncBridge, SyncBridgeHandler, SyncBridgeDispatch};
//! # fn demo<D: SyncBridgeHandler + SyncBridgeDispatch>(bridge: &mut SyncBridge<D>, dh: &smithay::reexports::wayland_server::DisplayHandle) {
//! // Created with the other globals by SyncBridge::create_globals.
//! bridge.create_globals(dh);
//! # }
//! ```

mod release;
mod surface;

use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::{
    zwp_linux_explicit_synchronization_v1::{self, ZwpLinuxExplicitSynchronizationV1},
    zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1,
};
use smithay::reexports::wayland_server::{
    backend::GlobalId, Client, DataInit, Dispatch, DisplayHandle, GlobalDispatch, New, Resource,
};

use crate::surface_state::{with_surface_sync, Extension};
use crate::sync_bridge::SyncBridgeHandler;

pub use surface::{ExplicitCachedState, ExplicitSurfaceData};

/// Protocol version we advertise.
pub const VERSION: u32 = 2;

/// Global data of the `zwp_linux_explicit_synchronization_v1` global.
#[derive(Debug)]
pub struct ExplicitSyncGlobalData(());

/// State of the zwp_linux_explicit_synchronization_v1 global.
#[derive(Debug)]
pub struct ExplicitSyncState {
    global: GlobalId,
}

impl ExplicitSyncState {
    pub(crate) fn new<D>(dh: &DisplayHandle) -> Self
    where
        D: GlobalDispatch<ZwpLinuxExplicitSynchronizationV1, ExplicitSyncGlobalData> + 'static,
    {
        let global = dh.create_global::<D, ZwpLinuxExplicitSynchronizationV1, _>(
            VERSION,
            ExplicitSyncGlobalData(()),
        );
        Self { global }
    }

    /// The global's id.
    pub fn global(&self) -> GlobalId {
        self.global.clone()
    }
}

impl<D> GlobalDispatch<ZwpLinuxExplicitSynchronizationV1, ExplicitSyncGlobalData, D>
    for ExplicitSyncState
where
    D: Dispatch<ZwpLinuxExplicitSynchronizationV1, ()> + 'static,
{
    fn bind(
        _state: &mut D,
        _dh: &DisplayHandle,
        _client: &Client,
        resource: New<ZwpLinuxExplicitSynchronizationV1>,
        _global_data: &ExplicitSyncGlobalData,
        data_init: &mut DataInit<'_, D>,
    ) {
        data_init.init(resource, ());
    }
}

impl<D> Dispatch<ZwpLinuxExplicitSynchronizationV1, (), D> for ExplicitSyncState
where
    D: Dispatch<ZwpLinuxExplicitSynchronizationV1, ()>
        + Dispatch<ZwpLinuxSurfaceSynchronizationV1, ExplicitSurfaceData>
        + SyncBridgeHandler,
{
    fn request(
        state: &mut D,
        _client: &Client,
        resource: &ZwpLinuxExplicitSynchronizationV1,
        request: zwp_linux_explicit_synchronization_v1::Request,
        _data: &(),
        _dh: &DisplayHandle,
        data_init: &mut DataInit<'_, D>,
    ) {
        use zwp_linux_explicit_synchronization_v1::{Error, Request};
        match request {
            Request::GetSynchronization { id, surface } => {
                let taken =
                    with_surface_sync(&surface, |s| !matches!(s.extension, Extension::None));
                let obj = data_init.init(id, ExplicitSurfaceData::new(&surface));
                if taken != Some(false) {
                    state.sync_bridge().note_protocol_error();
                    resource.post_error(
                        Error::SynchronizationExists,
                        "the surface already has an explicit-sync or syncobj object",
                    );
                    return;
                }
                with_surface_sync(&surface, |s| s.extension = Extension::Explicit(obj));
                crate::sync_bridge::ensure_tracked::<D>(&surface);
            }
            Request::Destroy => {}
            _ => {}
        }
    }
}
