//! Post-commit and destruction hooks: buffer records follow the applied state.
//!
//! When a commit is applied (every blocker released), the post-commit hook gives a new
//! buffer a [`BufferId`](super::BufferId) with its release target (the syncobj release
//! point or explicit-sync-v1 release object that travelled with the commit), and retires
//! the buffer it replaces. This runs before `CompositorHandler::commit`, so before smithay
//! drops its own reference to the old buffer (see [`release`](super::release)). When the
//! surface dies (client disconnect included), its in-flight waits are removed from the
//! event loop (closing their fds) and its current buffer is retired.
//!
//! ```no_run
//! # use syncbridge_protocols::{SyncBridge, SyncBridgeHandler};
//! # fn demo<D: SyncBridgeHandler>(bridge: &SyncBridge<D>, surface: &smithay::reexports::wayland_server::protocol::wl_surface::WlSurface) {
//! // after a commit was applied, the surface's buffer has an id:
//! let id = bridge.buffer_id(surface);
//! # let _ = id;
//! # }
//! ```

use smithay::backend::renderer::utils::{Buffer as SmithayBuffer, RendererSurfaceStateUserData};
use smithay::reexports::wayland_server::{
    protocol::wl_buffer::WlBuffer, protocol::wl_surface::WlSurface, DisplayHandle, Resource,
};
use smithay::wayland::compositor::{
    with_states, BufferAssignment, Cacheable, SurfaceAttributes, SurfaceData,
};
use smithay::wayland::dmabuf::get_dmabuf;
use syncbridge_bridge::sync_file::monotonic_now_ns;

use super::SyncBridgeHandler;
use crate::drm_syncobj::SyncobjCachedState;
use crate::explicit_sync::ExplicitCachedState;
use crate::release_target::ReleaseTarget;
use crate::surface_state::with_surface_sync_in;

/// The buffer smithay's renderer state holds for the surface (the one a commit being applied
/// is about to replace): the bridge keeps a clone to hold back `wl_buffer.release`.
fn renderer_buffer(states: &SurfaceData) -> Option<SmithayBuffer> {
    let data = states.data_map.get::<RendererSurfaceStateUserData>()?;
    let guard = data.lock().ok()?;
    guard.buffer().cloned()
}

/// `f` on the surface's current `T`, if the surface has a cached `T` at all: only a
/// surface whose client set a syncobj point or an explicit-sync fence has one. `get` would
/// add it to every other surface, and smithay would then commit and merge one more state
/// on each of its commits.
fn with_current_if_set<T: Cacheable + Send + 'static, R>(
    states: &SurfaceData,
    f: impl FnOnce(&mut T) -> Option<R>,
) -> Option<R> {
    if !states.cached_state.has::<T>() {
        return None;
    }
    f(states.cached_state.get::<T>().current())
}

enum Applied {
    Unchanged,
    Removed,
    New(WlBuffer),
}

/// The post-commit hook.
pub(crate) fn post_commit<D: SyncBridgeHandler>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
) {
    let marked = match &mut state.sync_bridge().latch_marks {
        Some(m) if m.hook_began.is_none() => {
            m.hook_began = Some(monotonic_now_ns());
            true
        }
        _ => false,
    };
    post_commit_inner(state, dh, surface);
    if marked {
        if let Some(m) = &mut state.sync_bridge().latch_marks {
            m.hook_ended = Some(monotonic_now_ns());
        }
    }
}

/// [`post_commit`], without the latch's marks.
fn post_commit_inner<D: SyncBridgeHandler>(state: &mut D, dh: &DisplayHandle, surface: &WlSurface) {
    let (applied, syncobj, explicit, current, old_buffer) = with_states(surface, |states| {
        let applied = match &states
            .cached_state
            .get::<SurfaceAttributes>()
            .current()
            .buffer
        {
            None => Applied::Unchanged,
            Some(BufferAssignment::Removed) => Applied::Removed,
            Some(BufferAssignment::NewBuffer(b)) => Applied::New(b.clone()),
        };
        let syncobj = with_current_if_set(states, |c: &mut SyncobjCachedState| {
            c.acquire = None;
            c.release.take()
        });
        let explicit = with_current_if_set(states, |c: &mut ExplicitCachedState| {
            c.acquire = None;
            c.release.take()
        });
        let current = with_surface_sync_in(states, |s| s.current);
        let old_buffer = match applied {
            Applied::Unchanged => None,
            _ => current.and_then(|_| renderer_buffer(states)),
        };
        (applied, syncobj, explicit, current, old_buffer)
    });
    // At most one of them is set (one extension per surface); a leftover of the other kind
    // (its object was destroyed and replaced) is released by its Drop.
    let target = match (syncobj, explicit) {
        (Some(s), _) => Some(ReleaseTarget::Syncobj(s)),
        (None, Some(e)) => Some(ReleaseTarget::Explicit(e)),
        (None, None) => None,
    };
    let bridge = state.sync_bridge();
    match applied {
        // No new buffer: a release target without a buffer cannot happen after the commit
        // checks; if it does, its Drop releases it.
        Applied::Unchanged => drop(target),
        Applied::Removed => {
            drop(target);
            with_states(surface, |states| {
                with_surface_sync_in(states, |s| s.current = None)
            });
            if let Some(old) = current {
                bridge.retire(old, old_buffer);
            }
        }
        Applied::New(buffer) => {
            // The same implicit buffer committed again (or smithay's current state not
            // consumed yet): keep its record.
            if let (None, Some(id)) = (&target, current) {
                if bridge.tracker.is_same_implicit(id, &buffer) {
                    crate::timeline::applied(surface, id);
                    return;
                }
            }
            let dmabuf = get_dmabuf(&buffer).ok().cloned();
            let client = surface
                .client()
                .map(|c| bridge.client_budget(dh, &c.id()).held);
            let id = bridge.attach_buffer(&buffer, dmabuf, target, client);
            crate::timeline::applied(surface, id);
            with_states(surface, |states| {
                with_surface_sync_in(states, |s| s.current = Some(id))
            });
            if let Some(old) = current {
                bridge.retire(old, old_buffer);
            }
        }
    }
}

/// The destruction hook.
pub(crate) fn destroyed<D: SyncBridgeHandler>(state: &mut D, surface: &WlSurface) {
    let (waits, current, old_buffer) = with_states(surface, |states| {
        let (waits, current) =
            with_surface_sync_in(states, |s| (std::mem::take(&mut s.waits), s.current.take()));
        let old_buffer = current.and_then(|_| renderer_buffer(states));
        (waits, current, old_buffer)
    });
    let bridge = state.sync_bridge();
    for wait in waits {
        // Closes the wait's fd; harmless if it already fired.
        bridge.loop_handle.remove(wait.token);
    }
    if let Some(id) = current {
        bridge.retire(id, old_buffer);
    }
}
