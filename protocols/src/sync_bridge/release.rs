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
//! ```no_run
//! # use syncbridge_protocols::{SyncBridge, SyncBridgeHandler, BufferId};
//! # use syncbridge_bridge::sync_file::SyncFile;
//! # fn demo<D: SyncBridgeHandler>(bridge: &mut SyncBridge<D>, render_fence: Option<SyncFile>,
//! #     sampled: Vec<BufferId>, out_fence: Option<SyncFile>, b2: BufferId, b1: BufferId) {
//! bridge.frame_rendered(render_fence.as_ref(), &sampled);
//! // atomic commit N shows b2 instead of b1:
//! bridge.scanout_committed(out_fence.as_ref(), &[b2], &[b1]);
//! // now drop your clone of b1's smithay Buffer: wl_buffer.release goes out
//! # }
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::rc::Rc;

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::reexports::calloop::LoopHandle;
use smithay::reexports::wayland_server::{protocol::wl_buffer::WlBuffer, Resource, Weak};
use syncbridge_bridge::dmabuf::{import_planes, Access};
use syncbridge_bridge::release::{ReaderId, ReleaseMerger};
use syncbridge_bridge::source::SyncFileSource;
use syncbridge_bridge::sync_file::SyncFile;

use super::stats::StatsCollector;
use super::{BufferId, SyncBridge};
use crate::gauge::{HeldGauges, HeldGuard};
use crate::release_target::{Delivered, ReleaseTarget};

/// What the bridge knows about one attached buffer.
#[derive(Debug)]
pub(crate) struct BufferRecord {
    buffer: Weak<WlBuffer>,
    dmabuf: Option<Dmabuf>,
    target: Option<ReleaseTarget>,
    merger: ReleaseMerger,
    scanouts: Vec<ReaderId>,
    held: Option<HeldGuard>,
    /// The budget of the buffer's client: reader fences held for its release count on it.
    client: Option<HeldGauges>,
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

fn planes(dmabuf: &Dmabuf) -> Vec<BorrowedFd<'_>> {
    dmabuf.handles().collect()
}

