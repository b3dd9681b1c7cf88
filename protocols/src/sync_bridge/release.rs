//! Release side: per-buffer reader tracking and delivery of the release fence.
//!
//! Every applied commit that attaches a buffer gets a [`BufferId`] and a record holding
//! the bridge's [`ReleaseMerger`] plus where the release goes (nothing extra for implicit
//! clients: the fence is imported into the dma-buf; a syncobj release point; an
//! explicit-sync-v1 release object). Readers report through
//! [`SyncBridge::frame_rendered`] (renderer: begin and end at once, with the render fence)
//! and [`SyncBridge::scanout_committed`] (display: begins when a commit shows the buffer,
//! ends with the out-fence of the commit that stops showing it). When the client replaces
//! the buffer the record is sealed, and once no reader is left the release is delivered:
//!
//! * implicit client: the merged fence is imported into every plane as a *read* fence;
//! * syncobj client: the merged fence is transferred into the release point (CPU signal when
//!   there is no fence);
//! * explicit-sync-v1 client: `fenced_release(fence)` or `immediate_release`.
//!
//! # Contract with smithay's buffer lifetime
//!
//! smithay sends `wl_buffer.release` when the last clone of its
//! `backend::renderer::utils::Buffer` drops. The bridge delivers *before* that, given:
//!
//! 1. The bridge retires a buffer in its post-commit hook, which runs before
//!    `CompositorHandler::commit` (where `on_commit_buffer_handler` drops the old `Buffer`).
//!    So a buffer that is only composited is released with its fences in place.
//! 2. Call `frame_rendered` in the same event-loop dispatch as the render, before clients
//!    are dispatched again (so no commit can retire a buffer between the render and its
//!    report), and before dropping the frame's render elements.
//! 3. While a buffer is on a plane, keep your own clone of its smithay `Buffer`. After the
//!    atomic commit that stops showing it, call `scanout_committed(out_fence, .., &[id])`
//!    and only then drop that clone: `wl_buffer.release` goes out right after the fence
//!    went in, before the page flip.
//! 4. Without dma-buf fence import (`SyncStats::implicit_release_mode == "cpu"`), implicit
//!    clients cannot carry a fence: hold the buffer until the flip instead.
//!
//! # Fail closed
//!
//! A release never goes out before its readers are done, even when a fence cannot be kept
//! or delivered (out of fds, a failed ioctl). Fences handed to [`SyncBridge::frame_rendered`]
//! and [`SyncBridge::scanout_committed`] become the bridge's (one fd shared by every buffer
//! the reader read, never duplicated). A reader fence the merger cannot keep holds its
//! reader open until the fence signals; a release fence that cannot be delivered (dma-buf
//! import failed or unsupported, syncobj transfer or merge failed, no fd left to send
//! `fenced_release`) holds the release back until it signals: for an implicit client the
//! bridge keeps a clone of smithay's `Buffer` (taken from the surface's renderer state when
//! the buffer is retired, before smithay drops its own), so `wl_buffer.release` waits too.
//! The wait is a one-shot source on a duplicate of the fence, or, when no fd is left for
//! that, a timer that polls the fence. Each such event is counted in [`SyncStats`]
//! (`reader_fences_unkept`, `releases_held_until_signalled`, `fence_waits_polled`).
//!
//! A reader whose end is only known later (a GLES render whose sync point cannot be
//! exported as a fence) is held with [`SyncBridge::hold_readers`] and ended with
//! [`SyncBridge::end_held_reads`].
//!
//! [`SyncStats`]: super::SyncStats
//!
//! ```no_run
//! # use syncbridge_protocols::{SyncBridge, SyncBridgeHandler, BufferId};
//! # use syncbridge_bridge::sync_file::SyncFile;
//! # fn demo<D: SyncBridgeHandler>(bridge: &mut SyncBridge<D>, render_fence: Option<SyncFile>,
//! #     sampled: Vec<BufferId>, out_fence: Option<SyncFile>, b2: BufferId, b1: BufferId) {
//! bridge.frame_rendered(render_fence, &sampled); // the bridge owns the fence now
//! // atomic commit N shows b2 instead of b1:
//! bridge.scanout_committed(out_fence, &[b2], &[b1]);
//! // now drop your clone of b1's smithay Buffer: wl_buffer.release goes out
//! # }
//! ```

