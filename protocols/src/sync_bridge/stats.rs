//! Counters the compositor reports: commits waited per kind, latch latency, fences
//! exported/imported, releases by path, protocol errors, and fences/fds held.
//!
//! [`SyncBridge::stats`](crate::SyncBridge::stats) returns a [`SyncStats`] snapshot (plain
//! pub fields; the compositor serializes it as it likes).
//!
//! ```
//! use syncbridge_protocols::sync_bridge::stats::LatencySummary;
//! let s = LatencySummary::from_samples(&[30, 10, 20, 40, 1000]);
//! assert_eq!((s.count, s.p50_ns, s.max_ns), (5, 30, 1000));
//! ```

use std::collections::VecDeque;

use syncbridge_bridge::percentile::nearest_rank;

use crate::gauge::HeldGauges;

/// Which acquire path a commit took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitKind {
    /// A dma-buf's implicit fences, exported as a sync_file at commit time.
    Implicit,
    /// A dma-buf's implicit fences, by polling the dma-buf (no export ioctl).
    ImplicitPoll,
    /// A linux-drm-syncobj-v1 acquire point.
    Syncobj,
    /// A zwp_linux_explicit_synchronization_v1 acquire fence.
    Explicit,
}

/// p50/p99/max of a set of latency samples, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile (nearest rank).
    pub p99_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
}

