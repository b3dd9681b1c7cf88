//! Client buffers the display may still read when the usual proof of "it stopped" (a
//! commit's out-fence, or its page-flip event) is missing: across a session pause (VT
//! switch), a connector that vanishes while the session is paused, and device removal.
//!
//! The rules this per-output state keeps:
//!
//! * A failed commit proves nothing: whatever was on the plane stays there (the kernel
//!   keeps scanning it out while another DRM master is in front, until that master
//!   commits), so it stays held.
//! * A flip that was still waiting for its event when the session came back is not taken
//!   as done: its buffers are [carried](Handover::carry) to the first commit that
//!   succeeds after the resume, whose out-fence (early mode) or page-flip event (flip
//!   mode) then says when the display stopped reading them. Should the old flip's event
//!   still arrive, it is [recognised](Handover::is_stale_flip) by its vblank time and
//!   not mistaken for the new commit's.
//! * A vanished connector whose switch-off commit failed (EACCES while paused) keeps its
//!   plane's buffer; the switch-off is [due](Handover::disable_due) and retried when the
//!   session is back; its success (a blocking commit: when it returns, the CRTC is off)
//!   releases the buffer.
//! * When the device is gone (ioctls answer ENODEV), nothing reads any more: everything
//!   still held is [taken](Handover::take_all) and released, once.
//!
//! Generic over the held buffer `B` (the bridge's ids of a buffer and our clone of
//! smithay's `Buffer`: dropping it sends `wl_buffer.release`) and the framebuffer `F`, so
//! the state machine is tested without a compositor.

/// Held buffers with their bridge ids, and framebuffers to remove once they are no
/// longer scanned out.
#[derive(Debug)]
pub struct Carried<B, F> {
    /// The buffers (each with the bridge's ids of its readers, and its holder).
    pub buffers: Vec<B>,
    /// Framebuffers that go with them.
    pub fbs: Vec<F>,
}

impl<B, F> Default for Carried<B, F> {
    fn default() -> Self {
        Self {
            buffers: Vec::new(),
            fbs: Vec::new(),
        }
    }
}

impl<B, F> Carried<B, F> {
    /// Nothing in it.
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty() && self.fbs.is_empty()
    }

    /// Add `other` to it.
    pub fn append(&mut self, mut other: Carried<B, F>) {
        self.buffers.append(&mut other.buffers);
        self.fbs.append(&mut other.fbs);
    }
}

/// Per-output state of buffers whose end of scanout no commit of ours has proven yet.
#[derive(Debug)]
pub struct Handover<B, F> {
    carried: Carried<B, F>,
    /// Flip events still due for commits given up at a resume.
    stale_flips: u32,
    /// The output vanished while we could not switch it off: its CRTC may still scan out
    /// the buffer on its plane.
    disable_due: bool,
}

impl<B, F> Default for Handover<B, F> {
    fn default() -> Self {
        Self {
            carried: Carried::default(),
            stale_flips: 0,
            disable_due: false,
        }
    }
}

impl<B, F> Handover<B, F> {
    /// The session came back while a flip of ours still waited for its event: its
    /// buffers go with the next commit that succeeds on this output, and its event (if
    /// it still comes) is not that commit's.
    pub fn carry(&mut self, held: Carried<B, F>) {
        self.carried.append(held);
        self.stale_flips = self.stale_flips.saturating_add(1);
    }

    /// A commit succeeded on this output: what it takes over (to release with its
    /// out-fence, or at its flip).
    #[must_use = "dropping the holders releases the buffers"]
    pub fn take_carried(&mut self) -> Carried<B, F> {
        std::mem::take(&mut self.carried)
    }

    /// Whether a page-flip event with vblank time `flip_ns` belongs to a commit given up
    /// at a resume rather than to the pending one, whose refresh cycle started at
    /// `pending_started_ns` (`None`: nothing pending). A flip's vblank is never earlier
    /// than its commit; the kernel delivers events in commit order, so once the pending
    /// commit's own event came, no older one is due any more.
    pub fn is_stale_flip(&mut self, flip_ns: u64, pending_started_ns: Option<u64>) -> bool {
        if self.stale_flips == 0 {
            return false;
        }
        match pending_started_ns {
            Some(started) if flip_ns >= started => {
                self.stale_flips = 0;
                false
            }
            _ => {
                self.stale_flips -= 1;
                true
            }
        }
    }

