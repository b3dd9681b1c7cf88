//! Release merging: collect the fences of every reader of a buffer (renderer fences, KMS
//! out-fences), keep them bounded, and deliver one release fence when the last reader is
//! known.
//!
//! The model: a buffer is *attached* (a surface commit makes it current). While attached,
//! readers come and go: the renderer samples it for a frame ([`ReleaseMerger::begin_read`]
//! when the frame is recorded, [`ReleaseMerger::end_read`] with the render fence when it is
//! submitted), KMS scans it out (begin when the commit showing it is made, end with the
//! out-fence of the commit that replaces it). When the client commits a different buffer
//! the old one is [`seal`](ReleaseMerger::seal)ed: no new reader can start. Once it is sealed
//! and every begun reader has ended, [`try_finish`](ReleaseMerger::try_finish) hands out a
//! [`ReleaseFence`]: deliver it by importing it into the dma-buf as a read fence
//! ([`ReleaseFence::import_into`]), by transferring it into a syncobj release point
//! ([`ReleaseFence::signal_point`], which CPU-signals the point when there is no fence), or
//! as a [`SyncFile`] ([`ReleaseFence::into_sync_file`]); then send `wl_buffer.release` at once.
//!
//! Bounds: every reader fence is merged into one accumulated fence as it arrives
//! (`SYNC_IOC_MERGE` keeps one fence per fence context and drops signalled ones), and an
//! already-signalled reader fence is dropped without merging. So a merger holds at most one
//! sync_file fd (plus at most [`MAX_UNMERGED`] more if merges fail with ENOMEM/EMFILE).
//!
//! Fail closed: a reader fence the merger cannot keep (merges fail and [`MAX_UNMERGED`]
//! pending fences already wait unmerged) is never dropped. [`ReleaseMerger::add_reader_fence`]
//! gives it back ([`Unkept`]) and [`ReleaseMerger::end_read`] leaves the reader open and
//! gives back the fence with the reader's id ([`EndReadError::Unkept`]): the caller waits for
//! that fence itself and then ends the reader with no fence. A reader whose fence is kept
//! elsewhere can also start after the seal with [`ReleaseMerger::hold`] (for a read that
//! already happened, such as a render whose completion is only known later). Either way the
//! release is not handed out before the read is over.
//!
//! The bookkeeping ([`ReaderLedger`]) is pure logic; [`ReleaseMerger`] is generic over the
//! fence type ([`ReaderFence`]) so it is tested on the host with fake fences.
//!
//! ```no_run
//! use syncbridge_bridge::release::ReleaseMerger;
//! use syncbridge_bridge::SyncFile;
//! # fn render_fence() -> SyncFile { unimplemented!() }
//! # fn out_fence() -> SyncFile { unimplemented!() }
//! # fn planes() -> Vec<std::os::fd::BorrowedFd<'static>> { unimplemented!() }
//! let mut merger: ReleaseMerger = ReleaseMerger::new();
//! let frame = merger.begin_read()?;         // renderer samples the buffer
//! let scanout = merger.begin_read()?;       // KMS shows it
//! merger.end_read(frame, Some(render_fence()))?;
//! merger.seal();                            // client attached another buffer
//! assert!(merger.try_finish()?.is_none());  // KMS still reads it
//! merger.end_read(scanout, Some(out_fence()))?; // out-fence of the replacing commit
//! if let Some(release) = merger.try_finish()? {
//!     release.import_into(&planes())?;      // implicit-sync client: a read fence on the buffer
//!     // ... send wl_buffer.release now ...
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::os::fd::BorrowedFd;

use crate::dmabuf::{self, Access, DmabufFenceError};
use crate::error::ErrorKind;
use crate::stats::{bump, COUNTERS};
use crate::sync_file::{SyncFile, SyncFileError};
use crate::syncobj::{SyncobjError, Timeline};

/// How many reader fences may wait unmerged after `SYNC_IOC_MERGE` failed (ENOMEM/EMFILE)
/// before the merger refuses more.
pub const MAX_UNMERGED: usize = 8;

/// A fence the release merger can collect. Implemented by [`SyncFile`]; tests implement it
/// with fakes.
pub trait ReaderFence: Sized {
    /// Whether the fence has signalled already (never blocks).
    fn is_signaled(&self) -> Result<bool, SyncFileError>;
    /// A fence that signals when both have; must keep one fence per fence context.
    fn merge(&self, other: &Self) -> Result<Self, SyncFileError>;
}

