//! The integration facade: what a smithay compositor adopts to get explicit and implicit
//! sync handled on every commit.
//!
//! [`SyncBridge`] owns the two protocol globals (linux-drm-syncobj-v1,
//! zwp_linux_explicit_synchronization_v1), gates each tracked surface's commits on their
//! acquire fences (a smithay pre-commit hook adding a blocker that a calloop source clears),
//! and turns renderer and display fences into release fences ([`release`]).
//!
//! ```no_run
//! use smithay::reexports::calloop::EventLoop;
//! use smithay::reexports::wayland_server::{Client, Display, protocol::wl_surface::WlSurface};
//! use smithay::wayland::compositor::{CompositorClientState, CompositorHandler, CompositorState};
//! use syncbridge_protocols::{delegate_sync_bridge, BridgeConfig, SyncBridge, SyncBridgeHandler};
//!
//! struct State { compositor: CompositorState, bridge: SyncBridge<State> }
//! impl CompositorHandler for State {
//!     fn compositor_state(&mut self) -> &mut CompositorState { &mut self.compositor }
//!     fn client_compositor_state<'a>(&self, _c: &'a Client) -> &'a CompositorClientState { todo!() }
//!     fn new_surface(&mut self, surface: &WlSurface) {
//!         self.bridge.track_surface(surface); // pre-commit hook + blockers
//!     }
//!     fn commit(&mut self, surface: &WlSurface) {
//!         smithay::backend::renderer::utils::on_commit_buffer_handler::<Self>(surface);
//!     }
//! }
//! impl SyncBridgeHandler for State {
//!     fn sync_bridge(&mut self) -> &mut SyncBridge<Self> { &mut self.bridge }
//! }
//! delegate_sync_bridge!(State);
//!
//! let event_loop: EventLoop<State> = EventLoop::try_new()?;
//! let display: Display<State> = Display::new()?;
//! let config = BridgeConfig::detect(Some(std::path::Path::new("/dev/dri/renderD128")))?;
//! let mut bridge = SyncBridge::new(event_loop.handle(), config);
//! bridge.create_globals(&display.handle());
//! // after each frame:  bridge.frame_rendered(render_fence, &sampled_ids);
//! // after each atomic commit: bridge.scanout_committed(out_fence, &shown, &replaced);
//! // for logs: bridge.stats()
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod acquire;
mod apply;
pub mod budget;
pub mod buffer_fds;
pub mod config;
pub mod release;
pub mod stats;

use std::fmt;

use smithay::reexports::calloop::LoopHandle;
use smithay::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::{
    wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1,
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
};
use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::{
    zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1,
    zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1,
    zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1,
};
use smithay::reexports::wayland_server::{
    backend::GlobalId, protocol::wl_surface::WlSurface, Dispatch, DisplayHandle, GlobalDispatch,
};
use smithay::wayland::compositor::{self, CompositorHandler, TraversalAction};

pub use config::{BridgeConfig, ConfigError, ImplicitWait, Limits};
pub use stats::{LatencySummary, SyncStats, WaitKind};

use crate::drm_syncobj::{
    DrmSyncobjGlobalData, DrmSyncobjState, SyncobjSurfaceData, SyncobjTimelineData,
};
use crate::explicit_sync::{ExplicitSurfaceData, ExplicitSyncGlobalData, ExplicitSyncState};
use crate::gauge::HeldGauges;
use crate::surface_state::{with_surface_sync, with_surface_sync_in};
use release::ReleaseTracker;
use stats::StatsCollector;

/// One attachment of a buffer to a surface (one applied commit's buffer): what renderer
/// and display report reads against. Get it with [`SyncBridge::buffer_id`] when you
/// sample or scan out a surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub(crate) u64);

impl BufferId {
    /// The raw number (unique for the bridge's lifetime), for logs.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Implemented by the compositor state to give the protocol handlers the bridge.
pub trait SyncBridgeHandler: CompositorHandler + Sized + 'static {
    /// The bridge.
    fn sync_bridge(&mut self) -> &mut SyncBridge<Self>;
}

