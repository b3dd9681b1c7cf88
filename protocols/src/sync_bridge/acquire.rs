//! Acquire side: the pre-commit hook that gates each commit on its buffer's fence.
//!
//! For the pending buffer of a tracked surface:
//! * linux-drm-syncobj-v1 surface: validate the points, then wait for the acquire point
//!   (`TimelinePointSource`, an eventfd on the timeline);
//! * explicit-sync-v1 surface with an acquire fence: validate, then wait for the fence
//!   (`SyncFileSource`);
//! * otherwise, a dma-buf: export its read fences as one sync_file at commit time (a
//!   snapshot; later fences do not delay us) and wait for it; without the export ioctl,
//!   poll the dma-buf (smithay's `Dmabuf::generate_blocker`).
//!
//! Each wait adds a smithay blocker to the commit's transaction and a one-shot calloop
//! source that flips the blocker and calls `CompositorClientState::blocker_cleared`. A
//! fence that never signals holds back only its own surface's queued commits. The source's
//! registration token is kept in the surface's data so that the surface's destruction
//! (client disconnect included) removes it and closes its fd. An already signalled fence
//! adds no wait. A protocol error cancels the commit (it is never applied), and so does a
//! wait that cannot be set up; every cancelled commit ends its client's connection (a
//! protocol error, `no_memory`) or belongs to a client already gone, because smithay would
//! apply a cancelled commit's state together with the surface's next applied commit (see
//! `reject_unwaitable`).
//!
//! ```no_run
//! # use syncbridge_protocols::{SyncBridge, SyncBridgeHandler};
//! # fn demo<D: SyncBridgeHandler>(bridge: &SyncBridge<D>, surface: &smithay::reexports::wayland_server::protocol::wl_surface::WlSurface) {
//! bridge.track_surface(surface); // installs this hook
//! # }
//! ```

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use smithay::backend::allocator::dmabuf::{Dmabuf, DmabufBlocker};
use smithay::reexports::calloop::{Interest, RegistrationToken};
use smithay::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1;
use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1;
use smithay::reexports::wayland_server::{protocol::wl_surface::WlSurface, DisplayHandle, Resource, Weak};
use smithay::wayland::compositor::{
    add_blocker, with_states, Blocker, BlockerState, BufferAssignment, SurfaceAttributes, SurfaceData,
};
use smithay::wayland::dmabuf::get_dmabuf;
use syncbridge_bridge::dmabuf::{export_planes, Access};
use syncbridge_bridge::error::ErrorKind;
use syncbridge_bridge::source::{SyncFileSource, TimelinePointSource};
use syncbridge_bridge::sync_file::{monotonic_now_ns, SyncFile};
use syncbridge_bridge::syncobj::WaitMode;

use super::budget::disconnect_over_limit;
use super::config::ImplicitWait;
use super::stats::{LatchMarks, Latched, WaitKind};
use super::SyncBridgeHandler;
use crate::commit_check::{
    check_explicit_commit, check_syncobj_commit, ExplicitCommitError, PendingBuffer,
    SyncobjCommitError,
};
use crate::drm_syncobj::{SyncobjCachedState, SyncobjPoint};
use crate::explicit_sync::ExplicitCachedState;
use crate::gauge::{HeldGuard, HeldSyncFile};
use crate::surface_state::{with_surface_sync, with_surface_sync_in, Extension, PendingWait};

/// Released once its source fired.
#[derive(Debug)]
struct FlagBlocker(Arc<AtomicBool>);

/// What blocks a commit.
#[derive(Debug)]
enum CommitBlocker {
    Flag(FlagBlocker),
    Poll(DmabufBlocker),
    /// The commit is rejected (protocol error, a bound exceeded, a wait that cannot be set
    /// up): never applied. Only ever added for a client that is disconnected along with it
    /// (or already gone): smithay keeps a cancelled commit's cached state and merges it
    /// into the current state with the surface's next applied commit.
    Rejected,
}