impl LatencySummary {
    /// Summarizes `samples` (nearest-rank percentiles,
    /// [`syncbridge_bridge::percentile`]).
    pub fn from_samples(samples: &[u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut v = samples.to_vec();
        v.sort_unstable();
        let rank = |p| nearest_rank(&v, p).unwrap_or_default();
        Self {
            count: v.len() as u64,
            p50_ns: rank(50),
            p99_ns: rank(99),
            max_ns: rank(100),
        }
    }
}

/// A snapshot of the bridge's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStats {
    /// Commits seen by the pre-commit hook on tracked surfaces.
    pub commits: u64,
    /// Commits that waited on implicit dma-buf fences (exported sync_file).
    pub commits_waited_implicit: u64,
    /// Commits that waited on implicit dma-buf fences by polling the dma-buf (fallback).
    pub commits_waited_implicit_poll: u64,
    /// Commits that waited on a syncobj acquire point.
    pub commits_waited_syncobj: u64,
    /// Commits that waited on an explicit-sync-v1 acquire fence.
    pub commits_waited_explicit: u64,
    /// Commits whose fence had already signalled at commit time (no wait needed).
    pub commits_fence_already_signalled: u64,
    /// Commits dropped because of a protocol error (never applied).
    pub commits_rejected: u64,
    /// Latch latency: fence signalled (kernel timestamp when known, else the wake-up) to the
    /// commit applied, over all kinds.
    pub latch_latency: LatencySummary,
    /// The most recent latch latency samples (bounded ring), nanoseconds.
    pub latch_latency_samples_ns: Vec<u64>,
    /// The first part of the latch latency: fence signalled to the wait's callback running
    /// (the event loop's wake-up, and whatever else the loop was doing).
    pub latch_wake: LatencySummary,
    /// The second part: the wait's callback to the commit applied (smithay applying the
    /// client's queue and the compositor's commit handler).
    pub latch_apply: LatencySummary,
    /// Of the second part: the wait's callback to the bridge's post-commit hook (installed
    /// when the surface is created, before any role adds its own), i.e. smithay taking the
    /// ready transactions and making their state current (`apply_state`).
    pub latch_apply_state: LatencySummary,
    /// Of the second part: the bridge's post-commit hook (its buffer bookkeeping).
    pub latch_apply_bridge_hook: LatencySummary,
    /// Of the second part: the rest, the other post-commit hooks and the compositor's
    /// `CompositorHandler::commit`.
    pub latch_apply_handlers: LatencySummary,
    /// Time from the commit request to the commit applied, for commits that waited.
    pub commit_wait: LatencySummary,
    /// sync_files exported from client dma-bufs (one per commit, planes merged).
    pub fences_exported: u64,
    /// Fences imported into client dma-bufs (read fences for implicit clients).
    pub fences_imported: u64,
    /// Imports into client dma-bufs that failed (logged; the compositor must then hold the
    /// buffer until the fence signals).
    pub fence_import_failures: u64,
    /// syncobj release points that received a fence.
    pub release_points_fenced: u64,
    /// syncobj release points signalled on the CPU (no fence to carry).
    pub release_points_cpu_signalled: u64,
    /// syncobj release points that waited on the CPU because the fence transfer failed.
    pub release_points_cpu_waited: u64,
    /// `fenced_release` events sent.
    pub explicit_fenced_releases: u64,
    /// `immediate_release` events sent.
    pub explicit_immediate_releases: u64,
    /// Fail closed: reader fences the release merger could not keep (merges failing, e.g.
    /// out of fds); each held its reader open until the fence signalled.
    pub reader_fences_unkept: u64,
    /// Fail closed: releases held back until their fences signalled because the fence could
    /// not go with the release (dma-buf import failed or unsupported, syncobj transfer or
    /// merge failed, no fd to send `fenced_release`).
    pub releases_held_until_signalled: u64,
    /// Fail closed: fence waits that got no fd for a wait source and poll the fence on a
    /// timer instead.
    pub fence_waits_polled: u64,
    /// Implicit releases whose fence could not be imported and whose smithay buffer was not
    /// there to hold (already released): releases that went out early. Should stay 0.
    pub implicit_releases_unheld: u64,
    /// Reads held by `hold_readers` (a render whose completion is known later).
    pub reads_held: u64,
    /// Of those, reads ended (`end_held_reads`).
    pub reads_held_ended: u64,
    /// Buffers released (all kinds) after their last reader.
    pub buffers_released: u64,
    /// Reader reports (render or scanout) received.
    pub reader_reports: u64,
    /// Reader reports for buffers the bridge no longer tracks (ignored).
    pub reader_reports_unknown: u64,
    /// Protocol errors sent to clients.
    pub protocol_errors: u64,
    /// Clients disconnected for exceeding a bound (pending waits per surface, fd/fence
    /// budget).
    pub clients_killed_for_limits: u64,
    /// Of those, clients disconnected for exceeding their fd/fence budget.
    pub clients_killed_for_budget: u64,
    /// Most fds held for one client at once (seen when a client asked for more).
    pub client_fds_held_peak: u64,
    /// dma-buf fds kept open by clients' `wl_buffer`s now (counted per client against
    /// `Limits::max_buffer_fds_per_client`).
    pub buffer_fds_held: u64,
    /// Most such fds at once.
    pub buffer_fds_held_peak: u64,
    /// dma-buf imports refused because the client's buffers were at their fd budget.
    pub buffer_imports_refused_for_budget: u64,
    /// Acquire waits in flight now.
    pub pending_waits: u64,
    /// Buffers tracked now (current on a surface, or still being read).
    pub tracked_buffers: u64,
    /// Fences held now (acquire fences, wait sources, reader fences).
    pub fences_held: u64,
    /// Most fences held at once.
    pub fences_held_peak: u64,
    /// fds held now (sync_files, eventfds).
    pub fds_held: u64,
    /// Most fds held at once.
    pub fds_held_peak: u64,
    /// How implicit acquire works here: "export-sync-file" or "poll-dmabuf".
    pub implicit_acquire_mode: &'static str,
    /// How implicit release works here: "import-read-fence" or "cpu".
    pub implicit_release_mode: &'static str,
    /// linux-drm-syncobj-v1: "eventfd" when advertised, else "disabled".
    pub syncobj_mode: &'static str,
    /// zwp_linux_explicit_synchronization_v1: "enabled" or "disabled".
    pub explicit_sync_v1_mode: &'static str,
}