use std::cell::Cell;
use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::time::Duration;

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::renderer::utils::Buffer as SmithayBuffer;
use smithay::reexports::calloop::timer::{TimeoutAction, Timer};
use smithay::reexports::wayland_server::{protocol::wl_buffer::WlBuffer, Resource, Weak};
use syncbridge_bridge::dmabuf::{import_planes, Access};

use crate::timeline;
use syncbridge_bridge::release::{EndReadError, ReaderId, ReleaseMerger, Unkept};
use syncbridge_bridge::source::SyncFileSource;
use syncbridge_bridge::sync_file::SyncFile;

use super::stats::StatsCollector;
use super::{BufferId, SyncBridge, SyncBridgeHandler};
use crate::gauge::{HeldGauges, HeldGuard};
use crate::release_target::{Delivered, ReleaseTarget};

/// One fence fd shared by every buffer a reader read (and by the waits on it).
type Shared = Rc<SyncFile>;

/// How often a fence is polled when no fd is left for a wait source.
const POLL_INTERVAL: Duration = Duration::from_millis(4);

/// What the bridge knows about one attached buffer.
#[derive(Debug)]
pub(crate) struct BufferRecord {
    buffer: Weak<WlBuffer>,
    dmabuf: Option<Dmabuf>,
    target: Option<ReleaseTarget>,
    merger: ReleaseMerger<Shared>,
    scanouts: Vec<ReaderId>,
    held: Option<HeldGuard>,
    /// The budget of the buffer's client: reader fences held for its release count on it.
    client: Option<HeldGauges>,
    /// Implicit dma-buf client: a clone of smithay's `Buffer`, taken when the buffer was
    /// retired. `wl_buffer.release` goes out when the last clone drops, so the bridge keeps
    /// this one while the release fence cannot be delivered and has not signalled.
    smithay_buffer: Option<SmithayBuffer>,
}

/// All tracked buffers.
#[derive(Debug, Default)]
pub(crate) struct ReleaseTracker {
    records: HashMap<BufferId, BufferRecord>,
    next: u64,
}

impl ReleaseTracker {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether `id` tracks `buffer` with no explicit release target (a re-commit of the
    /// same implicit buffer keeps its record).
    pub fn is_same_implicit(&self, id: BufferId, buffer: &WlBuffer) -> bool {
        self.records
            .get(&id)
            .is_some_and(|r| r.target.is_none() && r.buffer.upgrade().ok().as_ref() == Some(buffer))
    }
}

/// Readers begun by [`SyncBridge::hold_readers`]: the buffers they read are not released
/// until [`SyncBridge::end_held_reads`] gets this back. Plain ids, so it can travel to the
/// thread that waits for the read to end. Dropping it instead keeps those buffers forever.
#[must_use = "held buffers are released only when this is given to end_held_reads"]
#[derive(Debug)]
pub struct HeldReads {
    reads: Vec<(BufferId, ReaderId)>,
}

impl HeldReads {
    /// How many buffers are held.
    pub fn len(&self) -> usize {
        self.reads.len()
    }

    /// Whether no buffer is held (nothing sampled needed it).
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }
}

fn planes(dmabuf: &Dmabuf) -> Vec<BorrowedFd<'_>> {
    dmabuf.handles().collect()
}

/// Merges fences into one; on a merge failure gives them all back.
fn single_fence(fences: Vec<Shared>) -> Result<Option<Shared>, Vec<Shared>> {
    if fences.len() <= 1 {
        return Ok(fences.into_iter().next());
    }
    let mut acc: Option<Shared> = None;
    for f in &fences {
        let next = match &acc {
            None => Ok(f.clone()),
            Some(a) => a.merge(f).map(Rc::new),
        };
        match next {
            Ok(m) => acc = Some(m),
            Err(err) => {
                tracing::warn!(%err, "merging release fences failed; waiting on the CPU");
                return Err(fences);
            }
        }
    }
    Ok(acc)
}