impl Blocker for CommitBlocker {
    fn state(&self) -> BlockerState {
        match self {
            CommitBlocker::Flag(FlagBlocker(flag)) => {
                if flag.load(Ordering::Acquire) {
                    BlockerState::Released
                } else {
                    BlockerState::Pending
                }
            }
            CommitBlocker::Poll(b) => b.state(),
            CommitBlocker::Rejected => BlockerState::Cancelled,
        }
    }
}

enum Fault {
    Syncobj(WpLinuxDrmSyncobjSurfaceV1, SyncobjCommitError),
    Explicit(ZwpLinuxSurfaceSynchronizationV1, ExplicitCommitError),
}

enum Wait {
    Point(SyncobjPoint),
    Fence(HeldSyncFile),
    Implicit(Dmabuf),
}

enum Plan {
    Nothing,
    Reject(Fault),
    Wait(Wait),
}

fn pending_buffer(states: &SurfaceData) -> (PendingBuffer, Option<Dmabuf>) {
    let mut attrs = states.cached_state.get::<SurfaceAttributes>();
    match &attrs.pending().buffer {
        None => (PendingBuffer::Unchanged, None),
        Some(BufferAssignment::Removed) => (PendingBuffer::Removed, None),
        Some(BufferAssignment::NewBuffer(buffer)) => match get_dmabuf(buffer) {
            Ok(dmabuf) => (PendingBuffer::Dmabuf, Some(dmabuf.clone())),
            Err(_) => (PendingBuffer::Other, None),
        },
    }
}

fn implicit(dmabuf: Option<Dmabuf>) -> Plan {
    match dmabuf {
        Some(d) => Plan::Wait(Wait::Implicit(d)),
        None => Plan::Nothing,
    }
}

fn plan_commit(states: &SurfaceData) -> Plan {
    let (buffer, dmabuf) = pending_buffer(states);
    match with_surface_sync_in(states, |s| s.extension.clone()) {
        Extension::Syncobj(obj) => {
            let mut cached = states.cached_state.get::<SyncobjCachedState>();
            let pending = cached.pending();
            let acquire = pending.acquire.as_ref().map(|p| (&p.timeline, p.point));
            let release = pending
                .release
                .as_ref()
                .and_then(|r| r.point())
                .map(|p| (&p.timeline, p.point));
            if let Err(e) = check_syncobj_commit(buffer, acquire, release) {
                return Plan::Reject(Fault::Syncobj(obj, e));
            }
            match pending.acquire.take() {
                Some(point) => Plan::Wait(Wait::Point(point)),
                None => Plan::Nothing,
            }
        }
        Extension::Explicit(obj) => {
            let mut cached = states.cached_state.get::<ExplicitCachedState>();
            let pending = cached.pending();
            if let Err(e) =
                check_explicit_commit(buffer, pending.acquire.is_some(), pending.release.is_some())
            {
                return Plan::Reject(Fault::Explicit(obj, e));
            }
            match pending.acquire.take() {
                Some(fence) => Plan::Wait(Wait::Fence(fence)),
                None => implicit(dmabuf),
            }
        }
        Extension::None => implicit(dmabuf),
    }
}

/// The pre-commit hook.
pub(crate) fn pre_commit<D: SyncBridgeHandler>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
) {
    state.sync_bridge().stats.s.commits += 1;
    if crate::timeline::enabled()
        && with_states(surface, |states| {
            matches!(
                pending_buffer(states).0,
                PendingBuffer::Dmabuf | PendingBuffer::Other
            )
        })
    {
        crate::timeline::commit(surface);
    }
    match with_states(surface, plan_commit) {
        Plan::Nothing => {}
        Plan::Reject(fault) => {
            let bridge = state.sync_bridge();
            bridge.stats.s.commits_rejected += 1;
            bridge.note_protocol_error();
            match fault {
                Fault::Syncobj(obj, e) => obj.post_error(e.code(), e.to_string()),
                Fault::Explicit(obj, e) => obj.post_error(e.code(), e.to_string()),
            }
            add_blocker(surface, CommitBlocker::Rejected);
        }
        Plan::Wait(wait) => start_wait(state, dh, surface, wait),
    }
}