impl ReaderFence for SyncFile {
    fn is_signaled(&self) -> Result<bool, SyncFileError> {
        SyncFile::is_signaled(self)
    }
    fn merge(&self, other: &Self) -> Result<Self, SyncFileError> {
        SyncFile::merge(self, other)
    }
}

/// Identifies one reader of a buffer, from [`ReleaseMerger::begin_read`] to
/// [`ReleaseMerger::end_read`].
#[must_use = "a begun reader must be ended with end_read, or the buffer is never released"]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ReaderId(u64);

impl ReaderId {
    /// The id's number (unique per merger generation), for logs.
    pub fn get(&self) -> u64 {
        self.0
    }
}

/// Errors of the release merger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// `begin_read` after `seal`: the buffer is no longer attached.
    #[error("buffer is sealed: no new readers may start")]
    Sealed,
    /// `end_read` with an id this merger did not hand out, or already ended.
    #[error("reader {0} is unknown or already ended")]
    UnknownReader(u64),
    /// The release was already handed out (`try_finish` returned it); `reset` first.
    #[error("release fence already handed out")]
    Finished,
    /// Merging failed and [`MAX_UNMERGED`] fences are already waiting unmerged.
    #[error("too many unmerged reader fences ({MAX_UNMERGED}) after merge failures: {0}")]
    TooManyUnmerged(#[source] SyncFileError),
    /// A fence operation failed.
    #[error(transparent)]
    Fence(#[from] SyncFileError),
}

impl ReleaseError {
    /// What kind of failure this is. Ledger misuse (sealed, unknown reader, finished) is a bug
    /// in the caller and counts as [`ErrorKind::BadInput`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReleaseError::Sealed | ReleaseError::UnknownReader(_) | ReleaseError::Finished => {
                ErrorKind::BadInput
            }
            ReleaseError::TooManyUnmerged(_) => ErrorKind::Os,
            ReleaseError::Fence(e) => e.kind(),
        }
    }
}

/// Where a buffer's release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseProgress {
    /// Still attached, or readers outstanding.
    Pending {
        /// Readers begun and not yet ended.
        outstanding: usize,
        /// Whether the buffer was sealed.
        sealed: bool,
    },
    /// Sealed and every reader ended: `try_finish` will hand out the release.
    Ready,
    /// The release was handed out.
    Finished,
}

/// A shared fence (one fd, several buffers' mergers): how a compositor hands one render
/// fence or out-fence to every buffer it read without duplicating the fd.
impl ReaderFence for std::rc::Rc<SyncFile> {
    fn is_signaled(&self) -> Result<bool, SyncFileError> {
        SyncFile::is_signaled(self)
    }
    fn merge(&self, other: &Self) -> Result<Self, SyncFileError> {
        SyncFile::merge(self, other).map(std::rc::Rc::new)
    }
}

/// A reader fence the merger could not keep, handed back by
/// [`ReleaseMerger::add_reader_fence`]. The release must wait for it: wait for `fence`
/// yourself, holding the release back (for example with a reader from
/// [`ReleaseMerger::hold`] that you end when the fence signals).
#[must_use = "the read this fence stands for is not over: wait for the fence before releasing"]
#[derive(Debug)]
pub struct Unkept<F> {
    /// The fence, given back (its fd stays owned by it).
    pub fence: F,
    /// Why it could not be kept.
    pub error: ReleaseError,
}

/// Why [`ReleaseMerger::end_read`] did not end a reader.
#[must_use = "a reader that was not ended still holds the release"]
#[derive(Debug, thiserror::Error)]
pub enum EndReadError<F: std::fmt::Debug> {
    /// The reader is unknown, already ended, or the release was handed out; nothing changed
    /// (the fence, if any, was dropped).
    #[error(transparent)]
    Ledger(ReleaseError),
    /// The reader's fence could not be kept: the reader is still open. Wait for `fence`,
    /// then call `end_read(reader, None)`.
    #[error("reader fence not kept ({error}); reader {} stays open", .reader.get())]
    Unkept {
        /// The reader, still open.
        reader: ReaderId,
        /// Its fence, given back.
        fence: F,
        /// Why it could not be kept.
        #[source]
        error: ReleaseError,
    },
}