/// Whether a release of this record can carry (or needs) a fence at all: an implicit-sync
/// buffer that is not a dma-buf (wl_shm) has nowhere to carry one, and the renderer copied
/// it, so wl_buffer.release is all the client needs.
fn needs_fences(rec: &BufferRecord) -> bool {
    rec.target.is_some() || rec.dmabuf.is_some()
}

impl<D: SyncBridgeHandler> SyncBridge<D> {
    /// Starts tracking a buffer made current by an applied commit.
    pub(crate) fn attach_buffer(
        &mut self,
        buffer: &WlBuffer,
        dmabuf: Option<Dmabuf>,
        target: Option<ReleaseTarget>,
        client: Option<HeldGauges>,
    ) -> BufferId {
        let t = &mut self.tracker;
        t.next += 1;
        let id = BufferId(t.next);
        t.records.insert(
            id,
            BufferRecord {
                buffer: buffer.downgrade(),
                dmabuf,
                target,
                merger: ReleaseMerger::new(),
                scanouts: Vec::new(),
                held: None,
                client,
                smithay_buffer: None,
            },
        );
        id
    }

    /// The buffer is no longer the surface's current one (replaced, removed, or its surface
    /// died): no new readers; release once the outstanding ones are done. `smithay_buffer`
    /// is the surface's renderer-state buffer at that moment (before smithay replaces it):
    /// kept for an implicit dma-buf client so its `wl_buffer.release` can be held back.
    pub(crate) fn retire(&mut self, id: BufferId, smithay_buffer: Option<SmithayBuffer>) {
        if let Some(rec) = self.tracker.records.get_mut(&id) {
            if rec.target.is_none() && rec.dmabuf.is_some() {
                let same = match (&smithay_buffer, rec.buffer.upgrade()) {
                    (Some(sb), Ok(wl)) => *sb == wl,
                    _ => false,
                };
                if same {
                    rec.smithay_buffer = smithay_buffer;
                }
            }
            let _ = rec.merger.seal();
            self.try_release(id);
        }
    }

    /// Adds `fence` to `id`'s merger; a fence the merger cannot keep holds the release with a
    /// reader that ends when the fence signals. Returns false for an unknown id.
    fn add_reader_fence(&mut self, id: BufferId, fence: Option<&Shared>) -> bool {
        let Some(rec) = self.tracker.records.get_mut(&id) else {
            return false;
        };
        self.stats.s.reader_reports += 1;
        let Some(fence) = fence else { return true };
        if !needs_fences(rec) {
            return true;
        }
        let unkept = rec.merger.add_reader_fence(fence.clone()).err();
        let client = rec.client.as_ref();
        let stats = &mut self.stats;
        rec.held = (rec.merger.held_fences() > 0).then(|| {
            rec.held.take().unwrap_or_else(|| match client {
                Some(c) => stats.held.hold_for(c, true),
                None => stats.held.hold(true),
            })
        });
        if let Some(Unkept { fence, error }) = unkept {
            match rec.merger.hold() {
                Ok(reader) => {
                    tracing::warn!(%error, ?id, "reader fence not kept; holding the release until it signals");
                    self.stats.s.reader_fences_unkept += 1;
                    self.end_reader_when_signalled(id, reader, fence);
                }
                Err(err) => tracing::warn!(%err, ?id, "reader fence for a finished release"),
            }
        }
        true
    }

    /// Ends reader `reader` of `id` once `fence` signalled.
    fn end_reader_when_signalled(&mut self, id: BufferId, reader: ReaderId, fence: Shared) {
        self.when_signalled(vec![fence], move |state: &mut D| {
            state.sync_bridge().end_reader(id, reader);
        });
    }

    fn end_reader(&mut self, id: BufferId, reader: ReaderId) {
        let Some(rec) = self.tracker.records.get_mut(&id) else {
            return;
        };
        match rec.merger.end_read(reader, None) {
            Ok(_) => {}
            Err(EndReadError::Ledger(err)) => tracing::debug!(%err, ?id, "ending a reader"),
            Err(EndReadError::Unkept { .. }) => {
                // No fence was given: cannot happen. The reader stays open (fail closed).
                tracing::error!(?id, "a reader without a fence was not ended");
            }
        }
        self.try_release(id);
    }