/// One waited commit's latch, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latched {
    /// Fence signalled to the commit applied.
    pub latch_ns: u64,
    /// Fence signalled to the wait's callback.
    pub wake_ns: u64,
    /// The wait's callback to the bridge's post-commit hook (`None`: no state was applied,
    /// e.g. another blocker still holds the commit).
    pub state_ns: Option<u64>,
    /// The bridge's post-commit hook, start to end.
    pub bridge_hook_ns: Option<u64>,
    /// The commit request to the commit applied.
    pub wait_ns: u64,
}

/// When the bridge's first post-commit hook began and ended while a fired wait applied its
/// client's ready commits (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LatchMarks {
    pub hook_began: Option<u64>,
    pub hook_ended: Option<u64>,
}

/// The mutable counters behind [`SyncStats`].
#[derive(Debug, Default)]
pub(crate) struct StatsCollector {
    pub s: SyncStats,
    latch: VecDeque<u64>,
    wake: VecDeque<u64>,
    apply: VecDeque<u64>,
    apply_state: VecDeque<u64>,
    apply_bridge_hook: VecDeque<u64>,
    apply_handlers: VecDeque<u64>,
    waits: VecDeque<u64>,
    max_samples: usize,
    pub held: HeldGauges,
}

impl StatsCollector {
    pub fn new(max_samples: usize) -> Self {
        Self {
            max_samples: max_samples.max(1),
            ..Default::default()
        }
    }

    /// Notes one client's gauges for the per-client peak.
    pub fn note_client_held(&mut self, client: &HeldGauges) {
        self.s.client_fds_held_peak = self.s.client_fds_held_peak.max(client.fds.peak());
    }

    pub fn waited(&mut self, kind: WaitKind) {
        match kind {
            WaitKind::Implicit => self.s.commits_waited_implicit += 1,
            WaitKind::ImplicitPoll => self.s.commits_waited_implicit_poll += 1,
            WaitKind::Syncobj => self.s.commits_waited_syncobj += 1,
            WaitKind::Explicit => self.s.commits_waited_explicit += 1,
        }
    }

    fn push(ring: &mut VecDeque<u64>, max: usize, v: u64) {
        if ring.len() >= max {
            ring.pop_front();
        }
        ring.push_back(v);
    }

    /// A waited commit was applied.
    pub fn latched(&mut self, l: Latched) {
        let max = self.max_samples;
        let apply = l.latch_ns.saturating_sub(l.wake_ns);
        Self::push(&mut self.latch, max, l.latch_ns);
        Self::push(&mut self.wake, max, l.wake_ns.min(l.latch_ns));
        Self::push(&mut self.apply, max, apply);
        if let Some(state) = l.state_ns {
            let state = state.min(apply);
            let hook = l.bridge_hook_ns.unwrap_or(0).min(apply - state);
            Self::push(&mut self.apply_state, max, state);
            Self::push(&mut self.apply_bridge_hook, max, hook);
            Self::push(&mut self.apply_handlers, max, apply - state - hook);
        }
        Self::push(&mut self.waits, max, l.wait_ns);
    }

