//! Per-surface sync state kept in smithay's surface data map.
//!
//! One [`SurfaceSync`] per `wl_surface` (behind a `Mutex`, as smithay's data map requires
//! `Send + Sync`). It records which explicit-sync extension object the surface has (at most
//! one of linux-drm-syncobj-v1 and zwp_linux_explicit_synchronization_v1), the acquire waits
//! in flight for its queued commits, and the [`BufferId`] of its current buffer.
//!
//! ```no_run
//! # use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
//! # fn demo(surface: &WlSurface) {
//! // Crate-internal; the public view of this is `SyncBridge::buffer_id(surface)`.
//! # }
//! ```

use std::sync::{Mutex, MutexGuard};

use smithay::reexports::calloop::RegistrationToken;
use smithay::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1;
use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::Resource;
use smithay::wayland::compositor;

use crate::drm_syncobj::SyncobjTimeline;
use crate::gauge::{GaugeGuard, HeldGuard};
use crate::sync_bridge::BufferId;

/// Which explicit-sync extension object a surface has.
#[derive(Debug, Default, Clone)]
pub(crate) enum Extension {
    /// None: implicit sync (dma-buf fences are exported at commit time).
    #[default]
    None,
    /// A live `wp_linux_drm_syncobj_surface_v1`.
    Syncobj(WpLinuxDrmSyncobjSurfaceV1),
    /// A live `zwp_linux_surface_synchronization_v1`.
    Explicit(ZwpLinuxSurfaceSynchronizationV1),
}

/// One acquire wait in flight: a calloop source that clears a commit blocker.
#[derive(Debug)]
pub(crate) struct PendingWait {
    /// Identifies the wait so the source callback can remove its own entry.
    pub id: u64,
    /// The calloop registration, removed when the surface dies.
    pub token: RegistrationToken,
    /// Counts the fence (and fd) the source holds.
    pub _held: HeldGuard,
    /// Counts the wait itself.
    pub _wait: GaugeGuard,
    /// The timeline a syncobj wait is on, kept (and counted on its client) while it waits.
    pub _timeline: Option<SyncobjTimeline>,
}

/// Sync state of one `wl_surface`.
#[derive(Debug, Default)]
pub(crate) struct SurfaceSync {
    /// The explicit-sync extension object, if any.
    pub extension: Extension,
    /// Whether `SyncBridge::track_surface` installed its hooks (they live as long as the
    /// surface).
    pub tracked: bool,
    /// Acquire waits in flight for queued commits.
    pub waits: Vec<PendingWait>,
    /// The buffer the surface shows (last applied commit), if any.
    pub current: Option<BufferId>,
}

type SurfaceSyncCell = Mutex<SurfaceSync>;

fn lock(cell: &SurfaceSyncCell) -> MutexGuard<'_, SurfaceSync> {
    cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `f` on the surface's [`SurfaceSync`], creating it on first use.
///
/// Returns `None` if the surface is already destroyed (its data map is gone).
pub(crate) fn with_surface_sync<T>(
    surface: &WlSurface,
    f: impl FnOnce(&mut SurfaceSync) -> T,
) -> Option<T> {
    if !surface.is_alive() {
        return None;
    }
    Some(compositor::with_states(surface, |states| {
        states
            .data_map
            .insert_if_missing_threadsafe(|| Mutex::new(SurfaceSync::default()));
        match states.data_map.get::<SurfaceSyncCell>() {
            Some(cell) => f(&mut lock(cell)),
            // insert_if_missing_threadsafe just inserted it; unreachable in practice, but a
            // fresh state is a safe answer.
            None => f(&mut SurfaceSync::default()),
        }
    }))
}

/// Like [`with_surface_sync`], but from inside a `with_states` closure.
pub(crate) fn with_surface_sync_in<T>(
    states: &compositor::SurfaceData,
    f: impl FnOnce(&mut SurfaceSync) -> T,
) -> T {
    // Looked up once on every commit (twice before, by inserting first).
    if let Some(cell) = states.data_map.get::<SurfaceSyncCell>() {
        return f(&mut lock(cell));
    }
    states
        .data_map
        .insert_if_missing_threadsafe(|| Mutex::new(SurfaceSync::default()));
    match states.data_map.get::<SurfaceSyncCell>() {
        Some(cell) => f(&mut lock(cell)),
        None => f(&mut SurfaceSync::default()),
    }
}