/// Every `Dispatch`/`GlobalDispatch` the bridge's protocol objects need; implemented for
/// any state type that used [`delegate_sync_bridge!`](crate::delegate_sync_bridge).
pub trait SyncBridgeDispatch:
    GlobalDispatch<WpLinuxDrmSyncobjManagerV1, DrmSyncobjGlobalData>
    + GlobalDispatch<ZwpLinuxExplicitSynchronizationV1, ExplicitSyncGlobalData>
    + Dispatch<WpLinuxDrmSyncobjManagerV1, ()>
    + Dispatch<WpLinuxDrmSyncobjSurfaceV1, SyncobjSurfaceData>
    + Dispatch<WpLinuxDrmSyncobjTimelineV1, SyncobjTimelineData>
    + Dispatch<ZwpLinuxExplicitSynchronizationV1, ()>
    + Dispatch<ZwpLinuxSurfaceSynchronizationV1, ExplicitSurfaceData>
    + Dispatch<ZwpLinuxBufferReleaseV1, ()>
    + 'static
{
}

impl<D> SyncBridgeDispatch for D where
    D: GlobalDispatch<WpLinuxDrmSyncobjManagerV1, DrmSyncobjGlobalData>
        + GlobalDispatch<ZwpLinuxExplicitSynchronizationV1, ExplicitSyncGlobalData>
        + Dispatch<WpLinuxDrmSyncobjManagerV1, ()>
        + Dispatch<WpLinuxDrmSyncobjSurfaceV1, SyncobjSurfaceData>
        + Dispatch<WpLinuxDrmSyncobjTimelineV1, SyncobjTimelineData>
        + Dispatch<ZwpLinuxExplicitSynchronizationV1, ()>
        + Dispatch<ZwpLinuxSurfaceSynchronizationV1, ExplicitSurfaceData>
        + Dispatch<ZwpLinuxBufferReleaseV1, ()>
        + 'static
{
}

/// The sync bridge of a compositor whose state type is `D`. See the [module docs](self).
pub struct SyncBridge<D: 'static> {
    pub(crate) loop_handle: LoopHandle<'static, D>,
    pub(crate) config: BridgeConfig,
    syncobj: Option<DrmSyncobjState>,
    explicit: Option<ExplicitSyncState>,
    pub(crate) tracker: ReleaseTracker,
    pub(crate) stats: StatsCollector,
    pub(crate) waits: crate::gauge::Gauge,
    pub(crate) budgets: budget::ClientBudgets,
    pub(crate) buffer_charges: buffer_fds::BufferCharges,
    next_wait_id: u64,
    /// While a fired wait re-evaluates its client's queue: when the bridge's first
    /// post-commit hook began and ended. Splits the latch's apply in smithay's part (making
    /// the queued state current), the bridge's hook, and the rest (other hooks, the
    /// compositor's commit handler); `None` otherwise, so that commits that did not wait
    /// read no clock.
    pub(crate) latch_marks: Option<stats::LatchMarks>,
    /// Set when a dma-buf export answered "unsupported" at runtime: poll from then on.
    pub(crate) export_broken: bool,
}

impl<D: 'static> fmt::Debug for SyncBridge<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncBridge")
            .field("config", &self.config)
            .field("syncobj", &self.syncobj)
            .field("explicit", &self.explicit)
            .field("tracked_buffers", &self.tracker.len())
            .finish_non_exhaustive()
    }
}

impl<D: SyncBridgeHandler> SyncBridge<D> {
    /// A bridge whose wait sources go on `loop_handle`'s loop. Create the globals next.
    pub fn new(loop_handle: LoopHandle<'static, D>, config: BridgeConfig) -> Self {
        let stats = StatsCollector::new(config.limits.latency_samples);
        Self {
            loop_handle,
            config,
            syncobj: None,
            explicit: None,
            tracker: ReleaseTracker::default(),
            stats,
            waits: crate::gauge::Gauge::new(),
            budgets: budget::ClientBudgets::default(),
            buffer_charges: buffer_fds::BufferCharges::default(),
            next_wait_id: 0,
            latch_marks: None,
            export_broken: false,
        }
    }

