//! `linux-drm-syncobj-v1` (wp_linux_drm_syncobj_manager_v1), server side, on bridge fences.
//!
//! Unlike smithay's `wayland::drm_syncobj`, the release point of a buffer is not signalled
//! on the CPU when smithay drops the buffer: syncbridge transfers the renderer's or the
//! display's fence into it (`Timeline::import_point`) once the last reader is done, and
//! only signals on the CPU when no fence exists. Timelines are imported on the
//! [`SyncobjDevice`] given in the config, which needs timeline syncobjs and
//! `SYNCOBJ_EVENTFD` but need not be the display device.
//!
//! Protocol errors raised (all the spec defines): `surface_exists` (a second syncobj or an
//! explicit-sync-v1 object on one surface), `invalid_timeline` (an fd that is not a syncobj,
//! or a client over its timeline limit), `no_surface`, `no_buffer`, `no_acquire_point`,
//! `no_release_point`, `conflicting_points` and `unsupported_buffer` (see
//! [`crate::commit_check`]).
//!
//! This module is driven by [`SyncBridge`](crate::SyncBridge); a compositor does not
//! use it directly:
//!
//! ```no_run
//! use syncbridge_protocols::{delegate_sync_bridge, SyncBridge, SyncBridgeHandler};
//! # use smithay::wayland::compositor::{CompositorClientState, CompositorHandler, CompositorState};
//! # use smithay::reexports::wayland_server::{Client, protocol::wl_surface::WlSurface};
//! struct State { bridge: SyncBridge<State>, compositor: CompositorState }
//! # impl CompositorHandler for State {
//! #     fn compositor_state(&mut self) -> &mut CompositorState { &mut self.compositor }
//! #     fn client_compositor_state<'a>(&self, _c: &'a Client) -> &'a CompositorClientState { todo!() }
//! #     fn commit(&mut self, _s: &WlSurface) {}
//! # }
//! impl SyncBridgeHandler for State {
//!     fn sync_bridge(&mut self) -> &mut SyncBridge<Self> { &mut self.bridge }
//! }
//! delegate_sync_bridge!(State);
//! ```

mod surface;
mod timeline;

use smithay::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::{
    wp_linux_drm_syncobj_manager_v1::{self, WpLinuxDrmSyncobjManagerV1},
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    wp_linux_drm_syncobj_timeline_v1::{self, WpLinuxDrmSyncobjTimelineV1},
};
use smithay::reexports::wayland_server::{
    backend::GlobalId, Client, DataInit, Dispatch, DisplayHandle, GlobalDispatch, New, Resource,
};
use syncbridge_bridge::syncobj::SyncobjDevice;

use crate::surface_state::{with_surface_sync, Extension};
use crate::sync_bridge::SyncBridgeHandler;

pub use surface::{SyncobjCachedState, SyncobjSurfaceData};
pub use timeline::{point_from_hi_lo, SyncobjPoint, SyncobjTimeline, SyncobjTimelineData};

/// Protocol version we implement.
pub const VERSION: u32 = 1;

/// Errors of the syncobj protocol implementation (the errno is kept in the source).
#[derive(Debug, thiserror::Error)]
pub enum DrmSyncobjError {
    /// A client's timeline fd could not be imported.
    #[error("importing a client timeline: {0}")]
    Import(#[from] syncbridge_bridge::syncobj::SyncobjError),
    /// The device cannot wait on timeline points without blocking (no `SYNCOBJ_EVENTFD`).
    #[error("device {driver} has no SYNCOBJ_EVENTFD (Linux 6.6+ needed); not advertising linux-drm-syncobj-v1")]
    NoEventfd {
        /// The DRM driver's name.
        driver: String,
    },
}

/// Global data of the `wp_linux_drm_syncobj_manager_v1` global.
#[derive(Debug)]
pub struct DrmSyncobjGlobalData(());

/// State of the linux-drm-syncobj-v1 global: the import device and per-client bounds.
#[derive(Debug)]
pub struct DrmSyncobjState {
    global: GlobalId,
    device: SyncobjDevice,
}

impl DrmSyncobjState {
    /// Creates the global. Fails if the device cannot give eventfds for points.
    pub(crate) fn new<D>(dh: &DisplayHandle, device: SyncobjDevice) -> Result<Self, DrmSyncobjError>
    where
        D: GlobalDispatch<WpLinuxDrmSyncobjManagerV1, DrmSyncobjGlobalData> + 'static,
    {
        if !device.supports_eventfd() {
            return Err(DrmSyncobjError::NoEventfd {
                driver: device.driver_name().to_owned(),
            });
        }
        let global =
            dh.create_global::<D, WpLinuxDrmSyncobjManagerV1, _>(VERSION, DrmSyncobjGlobalData(()));
        Ok(Self { global, device })
    }

    /// The global's id (to disable or remove it).
    pub fn global(&self) -> GlobalId {
        self.global.clone()
    }