    /// A frame was rendered that sampled `sampled`; `render_fence` signals when the GPU is
    /// done reading (None: the renderer finished on the CPU, e.g. pixman). The bridge takes
    /// the fence: its one fd is shared by every sampled buffer's release, never duplicated,
    /// so running out of fds cannot make a release skip it.
    ///
    /// Call it in the same dispatch as the render, before dropping the frame's render
    /// elements (see the [module docs](self)). Unknown ids are ignored and counted.
    pub fn frame_rendered(&mut self, render_fence: Option<SyncFile>, sampled: &[BufferId]) {
        let fence = render_fence.map(Rc::new);
        for &id in sampled {
            timeline::sampled(id, fence.is_some());
            if self.add_reader_fence(id, fence.as_ref()) {
                self.try_release(id);
            } else {
                self.stats.s.reader_reports_unknown += 1;
            }
        }
    }

    /// A render read `sampled` and its completion is known only later (a GLES sync point
    /// that cannot be exported as a fence): each buffer that needs it gets a reader that
    /// holds its release until [`end_held_reads`](Self::end_held_reads). Call it where you
    /// would call [`frame_rendered`](Self::frame_rendered). Buffers whose release carries
    /// no fence (implicit wl_shm: the renderer copied them) are not held.
    pub fn hold_readers(&mut self, sampled: &[BufferId]) -> HeldReads {
        let mut reads = Vec::new();
        for &id in sampled {
            timeline::sampled(id, true);
            let Some(rec) = self.tracker.records.get_mut(&id) else {
                self.stats.s.reader_reports_unknown += 1;
                continue;
            };
            self.stats.s.reader_reports += 1;
            if !needs_fences(rec) {
                continue;
            }
            match rec.merger.hold() {
                Ok(reader) => reads.push((id, reader)),
                Err(err) => tracing::debug!(%err, ?id, "holding a finished release"),
            }
        }
        self.stats.s.reads_held += reads.len() as u64;
        HeldReads { reads }
    }

    /// The reads held by [`hold_readers`](Self::hold_readers) are over: release what that
    /// finishes.
    pub fn end_held_reads(&mut self, reads: HeldReads) {
        for (id, reader) in reads.reads {
            self.stats.s.reads_held_ended += 1;
            self.end_reader(id, reader);
        }
    }

    /// An atomic commit was made: `shown` are buffers it put on a plane (readers begin),
    /// `no_longer_shown` are buffers an earlier commit showed and this one replaced (their
    /// reader ends with `out_fence`, this commit's `OUT_FENCE_PTR` fence, which signals when
    /// the display stopped reading them; the bridge takes it). Releases whatever that
    /// finishes, before returning.
    ///
    /// Report transitions only: a buffer that stays on its plane is in neither list. For the
    /// fallback that releases at the page-flip event, call this from the flip handler with
    /// `out_fence: None`. A buffer shown on two planes or CRTCs needs two `shown` entries
    /// and two `no_longer_shown` entries.
    pub fn scanout_committed(
        &mut self,
        out_fence: Option<SyncFile>,
        shown: &[BufferId],
        no_longer_shown: &[BufferId],
    ) {
        for &id in shown {
            timeline::on_plane(id);
            match self.tracker.records.get_mut(&id) {
                Some(rec) => match rec.merger.begin_read() {
                    Ok(reader) => rec.scanouts.push(reader),
                    Err(err) => {
                        // Already replaced by the client: it must not be shown; count it.
                        tracing::debug!(%err, ?id, "scanout of a retired buffer");
                        self.stats.s.reader_reports_unknown += 1;
                    }
                },
                None => self.stats.s.reader_reports_unknown += 1,
            }
        }
        let fence = out_fence.map(Rc::new);
        for &id in no_longer_shown {
            timeline::off_plane(id, fence.is_some());
            // The fence goes in first (or holds a reader of its own when it cannot be
            // kept); only then does the scanout reader end.
            if !self.add_reader_fence(id, fence.as_ref()) {
                self.stats.s.reader_reports_unknown += 1;
                continue;
            }
            if let Some(rec) = self.tracker.records.get_mut(&id) {
                if let Some(reader) = rec.scanouts.pop() {
                    if let Err(err) = rec.merger.end_read(reader, None) {
                        tracing::debug!(%err, ?id, "ending a scanout reader");
                    }
                }
            }
            self.try_release(id);
        }
    }