/// What the source callback needs.
struct WaitCtx {
    surface: Weak<WlSurface>,
    id: u64,
    flag: Arc<AtomicBool>,
    committed_ns: u64,
    dh: DisplayHandle,
    /// The surface's [`timeline::surface_key`](crate::timeline::surface_key) (0 when no
    /// timeline is recorded).
    timeline_key: u64,
}

/// A wait's fence signalled: release the blocker and re-evaluate the client's queue.
///
/// `signal_time` reads when the fence signalled (the kernel's timestamp; `None` where there
/// is none). Only the stats and the timeline want it, so it is read after the commit was
/// applied, outside the latch it measures (it is an ioctl), unless the timeline is being
/// recorded: then its event goes out at the wake-up, as before.
fn fired<D: SyncBridgeHandler>(
    state: &mut D,
    ctx: &WaitCtx,
    signal_time: impl Fn() -> Option<u64>,
) {
    let woke = monotonic_now_ns();
    let recorded = crate::timeline::enabled().then(|| {
        let t = signal_time();
        crate::timeline::acquire_signalled(ctx.timeline_key, ctx.id, t.unwrap_or(0));
        t
    });
    ctx.flag.store(true, Ordering::Release);
    let surface = ctx.surface.upgrade().ok();
    state.sync_bridge().latch_marks = Some(LatchMarks::default());
    if let Some(client) = surface.as_ref().and_then(|s| s.client()) {
        state
            .client_compositor_state(&client)
            .blocker_cleared(state, &ctx.dh);
    }
    let applied = monotonic_now_ns();
    // Bookkeeping after the commit is applied: nothing in the apply looks at the waits.
    if let Some(s) = &surface {
        with_surface_sync(s, |ss| ss.waits.retain(|w| w.id != ctx.id));
    }
    let signalled_ns = recorded.unwrap_or_else(&signal_time);
    let bridge = state.sync_bridge();
    let marks = bridge.latch_marks.take().unwrap_or_default();
    let signalled = signalled_ns.filter(|&t| t > 0 && t <= woke).unwrap_or(woke);
    bridge.stats.latched(Latched {
        latch_ns: applied.saturating_sub(signalled),
        wake_ns: woke.saturating_sub(signalled),
        state_ns: marks.hook_began.map(|t| t.saturating_sub(woke)),
        bridge_hook_ns: marks
            .hook_began
            .zip(marks.hook_ended)
            .map(|(b, e)| e.saturating_sub(b)),
        wait_ns: applied.saturating_sub(ctx.committed_ns),
    });
}

/// When the fired wait's fence signalled, without allocating per fence: a client can hand
/// in a sync_file of thousands of fences, and this runs for every fired wait.
fn sync_file_signal_time(fence: &SyncFile) -> Option<u64> {
    fence.signaled_at_ns().ok().flatten()
}

/// Disconnects the client of `surface` for queueing more than `limit` waiting commits.
fn kill_for_limit(dh: &DisplayHandle, surface: &WlSurface, limit: usize) {
    let Some(client) = surface.client() else {
        // The client is gone: nothing may be applied unwaited.
        add_blocker(surface, CommitBlocker::Rejected);
        return;
    };
    let message = format!(
        "more than {limit} commits of wl_surface@{} wait on unsignalled fences",
        surface.id().protocol_id()
    );
    disconnect_over_limit(dh, &client, message);
}