    /// The device timelines are imported on.
    pub fn device(&self) -> &SyncobjDevice {
        &self.device
    }
}

impl<D> GlobalDispatch<WpLinuxDrmSyncobjManagerV1, DrmSyncobjGlobalData, D> for DrmSyncobjState
where
    D: Dispatch<WpLinuxDrmSyncobjManagerV1, ()> + 'static,
{
    fn bind(
        _state: &mut D,
        _dh: &DisplayHandle,
        _client: &Client,
        resource: New<WpLinuxDrmSyncobjManagerV1>,
        _global_data: &DrmSyncobjGlobalData,
        data_init: &mut DataInit<'_, D>,
    ) {
        data_init.init(resource, ());
    }
}

impl<D> Dispatch<WpLinuxDrmSyncobjManagerV1, (), D> for DrmSyncobjState
where
    D: Dispatch<WpLinuxDrmSyncobjManagerV1, ()>
        + Dispatch<WpLinuxDrmSyncobjSurfaceV1, SyncobjSurfaceData>
        + Dispatch<WpLinuxDrmSyncobjTimelineV1, SyncobjTimelineData>
        + SyncBridgeHandler,
{
    fn request(
        state: &mut D,
        client: &Client,
        resource: &WpLinuxDrmSyncobjManagerV1,
        request: wp_linux_drm_syncobj_manager_v1::Request,
        _data: &(),
        dh: &DisplayHandle,
        data_init: &mut DataInit<'_, D>,
    ) {
        use wp_linux_drm_syncobj_manager_v1::{Error, Request};
        match request {
            Request::GetSurface { id, surface } => {
                let taken =
                    with_surface_sync(&surface, |s| !matches!(s.extension, Extension::None));
                if taken != Some(false) {
                    data_init.init(id, SyncobjSurfaceData::new(&surface));
                    state.sync_bridge().note_protocol_error();
                    resource.post_error(
                        Error::SurfaceExists,
                        "the surface already has a syncobj or explicit-sync object",
                    );
                    return;
                }
                let obj = data_init.init(id, SyncobjSurfaceData::new(&surface));
                with_surface_sync(&surface, |s| s.extension = Extension::Syncobj(obj));
                crate::sync_bridge::ensure_tracked::<D>(&surface);
            }
            Request::ImportTimeline { id, fd } => {
                let bridge = state.sync_bridge();
                // On every failure the new object gets empty data and the error goes on the
                // manager (the spec's `invalid_timeline`), which disconnects the client.
                let limit = bridge.config.limits.max_timelines_per_client;
                if bridge.syncobj_state_mut().is_none() {
                    data_init.init(id, SyncobjTimelineData { timeline: None });
                    bridge.note_protocol_error();
                    resource.post_error(Error::InvalidTimeline, "linux-drm-syncobj-v1 is disabled");
                    return;
                }
                // Every timeline still referenced counts: a destroyed object whose points
                // wait in queued commits keeps its timeline (and the kernel syncobj) alive.
                let counter = bridge.client_budget(dh, &client.id()).timelines;
                if counter.current() >= limit as u64 {
                    data_init.init(id, SyncobjTimelineData { timeline: None });
                    bridge.note_protocol_error();
                    resource.post_error(
                        Error::InvalidTimeline,
                        format!("too many timelines (limit {limit} per client)"),
                    );
                    return;
                }
                let Some(syncobj) = bridge.syncobj_state_mut() else {
                    return;
                };
                match syncobj.device.import_timeline(fd) {
                    Ok(timeline) => {
                        data_init.init(
                            id,
                            SyncobjTimelineData {
                                timeline: Some(SyncobjTimeline::counted(timeline, &counter)),
                            },
                        );
                    }
                    Err(err) => {
                        tracing::debug!(%err, "import_timeline failed");
                        data_init.init(id, SyncobjTimelineData { timeline: None });
                        bridge.note_protocol_error();
                        resource.post_error(
                            Error::InvalidTimeline,
                            format!("cannot import timeline: {err}"),
                        );
                    }
                }
            }
            Request::Destroy => {}
            _ => {}
        }
    }
}

impl<D> Dispatch<WpLinuxDrmSyncobjTimelineV1, SyncobjTimelineData, D> for DrmSyncobjState
where
    D: Dispatch<WpLinuxDrmSyncobjTimelineV1, SyncobjTimelineData> + SyncBridgeHandler,
{
    fn request(
        _state: &mut D,
        _client: &Client,
        _resource: &WpLinuxDrmSyncobjTimelineV1,
        request: wp_linux_drm_syncobj_timeline_v1::Request,
        _data: &SyncobjTimelineData,
        _dh: &DisplayHandle,
        _data_init: &mut DataInit<'_, D>,
    ) {
        // Destroy is the only request; points already set keep their own reference to the
        // timeline.
        let _ = request;
    }

    // No `destroyed`: the timeline is counted until its last handle drops (see
    // `SyncobjTimeline::counted`), not until its protocol object is destroyed.
}