    /// Creates the linux-drm-syncobj-v1 global (when the config has a timeline device with
    /// eventfd support) and the zwp_linux_explicit_synchronization_v1 global (when enabled).
    /// Idempotent.
    pub fn create_globals(&mut self, dh: &DisplayHandle)
    where
        D: SyncBridgeDispatch,
    {
        if self.syncobj.is_none() {
            if let Some(device) = self.config.syncobj_device.clone() {
                match DrmSyncobjState::new::<D>(dh, device) {
                    Ok(state) => {
                        tracing::info!(
                            driver = state.device().driver_name(),
                            "linux-drm-syncobj-v1 enabled"
                        );
                        self.syncobj = Some(state);
                    }
                    Err(err) => tracing::warn!(%err, "linux-drm-syncobj-v1 disabled"),
                }
            } else {
                tracing::info!(reason = ?self.config.syncobj_disabled_reason, "linux-drm-syncobj-v1 disabled");
            }
        }
        if self.explicit.is_none() && self.config.explicit_sync_v1 {
            self.explicit = Some(ExplicitSyncState::new::<D>(dh));
            tracing::info!("zwp_linux_explicit_synchronization_v1 enabled");
        }
    }

    /// Installs the bridge's commit hooks on a surface (call from
    /// `CompositorHandler::new_surface`). Idempotent; surfaces that bind an explicit-sync
    /// extension are tracked automatically.
    pub fn track_surface(&self, surface: &WlSurface) {
        ensure_tracked::<D>(surface);
    }

    /// The buffer `surface` currently shows, as the bridge tracks it. Record it when you
    /// sample or scan out the surface, and report it to [`frame_rendered`](Self::frame_rendered)
    /// or [`scanout_committed`](Self::scanout_committed) before any client commit can be
    /// applied: releasing wp_fifo_v1 or wp_commit_timing_v1 barriers applies queued
    /// commits, which retire the current buffer (with no reader reported yet, it is
    /// released at once). Do not look it up again by surface after such a point.
    pub fn buffer_id(&self, surface: &WlSurface) -> Option<BufferId> {
        with_surface_sync(surface, |s| s.current).flatten()
    }

    /// Appends the current [`BufferId`] of every surface in `root`'s tree (subsurfaces
    /// included) to `out`.
    pub fn collect_buffer_ids(&self, root: &WlSurface, out: &mut Vec<BufferId>) {
        compositor::with_surface_tree_downward(
            root,
            (),
            |_, _, _| TraversalAction::DoChildren(()),
            |_, states, _| {
                if let Some(id) = with_surface_sync_in(states, |s| s.current) {
                    out.push(id);
                }
            },
            |_, _, _| true,
        );
    }

    /// The linux-drm-syncobj-v1 global, if created.
    pub fn syncobj_global(&self) -> Option<GlobalId> {
        self.syncobj.as_ref().map(DrmSyncobjState::global)
    }

    /// The zwp_linux_explicit_synchronization_v1 global, if created.
    pub fn explicit_sync_global(&self) -> Option<GlobalId> {
        self.explicit.as_ref().map(ExplicitSyncState::global)
    }

    /// The configuration in use.
    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// Overrides whether dma-buf fence export/import is used (normally probed at start-up):
    /// `PollFallback` behaves as on a kernel without the ioctls (acquire polls the dma-buf;
    /// an implicit client's release cannot carry a fence, so it is held until the readers'
    /// fences signalled). For tests and for kernels whose ioctls misbehave.
    pub fn set_dmabuf_fences(&mut self, support: syncbridge_bridge::DmabufFenceSupport) {
        self.config.dmabuf_fences = support;
    }

    /// Changes the per-client bounds; they apply from the next request that checks them
    /// (nothing already held is given back).
    pub fn set_limits(&mut self, limits: Limits) {
        self.config.limits = limits;
    }

    /// What the bridge holds for `client` right now (fences, fds, timelines), if it holds
    /// or held anything for it.
    pub fn client_held(
        &self,
        client: &smithay::reexports::wayland_server::backend::ClientId,
    ) -> Option<&budget::ClientHeld> {
        self.budgets.find(client)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SyncStats {
        let mut s = self
            .stats
            .snapshot(self.waits.current(), self.tracker.len() as u64);
        s.buffer_fds_held = self.buffer_charges.all.current();
        s.buffer_fds_held_peak = self.buffer_charges.all.peak();
        s.buffer_imports_refused_for_budget = self.buffer_charges.refused;
        let implicit_ok = self.config.dmabuf_fences.is_supported()
            && !self.export_broken
            && self.config.implicit_wait == ImplicitWait::Export;
        s.implicit_acquire_mode = if implicit_ok {
            "export-sync-file"
        } else {
            "poll-dmabuf"
        };
        s.implicit_release_mode = if self.config.dmabuf_fences.is_supported() {
            "import-read-fence"
        } else {
            "cpu"
        };
        s.syncobj_mode = if self.syncobj.is_some() {
            "eventfd"
        } else {
            "disabled"
        };
        s.explicit_sync_v1_mode = if self.explicit.is_some() {
            "enabled"
        } else {
            "disabled"
        };
        s
    }
}

impl<D: 'static> SyncBridge<D> {
    pub(crate) fn note_protocol_error(&mut self) {
        self.stats.s.protocol_errors += 1;
    }