fn start_wait<D: SyncBridgeHandler>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    wait: Wait,
) {
    let bridge = state.sync_bridge();
    let limit = bridge.config.limits.max_pending_waits_per_surface;
    let in_flight = with_surface_sync(surface, |s| s.waits.len()).unwrap_or(0);
    if in_flight >= limit {
        tracing::warn!(
            limit,
            "client exceeds the pending fence waits per surface; disconnecting it"
        );
        bridge.stats.s.clients_killed_for_limits += 1;
        kill_for_limit(dh, surface, limit);
        add_blocker(surface, CommitBlocker::Rejected);
        return;
    }
    // The client's budget: a queued explicit fence is already counted (the wait takes
    // over its guard); the other waits hold one fence and, at most, one new fd.
    let Some(client) = surface.client() else {
        // The client is gone: nothing may be applied unwaited.
        add_blocker(surface, CommitBlocker::Rejected);
        return;
    };
    let (new_fds, new_fences) = match &wait {
        Wait::Fence(_) => (0, 0),
        Wait::Point(_) | Wait::Implicit(_) => (1, 1),
    };
    if !bridge.charge_or_disconnect(dh, &client, new_fds, new_fences) {
        add_blocker(surface, CommitBlocker::Rejected);
        return;
    }
    let budget = bridge.client_budget(dh, &client.id()).held;
    // A waited-on timeline stays counted on the client while the wait lives, even if the
    // client destroys its protocol object (the eventfd keeps the kernel syncobj).
    let timeline = match &wait {
        Wait::Point(p) => Some(p.timeline.clone()),
        Wait::Fence(_) | Wait::Implicit(_) => None,
    };
    let flag = Arc::new(AtomicBool::new(false));
    let ctx = WaitCtx {
        surface: surface.downgrade(),
        id: bridge.next_wait_id(),
        flag: flag.clone(),
        committed_ns: monotonic_now_ns(),
        dh: dh.clone(),
        timeline_key: if crate::timeline::enabled() {
            crate::timeline::surface_key(surface)
        } else {
            0
        },
    };
    let id = ctx.id;
    crate::timeline::acquire_wait(surface, id);
    let handle = bridge.loop_handle.clone();
    let gauges = bridge.held_gauges().clone();
    let already =
        |bridge: &mut super::SyncBridge<D>| bridge.stats.s.commits_fence_already_signalled += 1;

    // Each arm: (kind, token, blocker, held guard), or return early.
    let registered: Result<(WaitKind, RegistrationToken, CommitBlocker, HeldGuard), String> =
        match wait {
            Wait::Point(p) => {
                let timeline = p.timeline.timeline();
                // Point 0 is the timeline's latest fence, whatever its point: the query
                // (last signalled point >= 0) says nothing about it; wait for it.
                if p.point > 0 && timeline.query().is_ok_and(|signalled| signalled >= p.point) {
                    return already(bridge);
                }
                match TimelinePointSource::new(timeline, p.point, WaitMode::Signaled) {
                    Ok(source) => handle
                        .insert_source(source, move |_event, _, state: &mut D| {
                            fired(state, &ctx, || None)
                        })
                        .map(|t| {
                            (
                                WaitKind::Syncobj,
                                t,
                                CommitBlocker::Flag(FlagBlocker(flag)),
                                gauges.hold_for(&budget, true),
                            )
                        })
                        .map_err(|e| e.error.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Wait::Fence(held) => {
                if held.fence().is_signaled().unwrap_or(false) {
                    return already(bridge);
                }
                let (fence, guard) = held.into_parts();
                handle
                    .insert_source(
                        SyncFileSource::new(fence),
                        move |fence, _, state: &mut D| {
                            fired(state, &ctx, || sync_file_signal_time(&fence))
                        },
                    )
                    .map(|t| {
                        (
                            WaitKind::Explicit,
                            t,
                            CommitBlocker::Flag(FlagBlocker(flag)),
                            guard,
                        )
                    })
                    .map_err(|e| e.error.to_string())
            }
            Wait::Implicit(dmabuf) => {
                let forced_poll = bridge.config.implicit_wait == ImplicitWait::Poll;
                let exported = if bridge.config.dmabuf_fences.is_supported()
                    && !bridge.export_broken
                {
                    let planes: Vec<BorrowedFd<'_>> = dmabuf.handles().collect();
                    match export_planes(&planes, Access::Read) {
                        Ok(fence) => {
                            bridge.stats.s.fences_exported += 1;
                            Some(fence)
                        }
                        Err(e) => {
                            if e.kind() == ErrorKind::Unsupported {
                                bridge.export_broken = true;
                            }
                            tracing::debug!(err = %e, "dma-buf fence export failed; polling the dma-buf");
                            None
                        }
                    }
                } else {
                    None
                };
                // Forced poll (`ImplicitWait::Poll`): the sync_file only timestamps the
                // signal for the latch-latency figure; the wake-up comes from the dma-buf.
                let (exported, stamp) = if forced_poll {
                    (None, exported)
                } else {
                    (exported, None)
                };
                match exported {
                    Some(fence) => {
                        if fence.is_signaled().unwrap_or(false) {
                            return already(bridge);
                        }
                        handle
                            .insert_source(
                                SyncFileSource::new(fence),
                                move |fence, _, state: &mut D| {
                                    fired(state, &ctx, || sync_file_signal_time(&fence))
                                },
                            )
                            .map(|t| {
                                (
                                    WaitKind::Implicit,
                                    t,
                                    CommitBlocker::Flag(FlagBlocker(flag)),
                                    gauges.hold_for(&budget, true),
                                )
                            })
                            .map_err(|e| e.error.to_string())
                    }
                    None => match dmabuf.generate_blocker(Interest::READ) {
                        Err(_already_ready) => return already(bridge),
                        Ok((blocker, source)) => handle
                            .insert_source(source, move |_, _, state: &mut D| {
                                fired(state, &ctx, || {
                                    stamp.as_ref().and_then(sync_file_signal_time)
                                });
                                Ok(())
                            })
                            .map(|t| {
                                (
                                    WaitKind::ImplicitPoll,
                                    t,
                                    CommitBlocker::Poll(blocker),
                                    gauges.hold_for(&budget, false),
                                )
                            })
                            .map_err(|e| e.error.to_string()),
                    },
                }
            }
        };

    match registered {
        Ok((kind, token, blocker, held)) => {
            bridge.stats.waited(kind);
            let wait_guard = bridge.waits.hold(1);
            with_surface_sync(surface, |s| {
                s.waits.push(PendingWait {
                    id,
                    token,
                    _held: held,
                    _wait: wait_guard,
                    _timeline: timeline,
                })
            });
            add_blocker(surface, blocker);
        }
        Err(err) => {
            bridge.stats.s.commits_rejected += 1;
            reject_unwaitable(dh, surface, &err);
        }
    }
}

/// The wait for a commit's acquire fence could not be set up (no fd for the eventfd,
/// epoll refused the source, ...): the commit is cancelled and its client disconnected
/// with `wl_display.error(no_memory)`.
///
/// Why not only cancel the commit: smithay 0.7 drops a cancelled transaction from the
/// client's queue but keeps the commit's cached state in the surface's cache, keyed by the
/// commit's serial, and the next commit of that surface that is applied merges every
/// cached state up to its own serial into the current one (`MultiCache::apply_state`).
/// The cancelled buffer would then become current with no acquire wait, through a later
/// commit that carries no buffer at all. Smithay has no way to drop one cached state, and
/// dropping the pending state here would apply the rest of the commit (damage, frame
/// callbacks, role state) without its buffer, a state the client never asked for;
/// `wl_surface.commit` has no failure reply either. A server that cannot allocate what a
/// request needs disconnects the client with `no_memory` (libwayland's
/// `wl_client_post_no_memory`); that also drops everything the client's surfaces hold.
fn reject_unwaitable(dh: &DisplayHandle, surface: &WlSurface, err: &str) {
    add_blocker(surface, CommitBlocker::Rejected);
    let Some(client) = surface.client() else {
        return;
    };
    tracing::warn!(
        %err,
        "cannot wait for an acquire fence; cancelling the commit and disconnecting its client"
    );
    let message = format!(
        "the compositor cannot wait for the acquire fence of wl_surface@{}: {err}",
        surface.id().protocol_id()
    );
    disconnect_over_limit(dh, &client, message);
}