    /// The output's switch-off commit failed: its plane may still be read.
    pub fn set_disable_due(&mut self, due: bool) {
        self.disable_due = due;
    }

    /// A switch-off commit is still owed (and the CRTC must not be given to another
    /// output).
    pub fn disable_due(&self) -> bool {
        self.disable_due
    }

    /// The device is gone or the output switched off: everything carried, for release.
    #[must_use = "dropping the holders releases the buffers"]
    pub fn take_all(&mut self) -> Carried<B, F> {
        self.stale_flips = 0;
        self.disable_due = false;
        std::mem::take(&mut self.carried)
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, rc::Rc};

    use super::*;

    /// Counts its drops (a release each).
    #[derive(Debug)]
    struct Holder(Rc<Cell<u32>>);
    impl Drop for Holder {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    type Buf = (Vec<u64>, Holder);

    fn ids(c: &Carried<Buf, Holder>) -> Vec<u64> {
        c.buffers
            .iter()
            .flat_map(|(i, _)| i.iter().copied())
            .collect()
    }

    fn held(id: u64, drops: &Rc<Cell<u32>>) -> Carried<Buf, Holder> {
        Carried {
            buffers: vec![(vec![id], Holder(drops.clone()))],
            fbs: vec![Holder(drops.clone())],
        }
    }

    /// A flip still queued at resume: nothing is released then; the first commit after
    /// the resume takes the buffer over (once), and the old flip's late event is not
    /// taken for that commit's.
    #[test]
    fn queued_flip_at_resume_goes_with_the_next_commit() {
        let drops = Rc::new(Cell::new(0));
        let mut h: Handover<Buf, Holder> = Handover::default();
        h.carry(held(7, &drops));
        assert_eq!(drops.get(), 0, "nothing released at resume");
        // The new commit's cycle started at t=1000; the stale event has vblank t=900.
        let taken = h.take_carried();
        assert_eq!(ids(&taken), vec![7]);
        assert!(h.take_carried().is_empty(), "taken over once");
        assert!(h.is_stale_flip(900, Some(1000)), "the old flip's event");
        assert!(
            !h.is_stale_flip(1016, Some(1000)),
            "the new commit's own event"
        );
        drop(taken);
        assert_eq!(drops.get(), 2, "buffer and framebuffer dropped once");
    }

    /// When the old flip's event never comes, the new commit's own event is not
    /// swallowed.
    #[test]
    fn a_lost_old_flip_does_not_eat_the_next_one() {
        let drops = Rc::new(Cell::new(0));
        let mut h: Handover<Buf, Holder> = Handover::default();
        h.carry(held(1, &drops));
        drop(h.take_carried());
        assert!(!h.is_stale_flip(2000, Some(1000)));
        // Nothing stale is expected any more, whatever the timestamps.
        assert!(!h.is_stale_flip(10, Some(1000)));
    }

    /// An event with nothing pending while one is due is the old flip's.
    #[test]
    fn stale_event_with_nothing_pending() {
        let mut h: Handover<Buf, Holder> = Handover::default();
        assert!(!h.is_stale_flip(5, None), "nothing due: not stale");
        h.carry(Carried::default());
        assert!(h.is_stale_flip(5, None));
        assert!(!h.is_stale_flip(6, None));
    }

    /// Device removal takes everything once, including a due switch-off's state.
    #[test]
    fn device_gone_releases_everything_once() {
        let drops = Rc::new(Cell::new(0));
        let mut h: Handover<Buf, Holder> = Handover::default();
        h.carry(held(1, &drops));
        h.carry(held(2, &drops));
        h.set_disable_due(true);
        let all = h.take_all();
        assert_eq!(ids(&all), vec![1, 2]);
        assert!(!h.disable_due());
        assert!(h.take_all().is_empty());
        drop(all);
        assert_eq!(drops.get(), 4);
    }
}