/// Merges fences into one; on a merge failure gives them all back.
fn single_fence(fences: Vec<SyncFile>) -> Result<Option<SyncFile>, Vec<SyncFile>> {
    if fences.len() <= 1 {
        return Ok(fences.into_iter().next());
    }
    let mut acc: Option<SyncFile> = None;
    for f in &fences {
        let next = match &acc {
            None => f.try_clone(),
            Some(a) => a.merge(f),
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

impl<D: 'static> SyncBridge<D> {
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
            },
        );
        id
    }

    /// The buffer is no longer the surface's current one (replaced, removed, or its surface
    /// died): no new readers; release once the outstanding ones are done.
    pub(crate) fn retire(&mut self, id: BufferId) {
        if let Some(rec) = self.tracker.records.get_mut(&id) {
            let _ = rec.merger.seal();
            self.try_release(id);
        }
    }

    fn add_reader_fence(
        rec: &mut BufferRecord,
        stats: &mut StatsCollector,
        fence: Option<&SyncFile>,
    ) {
        stats.s.reader_reports += 1;
        let Some(fence) = fence else { return };
        // An implicit-sync buffer that is not a dma-buf (wl_shm) has nowhere to carry a
        // fence: the renderer copied it, and wl_buffer.release is all the client needs.
        if rec.target.is_none() && rec.dmabuf.is_none() {
            return;
        }
        let owned = match fence.try_clone() {
            Ok(f) => f,
            Err(err) => {
                // Out of fds: the fence cannot be kept. Count it; the release still goes out
                // (a stuck buffer is worse), which the stats make visible.
                tracing::warn!(%err, "cannot keep a reader fence");
                stats.s.fence_import_failures += 1;
                return;
            }
        };
        if let Err(err) = rec.merger.add_reader_fence(owned) {
            tracing::warn!(%err, "release merger refused a reader fence");
            stats.s.fence_import_failures += 1;
        }
        let client = rec.client.as_ref();
        rec.held = (rec.merger.held_fences() > 0).then(|| {
            rec.held.take().unwrap_or_else(|| match client {
                Some(c) => stats.held.hold_for(c, true),
                None => stats.held.hold(true),
            })
        });
    }

    /// A frame was rendered that sampled `sampled`; `render_fence` signals when the GPU is
    /// done reading (None: the renderer finished on the CPU, e.g. pixman).
    ///
    /// Call it in the same dispatch as the render, before dropping the frame's render
    /// elements (see the [module docs](self)). Unknown ids are ignored and counted.
    pub fn frame_rendered(&mut self, render_fence: Option<&SyncFile>, sampled: &[BufferId]) {
        for &id in sampled {
            match self.tracker.records.get_mut(&id) {
                Some(rec) => {
                    Self::add_reader_fence(rec, &mut self.stats, render_fence);
                    self.try_release(id);
                }
                None => self.stats.s.reader_reports_unknown += 1,
            }
        }
    }

    /// An atomic commit was made: `shown` are buffers it put on a plane (readers begin),
    /// `no_longer_shown` are buffers an earlier commit showed and this one replaced (their
    /// reader ends with `out_fence`, this commit's `OUT_FENCE_PTR` fence, which signals when
    /// the display stopped reading them). Releases whatever that finishes, before returning.
    ///
    /// Report transitions only: a buffer that stays on its plane is in neither list. For the
    /// fallback that releases at the page-flip event, call this from the flip handler with
    /// `out_fence: None`. A buffer shown on two planes or CRTCs needs two `shown` entries
    /// and two `no_longer_shown` entries.
    pub fn scanout_committed(
        &mut self,
        out_fence: Option<&SyncFile>,
        shown: &[BufferId],
        no_longer_shown: &[BufferId],
    ) {
        for &id in shown {
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
        for &id in no_longer_shown {
            let Some(rec) = self.tracker.records.get_mut(&id) else {
                self.stats.s.reader_reports_unknown += 1;
                continue;
            };
            Self::add_reader_fence(rec, &mut self.stats, out_fence);
            if let Some(reader) = rec.scanouts.pop() {
                if let Err(err) = rec.merger.end_read(reader, None) {
                    tracing::debug!(%err, ?id, "ending a scanout reader");
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
        self.deliver(rec, fences);
    }

    fn deliver(&mut self, rec: BufferRecord, fences: Vec<SyncFile>) {
        let BufferRecord {
            dmabuf,
            target,
            held,
            ..
        } = rec;
        let stats = &mut self.stats;
        match target {
            None => {
                let Some(dmabuf) = dmabuf else { return };
                if fences.is_empty() {
                    return;
                }
                if !self.config.dmabuf_fences.is_supported() {
                    stats.s.fence_import_failures += 1;
                    return;
                }
                let planes = planes(&dmabuf);
                for fence in &fences {
                    match import_planes(&planes, fence, Access::Read) {
                        Ok(()) => stats.s.fences_imported += 1,
                        Err(err) => {
                            tracing::warn!(%err, "importing the release fence into a client dma-buf failed");
                            stats.s.fence_import_failures += 1;
                        }
                    }
                }
            }
            Some(ReleaseTarget::Syncobj(point)) => match single_fence(fences) {
                Ok(fence) => match point.deliver(fence.as_ref()) {
                    Ok(how) => record(stats, how),
                    Err((err, point)) => {
                        tracing::warn!(%err, "transferring the release fence failed; waiting on the CPU");
                        stats.s.release_points_cpu_waited += 1;
                        let fences: Vec<SyncFile> = fence.into_iter().collect();
                        cpu_wait_then(&self.loop_handle, fences, move || {
                            let _ = point.deliver(None);
                        });
                    }
                },
                Err(fences) => {
                    stats.s.release_points_cpu_waited += 1;
                    cpu_wait_then(&self.loop_handle, fences, move || {
                        let _ = point.deliver(None);
                    });
                }
            },
            Some(ReleaseTarget::Explicit(object)) => match single_fence(fences) {
                Ok(fence) => record(stats, object.deliver(fence.as_ref())),
                Err(fences) => cpu_wait_then(&self.loop_handle, fences, move || {
                    object.deliver(None);
                }),
            },
        }
        drop(held);
    }
}

fn record(stats: &mut StatsCollector, how: Delivered) {
    let s = &mut stats.s;
    match how {
        Delivered::PointFenced => s.release_points_fenced += 1,
        Delivered::PointCpuSignalled => s.release_points_cpu_signalled += 1,
        Delivered::ExplicitFenced => s.explicit_fenced_releases += 1,
        Delivered::ExplicitImmediate => s.explicit_immediate_releases += 1,
        Delivered::PointSkipped | Delivered::ExplicitGone => {}
    }
}

type PendingAction = Rc<RefCell<Option<Box<dyn FnOnce()>>>>;

/// Runs `action` once every fence in `fences` has signalled, without blocking: one
/// one-shot source per fence. The fallback when a fence cannot be transferred.
fn cpu_wait_then<D: 'static>(
    handle: &LoopHandle<'static, D>,
    fences: Vec<SyncFile>,
    action: impl FnOnce() + 'static,
) {
    let remaining = Rc::new(Cell::new(fences.len()));
    let action: PendingAction = Rc::new(RefCell::new(Some(Box::new(action))));
    let fire = {
        let remaining = remaining.clone();
        let action = action.clone();
        move || {
            remaining.set(remaining.get().saturating_sub(1));
            if remaining.get() == 0 {
                if let Some(a) = action.borrow_mut().take() {
                    a();
                }
            }
        }
    };
    if fences.is_empty() {
        if let Some(a) = action.borrow_mut().take() {
            a();
        }
        return;
    }
    for fence in fences {
        let fire_cb = fire.clone();
        if let Err(err) =
            handle.insert_source(SyncFileSource::new(fence), move |_fence, _, _| fire_cb())
        {
            // The fence went down with the failed insertion; do not wait for it forever.
            tracing::warn!(%err, "cannot wait for a release fence; releasing without it");
            fire();
        }
    }
}