/// Pure bookkeeping of readers: who began, who ended, whether the buffer is sealed.
#[derive(Debug, Default, Clone)]
pub struct ReaderLedger {
    /// Ids begun and not ended (few: one per in-flight frame or scanout).
    open: Vec<u64>,
    next_id: u64,
    sealed: bool,
    finished: bool,
    ended_total: u64,
}

impl ReaderLedger {
    /// A fresh ledger for a newly attached buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader starts. Fails after `seal` or after the release was handed out.
    pub fn begin(&mut self) -> Result<ReaderId, ReleaseError> {
        if self.finished {
            return Err(ReleaseError::Finished);
        }
        if self.sealed {
            return Err(ReleaseError::Sealed);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.open.push(id);
        Ok(ReaderId(id))
    }

    /// A reader that holds the release even after the seal (not after the release was
    /// handed out): for a read that already happened and whose end is only known later.
    pub fn hold(&mut self) -> Result<ReaderId, ReleaseError> {
        if self.finished {
            return Err(ReleaseError::Finished);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.open.push(id);
        Ok(ReaderId(id))
    }

    /// A reader ended. Fails for an unknown or already ended id.
    pub fn end(&mut self, id: ReaderId) -> Result<ReleaseProgress, ReleaseError> {
        if self.finished {
            return Err(ReleaseError::Finished);
        }
        let pos = self
            .open
            .iter()
            .position(|&x| x == id.0)
            .ok_or(ReleaseError::UnknownReader(id.0))?;
        self.open.swap_remove(pos);
        self.ended_total += 1;
        Ok(self.progress())
    }

    /// No more readers will begin (the buffer was replaced or destroyed). Idempotent.
    pub fn seal(&mut self) -> ReleaseProgress {
        self.sealed = true;
        self.progress()
    }

    /// Where the release stands.
    pub fn progress(&self) -> ReleaseProgress {
        if self.finished {
            ReleaseProgress::Finished
        } else if self.sealed && self.open.is_empty() {
            ReleaseProgress::Ready
        } else {
            ReleaseProgress::Pending {
                outstanding: self.open.len(),
                sealed: self.sealed,
            }
        }
    }

    /// Marks the release handed out; only valid when [`ReleaseProgress::Ready`].
    fn finish(&mut self) -> bool {
        if self.progress() == ReleaseProgress::Ready {
            self.finished = true;
            true
        } else {
            false
        }
    }

    /// Readers begun and not ended.
    pub fn outstanding(&self) -> usize {
        self.open.len()
    }

    /// Readers ended so far.
    pub fn ended_total(&self) -> u64 {
        self.ended_total
    }
}

/// Collects the reader fences of one buffer and hands out one bounded release fence.
/// See the [module docs](self).
#[derive(Debug)]
pub struct ReleaseMerger<F: ReaderFence = SyncFile> {
    ledger: ReaderLedger,
    merged: Option<F>,
    unmerged: Vec<F>,
    added: u64,
    dropped_signaled: u64,
}

impl<F: ReaderFence> Default for ReleaseMerger<F> {
    fn default() -> Self {
        ReleaseMerger {
            ledger: ReaderLedger::new(),
            merged: None,
            unmerged: Vec::new(),
            added: 0,
            dropped_signaled: 0,
        }
    }
}

impl<F: ReaderFence> ReleaseMerger<F> {
    /// A merger for a newly attached buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader starts using the buffer. See [`ReaderLedger::begin`].
    pub fn begin_read(&mut self) -> Result<ReaderId, ReleaseError> {
        self.ledger.begin()
    }

    /// A reader that holds the release until [`end_read`](Self::end_read), allowed after
    /// [`seal`](Self::seal) too: see [`ReaderLedger::hold`].
    pub fn hold(&mut self) -> Result<ReaderId, ReleaseError> {
        self.ledger.hold()
    }

    /// A reader is done submitting: `fence` signals when it stops reading (`None`: it
    /// finished on the CPU, or had nothing to wait for). Returns the progress.
    ///
    /// If the fence cannot be kept (only after [`MAX_UNMERGED`] merge failures), the reader
    /// is *not* ended: [`EndReadError::Unkept`] gives back the reader and the fence, and the
    /// release stays held until the caller ends the reader after the fence signalled.
    pub fn end_read(
        &mut self,
        id: ReaderId,
        fence: Option<F>,
    ) -> Result<ReleaseProgress, EndReadError<F>>
    where
        F: std::fmt::Debug,
    {
        if self.ledger.finished {
            return Err(EndReadError::Ledger(ReleaseError::Finished));
        }
        if !self.ledger.open.contains(&id.0) {
            return Err(EndReadError::Ledger(ReleaseError::UnknownReader(id.0)));
        }
        if let Some(f) = fence {
            if let Err(Unkept { fence, error }) = self.add_reader_fence(f) {
                return Err(EndReadError::Unkept {
                    reader: id,
                    fence,
                    error,
                });
            }
        }
        self.ledger.end(id).map_err(EndReadError::Ledger)
    }

    /// Adds a fence of a reader that was not tracked with `begin_read` (e.g. a one-off copy).
    /// Merged at once; dropped if it already signalled. A fence that cannot be kept is given
    /// back ([`Unkept`]): the caller must hold the release until it signals.
    pub fn add_reader_fence(&mut self, fence: F) -> Result<(), Unkept<F>> {
        if self.ledger.finished {
            return Err(Unkept {
                fence,
                error: ReleaseError::Finished,
            });
        }
        self.added += 1;
        // A poll failure is treated as "not signalled": merging it is always safe.
        if fence.is_signaled().unwrap_or(false) {
            self.dropped_signaled += 1;
            bump(&COUNTERS.signalled_fences_dropped);
            return Ok(());
        }
        self.retry_unmerged();
        match self.merged.take() {
            None => self.merged = Some(fence),
            Some(acc) => match acc.merge(&fence) {
                Ok(m) => self.merged = Some(m),
                Err(e) => {
                    self.merged = Some(acc);
                    if self.unmerged.len() >= MAX_UNMERGED {
                        // Make room without an fd: unmerged fences that signalled meanwhile.
                        self.unmerged.retain(|f| !f.is_signaled().unwrap_or(false));
                    }
                    if self.unmerged.len() >= MAX_UNMERGED {
                        tracing::warn!(
                            "release merger: merge failed and unmerged list is full: {e}; \
                             the fence is given back to be waited for"
                        );
                        return Err(Unkept {
                            fence,
                            error: ReleaseError::TooManyUnmerged(e),
                        });
                    }
                    tracing::debug!("release merger: merge failed, keeping fence unmerged: {e}");
                    self.unmerged.push(fence);
                }
            },
        }
        Ok(())
    }

    fn retry_unmerged(&mut self) {
        while let Some(f) = self.unmerged.pop() {
            let merged = match &self.merged {
                Some(acc) => acc.merge(&f),
                None => {
                    self.merged = Some(f);
                    continue;
                }
            };
            match merged {
                Ok(m) => self.merged = Some(m),
                Err(_) => {
                    self.unmerged.push(f);
                    return;
                }
            }
        }
    }

    /// No more readers will begin. Returns the progress.
    pub fn seal(&mut self) -> ReleaseProgress {
        self.ledger.seal()
    }

    /// Where the release stands.
    pub fn progress(&self) -> ReleaseProgress {
        self.ledger.progress()
    }

    /// The bookkeeping.
    pub fn ledger(&self) -> &ReaderLedger {
        &self.ledger
    }

    /// Fences currently held (0, 1, or more only after merge failures).
    pub fn held_fences(&self) -> usize {
        usize::from(self.merged.is_some()) + self.unmerged.len()
    }

    /// Reader fences added in total, and how many of them were dropped as already signalled.
    pub fn counts(&self) -> (u64, u64) {
        (self.added, self.dropped_signaled)
    }

    /// The release, once sealed and every reader ended; `Ok(None)` before. Hands it out once
    /// (later calls: [`ReleaseError::Finished`] until [`reset`](Self::reset)).
    pub fn try_finish(&mut self) -> Result<Option<ReleaseFence<F>>, ReleaseError> {
        if self.ledger.finished {
            return Err(ReleaseError::Finished);
        }
        if !self.ledger.finish() {
            return Ok(None);
        }
        self.retry_unmerged();
        let mut fences: Vec<F> = self.merged.take().into_iter().collect();
        fences.append(&mut self.unmerged);
        Ok(Some(ReleaseFence { fences }))
    }

    /// Seals and hands out the release now, whatever readers are still outstanding: use only
    /// when the buffer is going away and the outstanding readers are known not to matter
    /// (e.g. the device was lost). Returns `Finished` if already handed out.
    pub fn finish_now(&mut self) -> Result<ReleaseFence<F>, ReleaseError> {
        if self.ledger.finished {
            return Err(ReleaseError::Finished);
        }
        self.ledger.sealed = true;
        self.ledger.open.clear();
        match self.try_finish()? {
            Some(r) => Ok(r),
            None => Err(ReleaseError::Finished),
        }
    }

    /// Starts over for the buffer's next attachment (drops any held fence).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The fence that ends a buffer's use by the compositor, from
/// [`ReleaseMerger::try_finish`]. Usually one fence, or none when every reader finished on
/// the CPU or already signalled (then it is "already signalled").
#[must_use = "deliver the release fence (import_into, signal_point or into_sync_file)"]
#[derive(Debug)]
pub struct ReleaseFence<F = SyncFile> {
    fences: Vec<F>,
}

impl<F> ReleaseFence<F> {
    /// True when there is no fence to wait for.
    pub fn is_signaled(&self) -> bool {
        self.fences.is_empty()
    }

    /// Number of fences (0 or 1 normally; more only after merge failures).
    pub fn fence_count(&self) -> usize {
        self.fences.len()
    }

    /// The fences, for callers delivering them some other way.
    pub fn into_fences(self) -> Vec<F> {
        self.fences
    }
}

impl ReleaseFence<SyncFile> {
    /// Implicit-sync delivery: imports the fence(s) into every plane as a *read* fence, so the
    /// client's next write waits for our readers. Nothing to do when already signalled.
    /// Planes are borrowed.
    pub fn import_into(&self, planes: &[BorrowedFd<'_>]) -> Result<(), DmabufFenceError> {
        for f in &self.fences {
            dmabuf::import_planes(planes, f, Access::Read)?;
        }
        Ok(())
    }

    /// Syncobj delivery: makes `point` signal when the readers are done
    /// ([`Timeline::import_point`]), or signals it from the CPU at once when there is no
    /// fence ([`Timeline::signal`]).
    pub fn signal_point(&self, timeline: &Timeline, point: u64) -> Result<(), SyncobjError> {
        match self.fences.as_slice() {
            [] => timeline.signal(point),
            [one] => timeline.import_point(point, one),
            [first, rest @ ..] => {
                let mut acc = first.try_clone()?;
                for f in rest {
                    acc = acc.merge(f)?;
                }
                timeline.import_point(point, &acc)
            }
        }
    }

    /// Explicit-sync delivery (`zwp_linux_buffer_release_v1.fenced_release`): one
    /// [`SyncFile`], or `None` when already signalled (send `immediate_release`).
    pub fn into_sync_file(self) -> Result<Option<SyncFile>, SyncFileError> {
        let mut it = self.fences.into_iter();
        let Some(mut acc) = it.next() else {
            return Ok(None);
        };
        for f in it {
            acc = acc.merge(&f)?;
        }
        Ok(Some(acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    /// A fake fence: a set of (context -> (seqno, signalled)) like a merged sync_file.
    #[derive(Debug, Clone)]
    struct Fake {
        parts: BTreeMap<u64, (u64, Rc<Cell<bool>>)>,
        fail_merge: Rc<Cell<bool>>,
    }

    fn fake(ctx: u64, seq: u64, fail: &Rc<Cell<bool>>) -> (Fake, Rc<Cell<bool>>) {
        let sig = Rc::new(Cell::new(false));
        let mut parts = BTreeMap::new();
        parts.insert(ctx, (seq, sig.clone()));
        (
            Fake {
                parts,
                fail_merge: fail.clone(),
            },
            sig,
        )
    }

    impl ReaderFence for Fake {
        fn is_signaled(&self) -> Result<bool, SyncFileError> {
            Ok(self.parts.values().all(|(_, s)| s.get()))
        }
        fn merge(&self, other: &Self) -> Result<Self, SyncFileError> {
            if self.fail_merge.get() {
                return Err(SyncFileError::Os {
                    op: "SYNC_IOC_MERGE",
                    fd: -1,
                    errno: Errno::MFILE,
                });
            }
            // Like dma_fence_unwrap_merge: drop signalled, keep the later seqno per context.
            let mut parts = BTreeMap::new();
            for (ctx, (seq, sig)) in self.parts.iter().chain(other.parts.iter()) {
                if sig.get() {
                    continue;
                }
                match parts.get(ctx) {
                    Some((s, _)) if *s >= *seq => {}
                    _ => {
                        parts.insert(*ctx, (*seq, sig.clone()));
                    }
                }
            }
            Ok(Fake {
                parts,
                fail_merge: self.fail_merge.clone(),
            })
        }
    }

    #[test]
    fn ledger_lifecycle() {
        let mut l = ReaderLedger::new();
        let a = l.begin().expect("begin");
        let b = l.begin().expect("begin");
        assert_eq!(
            l.progress(),
            ReleaseProgress::Pending {
                outstanding: 2,
                sealed: false
            }
        );
        assert_eq!(
            l.end(a).expect("end"),
            ReleaseProgress::Pending {
                outstanding: 1,
                sealed: false
            }
        );
        assert_eq!(
            l.seal(),
            ReleaseProgress::Pending {
                outstanding: 1,
                sealed: true
            }
        );
        assert!(matches!(l.begin(), Err(ReleaseError::Sealed)));
        assert_eq!(l.end(b).expect("end"), ReleaseProgress::Ready);
        assert!(l.finish());
        assert_eq!(l.progress(), ReleaseProgress::Finished);
        assert_eq!(l.ended_total(), 2);
    }

    #[test]
    fn ledger_rejects_unknown_and_double_end() {
        let mut l = ReaderLedger::new();
        let a = l.begin().expect("begin");
        let id = a.get();
        l.end(a).expect("end");
        let e = l.end(ReaderId(id)).expect_err("double end");
        assert!(matches!(e, ReleaseError::UnknownReader(x) if x == id));
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert!(matches!(
            l.end(ReaderId(999)),
            Err(ReleaseError::UnknownReader(999))
        ));
    }

    #[test]
    fn seal_with_no_readers_is_ready_and_finishes_signalled() {
        let mut m: ReleaseMerger<Fake> = ReleaseMerger::new();
        assert_eq!(m.seal(), ReleaseProgress::Ready);
        let r = m.try_finish().expect("finish").expect("ready");
        assert!(r.is_signaled());
        assert!(matches!(m.try_finish(), Err(ReleaseError::Finished)));
        m.reset();
        assert_eq!(
            m.progress(),
            ReleaseProgress::Pending {
                outstanding: 0,
                sealed: false
            }
        );
    }

    #[test]
    fn not_ready_until_sealed_and_all_ended() {
        let fail = Rc::new(Cell::new(false));
        let mut m: ReleaseMerger<Fake> = ReleaseMerger::new();
        let a = m.begin_read().expect("begin");
        let b = m.begin_read().expect("begin");
        let (fa, _sa) = fake(1, 1, &fail);
        m.end_read(a, Some(fa)).expect("end");
        assert!(m.try_finish().expect("no error").is_none(), "not sealed");
        m.seal();
        assert!(m.try_finish().expect("no error").is_none(), "b outstanding");
        let (fb, _sb) = fake(2, 1, &fail);
        assert_eq!(
            m.end_read(b, Some(fb)).expect("end"),
            ReleaseProgress::Ready
        );
        let r = m.try_finish().expect("ok").expect("ready");
        assert_eq!(r.fence_count(), 1);
        let f = r.into_fences().pop().expect("one");
        assert_eq!(f.parts.len(), 2, "two contexts survive");
    }

    #[test]
    fn same_context_collapses_and_signalled_are_dropped() {
        let fail = Rc::new(Cell::new(false));
        let mut m: ReleaseMerger<Fake> = ReleaseMerger::new();
        let mut sigs = Vec::new();
        for seq in 1..=1000 {
            let (f, s) = fake(7, seq, &fail);
            m.add_reader_fence(f).expect("add");
            sigs.push(s);
            assert_eq!(m.held_fences(), 1);
        }
        // An already signalled fence is not merged at all.
        let (f, s) = fake(8, 1, &fail);
        s.set(true);
        m.add_reader_fence(f).expect("add");
        assert_eq!(m.counts(), (1001, 1));
        m.seal();
        let r = m.try_finish().expect("ok").expect("ready");
        let f = r.into_fences().pop().expect("one");
        assert_eq!(f.parts.len(), 1);
        assert_eq!(f.parts.get(&7).map(|p| p.0), Some(1000));
    }

    #[test]
    fn distinct_contexts_are_all_kept_until_they_signal() {
        let fail = Rc::new(Cell::new(false));
        let mut m: ReleaseMerger<Fake> = ReleaseMerger::new();
        let mut sigs = Vec::new();
        for ctx in 0..5 {
            let (f, s) = fake(ctx, 1, &fail);
            m.add_reader_fence(f).expect("add");
            sigs.push(s);
        }
        // Signal the first three; the next merge drops them.
        for s in &sigs[..3] {
            s.set(true);
        }
        let (f, _s) = fake(9, 1, &fail);
        m.add_reader_fence(f).expect("add");
        m.seal();
        let f = m
            .try_finish()
            .expect("ok")
            .expect("ready")
            .into_fences()
            .pop()
            .expect("one");
        let ctxs: Vec<u64> = f.parts.keys().copied().collect();
        assert_eq!(ctxs, vec![3, 4, 9]);
    }

    #[test]
    fn merge_failures_are_bounded() {
        let fail = Rc::new(Cell::new(false));
        let mut m: ReleaseMerger<Fake> = ReleaseMerger::new();
        let (f, _s0) = fake(0, 1, &fail);
        m.add_reader_fence(f).expect("first needs no merge");
        fail.set(true);
        let mut keep = Vec::new();
        for ctx in 1..=MAX_UNMERGED as u64 {
            let (f, s) = fake(ctx, 1, &fail);
            keep.push(s);
            m.add_reader_fence(f).expect("kept unmerged");
        }
        assert_eq!(m.held_fences(), 1 + MAX_UNMERGED);
        let (f, _s) = fake(100, 1, &fail);
        let e = m.add_reader_fence(f).expect_err("full");
        assert!(matches!(e.error, ReleaseError::TooManyUnmerged(_)));
        assert_eq!(e.error.kind(), ErrorKind::Os);
        assert_eq!(e.fence.parts.keys().copied().collect::<Vec<_>>(), vec![100]);
        // Merging works again: the backlog folds in.
        fail.set(false);
        let (f, _s) = fake(200, 1, &fail);
        m.add_reader_fence(f).expect("add");
        assert_eq!(m.held_fences(), 1);
        m.seal();
        let f = m
            .try_finish()
            .expect("ok")
            .expect("ready")
            .into_fences()
            .pop()
            .expect("one");
        assert_eq!(f.parts.len(), MAX_UNMERGED + 2);
    }

    #[test]
    fn end_read_rejects_foreign_ids_without_consuming_fence_state() {
        let fail = Rc::new(Cell::new(false));
        let mut m: ReleaseMerger<Fake> = ReleaseMerger::new();
        let (f, _s) = fake(1, 1, &fail);
        let e = m.end_read(ReaderId(42), Some(f)).expect_err("unknown");
        assert!(matches!(
            e,
            EndReadError::Ledger(ReleaseError::UnknownReader(42))
        ));
        assert_eq!(m.held_fences(), 0);
        assert_eq!(m.counts(), (0, 0));
    }

    #[test]
    fn finish_now_ignores_outstanding() {
        let mut m: ReleaseMerger<Fake> = ReleaseMerger::new();
        let _a = m.begin_read().expect("begin");
        let r = m.finish_now().expect("finish");
        assert!(r.is_signaled());
        assert!(matches!(m.finish_now(), Err(ReleaseError::Finished)));
        assert!(matches!(m.begin_read(), Err(ReleaseError::Finished)));
    }

    /// A merger whose merges fail and whose unmerged list is full (pending fences).
    fn full_merger(fail: &Rc<Cell<bool>>) -> (ReleaseMerger<Fake>, Vec<Rc<Cell<bool>>>) {
        let mut m: ReleaseMerger<Fake> = ReleaseMerger::new();
        let mut sigs = Vec::new();
        for ctx in 0..=MAX_UNMERGED as u64 {
            let (f, s) = fake(ctx, 1, fail);
            sigs.push(s);
            if ctx == 1 {
                fail.set(true);
            }
            m.add_reader_fence(f).expect("kept");
        }
        assert_eq!(m.held_fences(), 1 + MAX_UNMERGED);
        (m, sigs)
    }

    #[test]
    fn end_read_with_an_unkept_fence_keeps_the_reader_open() {
        let fail = Rc::new(Cell::new(false));
        let (mut m, _sigs) = full_merger(&fail);
        let reader = m.begin_read().expect("begin");
        m.seal();
        let (f, sig) = fake(500, 1, &fail);
        let (reader, fence) = match m.end_read(reader, Some(f)) {
            Err(EndReadError::Unkept {
                reader,
                fence,
                error,
            }) => {
                assert!(matches!(error, ReleaseError::TooManyUnmerged(_)));
                (reader, fence)
            }
            other => panic!("expected the fence back, got {other:?}"),
        };
        assert_eq!(fence.parts.keys().copied().collect::<Vec<_>>(), vec![500]);
        assert!(
            m.try_finish().expect("no error").is_none(),
            "the reader whose fence was not kept still holds the release"
        );
        // The caller waited for the fence: now the reader ends.
        sig.set(true);
        assert_eq!(
            m.end_read(reader, None).expect("end"),
            ReleaseProgress::Ready
        );
        assert!(m.try_finish().expect("ok").is_some());
    }

    #[test]
    fn signalled_unmerged_fences_make_room_without_a_merge() {
        let fail = Rc::new(Cell::new(false));
        let (mut m, sigs) = full_merger(&fail);
        sigs[3].set(true);
        let (f, _s) = fake(600, 1, &fail);
        m.add_reader_fence(f)
            .expect("a signalled unmerged fence was dropped to keep this one");
        assert_eq!(m.held_fences(), 1 + MAX_UNMERGED);
    }

    #[test]
    fn hold_works_after_seal_and_keeps_the_release() {
        let mut m: ReleaseMerger<Fake> = ReleaseMerger::new();
        m.seal();
        assert!(matches!(m.begin_read(), Err(ReleaseError::Sealed)));
        let held = m.hold().expect("hold after seal");
        assert!(m.try_finish().expect("ok").is_none());
        m.end_read(held, None).expect("end");
        assert!(m.try_finish().expect("ok").is_some());
        assert!(matches!(m.hold(), Err(ReleaseError::Finished)));
    }

    /// Random operation sequences: invariants hold and nothing panics.
    #[test]
    fn random_sequences_keep_invariants() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let fail = Rc::new(Cell::new(false));
        for _round in 0..200 {
            let mut m: ReleaseMerger<Fake> = ReleaseMerger::new();
            let mut open: Vec<ReaderId> = Vec::new();
            let mut live_sigs: Vec<Rc<Cell<bool>>> = Vec::new();
            let mut finished = false;
            for _ in 0..60 {
                match rnd() % 6 {
                    0 | 1 => match m.begin_read() {
                        Ok(id) => open.push(id),
                        Err(e) => {
                            assert!(matches!(e, ReleaseError::Sealed | ReleaseError::Finished))
                        }
                    },
                    2 if !open.is_empty() => {
                        let idx = (rnd() as usize) % open.len();
                        let id = open.swap_remove(idx);
                        let fence = if rnd() % 3 == 0 {
                            None
                        } else {
                            let (f, s) = fake(rnd() % 4, rnd() % 100, &fail);
                            live_sigs.push(s);
                            Some(f)
                        };
                        if let Err(e) = m.end_read(id, fence) {
                            assert!(
                                finished
                                    && matches!(e, EndReadError::Ledger(ReleaseError::Finished)),
                                "{e:?}"
                            );
                        }
                    }
                    3 => {
                        m.seal();
                    }
                    4 => {
                        if let Some(s) = live_sigs.get((rnd() as usize) % live_sigs.len().max(1)) {
                            s.set(true);
                        }
                    }
                    _ => match m.try_finish() {
                        Ok(Some(r)) => {
                            assert!(!finished);
                            assert!(open.is_empty(), "released with readers outstanding");
                            assert!(r.fence_count() <= 1);
                            if let Some(f) = r.into_fences().pop() {
                                assert!(f.parts.len() <= 4, "at most one fence per context");
                            }
                            finished = true;
                        }
                        Ok(None) => {
                            assert!(!open.is_empty() || m.progress() != ReleaseProgress::Ready)
                        }
                        Err(e) => assert!(finished && matches!(e, ReleaseError::Finished)),
                    },
                }
                assert!(m.held_fences() <= 1);
                if !finished {
                    assert_eq!(m.ledger().outstanding(), open.len());
                }
            }
        }
    }
}