    /// Delivers `id`'s release if it is sealed and has no reader left.
    fn try_release(&mut self, id: BufferId) {
        let Some(rec) = self.tracker.records.get_mut(&id) else {
            return;
        };
        let fences = match rec.merger.try_finish() {
            Ok(Some(release)) => release.into_fences(),
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(%err, ?id, "release merger in a bad state; releasing without fence");
                Vec::new()
            }
        };
        let Some(rec) = self.tracker.records.remove(&id) else {
            return;
        };
        self.stats.s.buffers_released += 1;
        self.deliver(id, rec, fences);
    }

    fn deliver(&mut self, id: BufferId, rec: BufferRecord, fences: Vec<Shared>) {
        let BufferRecord {
            dmabuf,
            target,
            held,
            smithay_buffer,
            ..
        } = rec;
        match target {
            None => {
                let Some(dmabuf) = dmabuf else {
                    timeline::released(id, "wl_buffer.release");
                    return;
                };
                let pending: Vec<Shared> = fences
                    .into_iter()
                    .filter(|f| !f.is_signaled().unwrap_or(false))
                    .collect();
                if pending.is_empty() {
                    timeline::released(id, "wl_buffer.release (readers done)");
                    return;
                }
                let imported = if self.config.dmabuf_fences.is_supported() {
                    let planes = planes(&dmabuf);
                    let mut all = true;
                    for fence in &pending {
                        match import_planes(&planes, fence, Access::Read) {
                            Ok(()) => self.stats.s.fences_imported += 1,
                            Err(err) => {
                                tracing::warn!(%err, "importing the release fence into a client dma-buf failed; holding the release until it signals");
                                self.stats.s.fence_import_failures += 1;
                                all = false;
                            }
                        }
                    }
                    all
                } else {
                    self.stats.s.fence_import_failures += 1;
                    false
                };
                if imported {
                    timeline::released(id, "wl_buffer.release (fence in the dma-buf)");
                    return;
                }
                match smithay_buffer {
                    Some(buffer) => {
                        self.stats.s.releases_held_until_signalled += 1;
                        self.when_signalled(pending, move |_: &mut D| {
                            // wl_buffer.release goes out now (with smithay's last clone).
                            timeline::released(id, "wl_buffer.release (fences signalled)");
                            drop(buffer);
                            drop(held);
                        });
                    }
                    None => {
                        // smithay already dropped its buffer (it sent wl_buffer.release):
                        // nothing left to hold. Counted so it is seen.
                        tracing::warn!(
                            "implicit release without its fence: the buffer was not held"
                        );
                        self.stats.s.implicit_releases_unheld += 1;
                    }
                }
            }
            Some(ReleaseTarget::Syncobj(point)) => match single_fence(fences) {
                Ok(fence) => match point.deliver(fence.as_deref()) {
                    Ok(how) => record(&mut self.stats, id, how),
                    Err((err, point)) => {
                        tracing::warn!(%err, "transferring the release fence failed; waiting on the CPU");
                        self.stats.s.release_points_cpu_waited += 1;
                        self.stats.s.releases_held_until_signalled += 1;
                        let fences: Vec<Shared> = fence.into_iter().collect();
                        self.when_signalled(fences, move |_: &mut D| {
                            if let Ok(how) = point.deliver(None) {
                                timeline::released(id, how.name());
                            }
                            drop(held);
                        });
                    }
                },
                Err(fences) => {
                    self.stats.s.release_points_cpu_waited += 1;
                    self.stats.s.releases_held_until_signalled += 1;
                    self.when_signalled(fences, move |_: &mut D| {
                        if let Ok(how) = point.deliver(None) {
                            timeline::released(id, how.name());
                        }
                        drop(held);
                    });
                }
            },
            Some(ReleaseTarget::Explicit(object)) => match single_fence(fences) {
                Ok(Some(fence)) => {
                    // wayland-backend duplicates the fd to send it, and a failed duplicate
                    // disconnects the client: make sure one fd is free for it.
                    match fence.try_clone() {
                        Ok(spare) => {
                            drop(spare);
                            record(&mut self.stats, id, object.deliver(Some(&fence)));
                        }
                        Err(err) => {
                            tracing::warn!(%err, "no fd to send fenced_release; releasing when the fence signals");
                            self.stats.s.releases_held_until_signalled += 1;
                            self.when_signalled(vec![fence], move |state: &mut D| {
                                let how = object.deliver(None);
                                record(&mut state.sync_bridge().stats, id, how);
                                drop(held);
                            });
                        }
                    }
                }
                Ok(None) => record(&mut self.stats, id, object.deliver(None)),
                Err(fences) => {
                    self.stats.s.releases_held_until_signalled += 1;
                    self.when_signalled(fences, move |state: &mut D| {
                        let how = object.deliver(None);
                        record(&mut state.sync_bridge().stats, id, how);
                        drop(held);
                    });
                }
            },
        }
    }

    /// Runs `action` once every fence in `fences` has signalled, without blocking: a
    /// one-shot source on a duplicate of each pending fence, or, when no fd is left for the
    /// duplicate or the source cannot be inserted, a timer that polls the fence (no fd
    /// needed). Never runs it early; if even the timer cannot be inserted, `action` never
    /// runs and what it holds stays held (logged).
    fn when_signalled(&mut self, fences: Vec<Shared>, action: impl FnOnce(&mut D) + 'static) {
        let pending: Vec<Shared> = fences
            .into_iter()
            .filter(|f| !f.is_signaled().unwrap_or(false))
            .collect();
        let gate = Rc::new(Gate {
            remaining: Cell::new(pending.len().max(1)),
            action: Cell::new(Some(Box::new(action))),
        });
        if pending.is_empty() {
            // Already signalled: run it from the loop (the caller holds the bridge).
            let gate = gate.clone();
            let inserted =
                self.loop_handle
                    .insert_source(Timer::immediate(), move |_, _, state| {
                        gate.one_done(state);
                        TimeoutAction::Drop
                    });
            if let Err(err) = inserted {
                tracing::error!(err = %err.error, "cannot schedule a release; it stays held");
            }
            return;
        }
        for fence in pending {
            let watched = fence
                .try_clone()
                .map_err(|err| err.to_string())
                .and_then(|dup| {
                    let gate = gate.clone();
                    self.loop_handle
                        .insert_source(SyncFileSource::new(dup), move |_fence, _, state| {
                            gate.one_done(state)
                        })
                        .map_err(|err| err.error.to_string())
                });
            if let Err(err) = watched {
                tracing::warn!(%err, "no wait source for a fence; polling it");
                self.stats.s.fence_waits_polled += 1;
                let gate = gate.clone();
                let inserted = self.loop_handle.insert_source(
                    Timer::from_duration(POLL_INTERVAL),
                    move |_, _, state| {
                        if fence.is_signaled().unwrap_or(false) {
                            gate.one_done(state);
                            TimeoutAction::Drop
                        } else {
                            TimeoutAction::ToDuration(POLL_INTERVAL)
                        }
                    },
                );
                if let Err(err) = inserted {
                    tracing::error!(err = %err.error, "cannot poll a fence; what waits on it stays held");
                }
            }
        }
    }
}

/// What runs once a release's fences signalled.
type Action<D> = Box<dyn FnOnce(&mut D)>;

/// Counts down the fences of one [`SyncBridge::when_signalled`] and runs its action once.
struct Gate<D> {
    remaining: Cell<usize>,
    action: Cell<Option<Action<D>>>,
}

impl<D> Gate<D> {
    fn one_done(&self, state: &mut D) {
        let left = self.remaining.get().saturating_sub(1);
        self.remaining.set(left);
        if left == 0 {
            if let Some(action) = self.action.take() {
                action(state);
            }
        }
    }
}

fn record(stats: &mut StatsCollector, id: BufferId, how: Delivered) {
    timeline::released(id, how.name());
    let s = &mut stats.s;
    match how {
        Delivered::PointFenced => s.release_points_fenced += 1,
        Delivered::PointCpuSignalled => s.release_points_cpu_signalled += 1,
        Delivered::ExplicitFenced => s.explicit_fenced_releases += 1,
        Delivered::ExplicitImmediate => s.explicit_immediate_releases += 1,
        Delivered::PointSkipped | Delivered::ExplicitGone => {}
    }
}