    pub(crate) fn held_gauges(&self) -> &HeldGauges {
        &self.stats.held
    }

    /// The budget gauges of `client`.
    pub(crate) fn client_budget(
        &mut self,
        dh: &DisplayHandle,
        client: &smithay::reexports::wayland_server::backend::ClientId,
    ) -> budget::ClientHeld {
        self.budgets.get(dh, client)
    }

    /// Checks that holding `new_fds` fds and `new_fences` fences more for `client` stays
    /// within its budget; if not, disconnects the client (`wl_display.error(no_memory)`),
    /// counts it and returns false.
    pub(crate) fn charge_or_disconnect(
        &mut self,
        dh: &DisplayHandle,
        client: &smithay::reexports::wayland_server::Client,
        new_fds: u64,
        new_fences: u64,
    ) -> bool {
        let held = self.budgets.get(dh, &client.id());
        self.stats.note_client_held(&held.held);
        match budget::check(&self.config.limits, &held.held, new_fds, new_fences) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%err, "client over its fd/fence budget; disconnecting it");
                self.stats.s.clients_killed_for_limits += 1;
                self.stats.s.clients_killed_for_budget += 1;
                budget::disconnect_over_limit(dh, client, err.to_string());
                false
            }
        }
    }

    pub(crate) fn syncobj_state_mut(&mut self) -> Option<&mut DrmSyncobjState> {
        self.syncobj.as_mut()
    }

    pub(crate) fn next_wait_id(&mut self) -> u64 {
        self.next_wait_id += 1;
        self.next_wait_id
    }
}

/// Installs the pre-commit, post-commit and destruction hooks once per surface.
pub(crate) fn ensure_tracked<D: SyncBridgeHandler>(surface: &WlSurface) {
    let first = with_surface_sync(surface, |s| !std::mem::replace(&mut s.tracked, true));
    if first != Some(true) {
        return;
    }
    // Hooks are added outside `with_states`: both lock the surface's private data.
    compositor::add_pre_commit_hook::<D, _>(surface, acquire::pre_commit::<D>);
    compositor::add_post_commit_hook::<D, _>(surface, apply::post_commit::<D>);
    compositor::add_destruction_hook::<D, _>(surface, apply::destroyed::<D>);
}

/// Delegates every protocol object syncbridge implements to its handlers. The state type
/// must implement [`SyncBridgeHandler`].
#[macro_export]
macro_rules! delegate_sync_bridge {
    ($(@<$( $lt:tt $( : $clt:tt $(+ $dlt:tt )* )? ),+>)? $ty: ty) => {
        $crate::__reexports::wayland_server::delegate_global_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1: $crate::drm_syncobj::DrmSyncobjGlobalData
        ] => $crate::drm_syncobj::DrmSyncobjState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1: ()
        ] => $crate::drm_syncobj::DrmSyncobjState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1: $crate::drm_syncobj::SyncobjSurfaceData
        ] => $crate::drm_syncobj::DrmSyncobjState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1: $crate::drm_syncobj::SyncobjTimelineData
        ] => $crate::drm_syncobj::DrmSyncobjState);
        $crate::__reexports::wayland_server::delegate_global_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1: $crate::explicit_sync::ExplicitSyncGlobalData
        ] => $crate::explicit_sync::ExplicitSyncState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1: ()
        ] => $crate::explicit_sync::ExplicitSyncState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1: $crate::explicit_sync::ExplicitSurfaceData
        ] => $crate::explicit_sync::ExplicitSyncState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1: ()
        ] => $crate::explicit_sync::ExplicitSyncState);
    };
}