    pub fn snapshot(&self, pending_waits: u64, tracked_buffers: u64) -> SyncStats {
        let latch: Vec<u64> = self.latch.iter().copied().collect();
        let waits: Vec<u64> = self.waits.iter().copied().collect();
        SyncStats {
            latch_latency: LatencySummary::from_samples(&latch),
            latch_latency_samples_ns: latch,
            latch_wake: LatencySummary::from_samples(
                &self.wake.iter().copied().collect::<Vec<_>>(),
            ),
            latch_apply: LatencySummary::from_samples(
                &self.apply.iter().copied().collect::<Vec<_>>(),
            ),
            latch_apply_state: LatencySummary::from_samples(
                &self.apply_state.iter().copied().collect::<Vec<_>>(),
            ),
            latch_apply_bridge_hook: LatencySummary::from_samples(
                &self.apply_bridge_hook.iter().copied().collect::<Vec<_>>(),
            ),
            latch_apply_handlers: LatencySummary::from_samples(
                &self.apply_handlers.iter().copied().collect::<Vec<_>>(),
            ),
            commit_wait: LatencySummary::from_samples(&waits),
            pending_waits,
            tracked_buffers,
            fences_held: self.held.fences.current(),
            fences_held_peak: self.held.fences.peak(),
            fds_held: self.held.fds.current(),
            fds_held_peak: self.held.fds.peak(),
            ..self.s.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        let s = LatencySummary::from_samples(&v);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ns, 50);
        assert_eq!(s.p99_ns, 99);
        assert_eq!(s.max_ns, 100);
        assert_eq!(LatencySummary::from_samples(&[]), LatencySummary::default());
        let one = LatencySummary::from_samples(&[7]);
        assert_eq!((one.p50_ns, one.p99_ns, one.max_ns), (7, 7, 7));
    }

    #[test]
    fn sample_ring_is_bounded() {
        let mut c = StatsCollector::new(3);
        for i in 0..10 {
            c.latched(Latched {
                latch_ns: i,
                wake_ns: i,
                state_ns: Some(0),
                bridge_hook_ns: Some(0),
                wait_ns: i,
            });
        }
        let snap = c.snapshot(0, 0);
        assert_eq!(snap.latch_latency_samples_ns, vec![7, 8, 9]);
        assert_eq!(snap.latch_latency.count, 3);
        assert_eq!(snap.latch_apply_state.count, 3);
    }

    #[test]
    fn the_apply_splits_into_smithays_state_and_the_handlers() {
        let mut c = StatsCollector::new(8);
        // signal -> callback 300, callback -> state applied 50, the bridge's hook 30, the
        // rest 40.
        c.latched(Latched {
            latch_ns: 420,
            wake_ns: 300,
            state_ns: Some(50),
            bridge_hook_ns: Some(30),
            wait_ns: 1000,
        });
        // No state applied (still blocked): only the whole apply is counted.
        c.latched(Latched {
            latch_ns: 310,
            wake_ns: 300,
            state_ns: None,
            bridge_hook_ns: None,
            wait_ns: 1000,
        });
        // Marks past the applied time (clock order) are clamped, never negative.
        c.latched(Latched {
            latch_ns: 400,
            wake_ns: 300,
            state_ns: Some(500),
            bridge_hook_ns: Some(10),
            wait_ns: 1000,
        });
        let s = c.snapshot(0, 0);
        assert_eq!(s.latch_apply.count, 3);
        assert_eq!(s.latch_apply_state.count, 2);
        assert_eq!(s.latch_apply_state.max_ns, 100);
        assert_eq!(s.latch_apply_bridge_hook.max_ns, 30);
        assert_eq!(s.latch_apply_bridge_hook.p50_ns, 0);
        assert_eq!(s.latch_apply_handlers.count, 2);
        assert_eq!(s.latch_apply_handlers.max_ns, 40);
        assert_eq!(s.latch_apply_handlers.p50_ns, 0);
    }

    #[test]
    fn wait_kinds_count_separately() {
        let mut c = StatsCollector::new(4);
        c.waited(WaitKind::Implicit);
        c.waited(WaitKind::Syncobj);
        c.waited(WaitKind::Syncobj);
        c.waited(WaitKind::Explicit);
        c.waited(WaitKind::ImplicitPoll);
        let s = c.snapshot(0, 0);
        assert_eq!(
            (
                s.commits_waited_implicit,
                s.commits_waited_syncobj,
                s.commits_waited_explicit,
                s.commits_waited_implicit_poll
            ),
            (1, 2, 1, 1)
        );
    }
}
