//! Late latching: when an output's refresh cycle runs after a page flip.
//!
//! A page flip sends the frame callbacks at once ([`presentation`](super::presentation)).
//! Run at that moment, the next cycle would find nothing new from clients that draw on
//! the callback, and their commits would wait for the cycle after it: two refreshes from
//! commit to screen. With late latching the cycle (render and atomic commit) waits until
//! as late before the next vblank as its own work allows, so a commit made in between,
//! and a fenced commit whose fence signals in between, makes the next vblank.
//!
//! The budget before the vblank is the [`PERCENTILE`]th percentile of the last [`WINDOW`]
//! cycles (from the cycle's start to the commit ioctl's return), plus the margin the
//! kernel needs between that return and the vblank, plus a back-off. This is the shape of
//! mutter's dynamic max render time and KWin's render-time prediction: measured, with a
//! margin, and corrected by misses. A miss says which of the two fell short:
//! - The commit was in before the vblank and still flipped at a later one: the driver
//!   needed more than that margin (its nonblocking commit work runs after the ioctl
//!   returns; VKMS on an emulated CPU needed up to about 3 ms where real hardware needs
//!   well under [`SLACK`]). The margin becomes what the commit had plus [`MARGIN_STEP`],
//!   and gives back [`MARGIN_DECAY`] per made vblank, down to [`SLACK`]: a property of
//!   the driver is learned once, not forgotten within a second.
//! - The cycle itself ran past the vblank: the back-off grows by an eighth of the refresh
//!   and gives back [`BACKOFF_DECAY`] per made vblank.
//!
//! Not the longest cycle: a cycle the CPU was taken from (in the test VM, the kernel's
//! VKMS composer blends every plane on the CPU at each vblank) would hold the budget at
//! the whole refresh for a window of cycles, and late latching would be off whenever one
//! such cycle is in it; the back-off covers what the percentile leaves out. Until a cycle
//! has been measured, and whenever the budget is not less than what is left of the
//! refresh, the cycle runs at the flip, as without late latching. A cycle that a request starts on an idle output waits for the
//! same deadline, counted from the vblank before the request ([`vblank_before`]), while
//! that vblank is known: the output flipped within the last [`PHASE_KNOWN_FOR`] refresh
//! cycles. Otherwise, or past the deadline, it runs at once.
//!
//! A miss is a deferred cycle whose commit flipped at a later vblank than the one after
//! the flip that started it (the CRTC's vblank sequence).

use std::collections::VecDeque;
use std::time::Duration;

/// Cycles whose work the budget covers.
pub const WINDOW: usize = 32;
/// The percentile of their work the budget takes (nearest rank: with a full window, the
/// three longest cycles are left out).
pub const PERCENTILE: usize = 90;
/// The least margin between the commit ioctl's return and the vblank (loop wake-up,
/// commit work in the kernel), before misses teach a larger one.
pub const SLACK: Duration = Duration::from_micros(1500);
/// Added to the margin a commit had when it still missed its vblank.
pub const MARGIN_STEP: Duration = Duration::from_micros(500);
/// Learned margin given back per vblank made: 60 us a second at 60 Hz, so a margin
/// learned 2 ms over [`SLACK`] is back after about half a minute without a miss.
pub const MARGIN_DECAY: Duration = Duration::from_micros(1);
/// Back-off given back per vblank made.
pub const BACKOFF_DECAY: Duration = Duration::from_micros(100);

/// How many refresh cycles after its last flip an idle output's vblank phase is still
/// taken as known. Drivers may stop the vblank timer of an idle CRTC (VKMS restarts it at
/// the next commit, in a new phase); 8 cycles are far under DRM's 5 s vblank-off delay.
pub const PHASE_KNOWN_FOR: u32 = 8;

/// The last vblank at or before `now` and its sequence, counted in whole refresh cycles
/// from the last flip (`(time, seq)`, CLOCK_MONOTONIC); `None` once more than
/// [`PHASE_KNOWN_FOR`] cycles have passed (or `now` is before the flip).
pub fn vblank_before(
    last_flip: (Duration, u32),
    now: Duration,
    refresh: Duration,
) -> Option<(Duration, u32)> {
    let (time, seq) = last_flip;
    let since = now.checked_sub(time)?;
    let cycles = u32::try_from(since.as_nanos() / refresh.as_nanos().max(1)).ok()?;
    (cycles < PHASE_KNOWN_FOR).then(|| (time + refresh * cycles, seq.wrapping_add(cycles)))
}

/// Per output: measured cycle work, the back-off, and what happened.
#[derive(Debug, Default)]
pub struct LatchDeadline {
    /// Off: every cycle runs at its flip (`--late-latch off`).
    off: bool,
    /// ns of the last [`WINDOW`] cycles' work.
    work_ns: VecDeque<u64>,
    /// ns added after misses of cycles that ran past the vblank.
    backoff_ns: u64,
    /// ns the commit must be in before the vblank: [`SLACK`], or more once learned.
    margin_ns: u64,
    /// Cycles that waited for their deadline.
    pub deferred: u64,
    /// Cycles run at their flip (off, unmeasured, or no time left), and woken cycles
    /// run at once past their deadline.
    pub at_flip: u64,
    /// Deferred cycles whose commit made the next vblank.
    pub made: u64,
    /// Deferred cycles whose commit flipped later.
    pub missed: u64,
    /// Of those, commits that were in before the vblank (the margin was short).
    pub missed_in_time: u64,
}

impl LatchDeadline {
    /// `enabled`: `--late-latch auto`.
    pub fn new(enabled: bool) -> Self {
        Self {
            off: !enabled,
            margin_ns: ns(SLACK),
            ..Self::default()
        }
    }

    /// Whether late latching is on.
    pub fn enabled(&self) -> bool {
        !self.off
    }

    /// A cycle's work, from its start to the commit ioctl's return.
    pub fn record_work(&mut self, work: Duration) {
        if self.work_ns.len() == WINDOW {
            self.work_ns.pop_front();
        }
        self.work_ns.push_back(ns(work));
    }

    /// The [`PERCENTILE`]th percentile of the measured cycles (nearest rank).
    fn typical_work_ns(&self) -> Option<u64> {
        let mut work: Vec<u64> = self.work_ns.iter().copied().collect();
        work.sort_unstable();
        let rank = (work.len() * PERCENTILE).div_ceil(100).max(1);
        work.get(rank - 1).copied()
    }

    /// How long before the vblank the cycle must start; `None` until a cycle was measured.
    pub fn budget(&self, refresh: Duration) -> Option<Duration> {
        let typical = self.typical_work_ns()?;
        let budget = typical
            .saturating_add(self.margin_ns.max(ns(SLACK)))
            .saturating_add(self.backoff_ns);
        Some(Duration::from_nanos(budget.min(ns(refresh))))
    }

    /// How long after `now` the cycle after the flip at `flip` should start (all
    /// CLOCK_MONOTONIC); `None`: at once. Counts the choice.
    pub fn wait_after_flip(
        &mut self,
        flip: Duration,
        now: Duration,
        refresh: Duration,
    ) -> Option<Duration> {
        let wait = self
            .budget(refresh)
            .filter(|_| !self.off)
            .and_then(|budget| (flip + refresh).checked_sub(budget))
            .and_then(|deadline| deadline.checked_sub(now))
            .filter(|wait| !wait.is_zero());
        if wait.is_some() {
            self.deferred += 1;
        } else {
            self.at_flip += 1;
        }
        wait
    }

    /// The flip of a deferred cycle's commit: `started_seq` is the vblank sequence of the
    /// flip that started the cycle, `seq` this flip's; `in_time` how long before the vblank
    /// it aimed for the commit ioctl had returned (`None`: not before it). Returns whether
    /// it was missed.
    pub fn record_flip(
        &mut self,
        started_seq: u32,
        seq: u32,
        refresh: Duration,
        in_time: Option<Duration>,
    ) -> bool {
        let missed = seq.wrapping_sub(started_seq) > 1;
        if missed {
            self.missed += 1;
            match in_time {
                Some(margin) => {
                    self.missed_in_time += 1;
                    let needed = ns(margin).saturating_add(ns(MARGIN_STEP));
                    self.margin_ns = self.margin_ns.max(needed).min(ns(refresh) / 2);
                }
                None => {
                    self.backoff_ns = (self.backoff_ns + ns(refresh) / 8).min(ns(refresh));
                }
            }
        } else {
            self.made += 1;
            self.backoff_ns = self.backoff_ns.saturating_sub(ns(BACKOFF_DECAY));
            self.margin_ns = self
                .margin_ns
                .saturating_sub(ns(MARGIN_DECAY))
                .max(ns(SLACK));
        }
        missed
    }

    /// The `late_latch` part of an output's stats.
    pub fn json(&self, output: &str, refresh: Duration) -> serde_json::Value {
        let longest = self.work_ns.iter().copied().max();
        serde_json::json!({
            "output": output,
            "enabled": !self.off,
            "budget_us": self.budget(refresh).map(|b| b.as_micros() as u64),
            "cycle_p90_us": self.typical_work_ns().map(|n| n / 1000),
            "longest_cycle_us": longest.map(|n| n / 1000),
            "backoff_us": self.backoff_ns / 1000,
            "margin_us": self.margin_ns / 1000,
            "deferred_cycles": self.deferred,
            "cycles_at_flip": self.at_flip,
            "made_vblanks": self.made,
            "missed_vblanks": self.missed,
            "missed_with_commit_in_time": self.missed_in_time,
        })
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFRESH: Duration = Duration::from_micros(16_667);

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn a_woken_output_counts_from_the_last_vblank_while_its_phase_is_known() {
        let flip = (ms(100), u32::MAX);
        // Before the next vblank: the flip itself.
        assert_eq!(
            vblank_before(flip, ms(110), REFRESH),
            Some((ms(100), u32::MAX))
        );
        // Two and a half refreshes later: two vblanks on, the sequence wraps.
        let now = ms(100) + REFRESH * 2 + REFRESH / 2;
        assert_eq!(
            vblank_before(flip, now, REFRESH),
            Some((ms(100) + REFRESH * 2, 1))
        );
        // Idle for PHASE_KNOWN_FOR refreshes: no longer known.
        let later = ms(100) + REFRESH * PHASE_KNOWN_FOR;
        assert_eq!(vblank_before(flip, later, REFRESH), None);
        // A clock that went backwards: nothing.
        assert_eq!(vblank_before(flip, ms(99), REFRESH), None);
    }

    #[test]
    fn an_unmeasured_output_runs_its_cycle_at_the_flip() {
        let mut l = LatchDeadline::new(true);
        assert_eq!(l.budget(REFRESH), None);
        assert_eq!(l.wait_after_flip(ms(100), ms(100), REFRESH), None);
        assert_eq!((l.deferred, l.at_flip), (0, 1));
    }

    #[test]
    fn the_cycle_starts_its_typical_work_plus_slack_before_the_vblank() {
        let mut l = LatchDeadline::new(true);
        l.record_work(ms(3));
        l.record_work(ms(5));
        l.record_work(ms(4));
        // Three cycles: the 90th percentile is the longest.
        assert_eq!(l.budget(REFRESH), Some(ms(5) + SLACK));
        // Flip at 100 ms, read 1 ms later: the vblank is at 116.667 ms.
        let wait = l.wait_after_flip(ms(100), ms(101), REFRESH);
        assert_eq!(wait, Some(REFRESH - ms(5) - SLACK - ms(1)));
        assert_eq!(l.deferred, 1);
    }

    #[test]
    fn the_three_longest_of_a_full_window_are_left_out() {
        let mut l = LatchDeadline::new(true);
        for i in 0..WINDOW as u64 {
            // 1..=29 ms/10, then three cycles the CPU was taken from.
            l.record_work(if i < 29 {
                Duration::from_micros(100 * (i + 1))
            } else {
                ms(20)
            });
        }
        assert_eq!(l.budget(REFRESH), Some(Duration::from_micros(2900) + SLACK));
        l.record_work(ms(20));
        assert_eq!(
            l.budget(REFRESH),
            Some(REFRESH),
            "a fourth long one in the window counts"
        );
    }

    #[test]
    fn only_the_last_window_of_cycles_counts() {
        let mut l = LatchDeadline::new(true);
        l.record_work(ms(12));
        for _ in 0..WINDOW {
            l.record_work(ms(2));
        }
        assert_eq!(l.budget(REFRESH), Some(ms(2) + SLACK));
    }

    #[test]
    fn no_time_left_or_late_latching_off_runs_at_the_flip() {
        let mut l = LatchDeadline::new(true);
        l.record_work(ms(20));
        assert_eq!(l.budget(REFRESH), Some(REFRESH), "capped at the refresh");
        assert_eq!(l.wait_after_flip(ms(100), ms(100), REFRESH), None);
        let mut l = LatchDeadline::new(true);
        l.record_work(ms(2));
        // The flip event was read 15 ms late: the deadline has passed.
        assert_eq!(l.wait_after_flip(ms(100), ms(115), REFRESH), None);
        let mut off = LatchDeadline::new(false);
        off.record_work(ms(1));
        assert_eq!(off.wait_after_flip(ms(100), ms(100), REFRESH), None);
        assert_eq!((off.deferred, off.at_flip), (0, 1));
    }

    #[test]
    fn a_miss_backs_off_and_made_vblanks_give_it_back() {
        let mut l = LatchDeadline::new(true);
        l.record_work(ms(2));
        assert!(!l.record_flip(10, 11, REFRESH, Some(ms(3))));
        assert!(
            l.record_flip(10, 12, REFRESH, None),
            "the commit returned after the vblank and flipped a vblank late"
        );
        let backed = l.budget(REFRESH).expect("measured");
        assert_eq!(backed, ms(2) + SLACK + REFRESH / 8);
        assert!(
            !l.record_flip(u32::MAX, 0, REFRESH, Some(ms(3))),
            "the sequence wraps"
        );
        assert_eq!(backed - l.budget(REFRESH).expect("measured"), BACKOFF_DECAY);
        assert_eq!((l.made, l.missed, l.missed_in_time), (2, 1, 0));
    }

    #[test]
    fn a_commit_in_before_the_vblank_that_still_missed_teaches_the_margin() {
        let mut l = LatchDeadline::new(true);
        l.record_work(ms(2));
        // In 2.4 ms before the vblank, and the driver still took the one after.
        let margin = Duration::from_micros(2400);
        assert!(l.record_flip(10, 12, REFRESH, Some(margin)));
        assert_eq!(l.budget(REFRESH), Some(ms(2) + margin + MARGIN_STEP));
        assert_eq!((l.missed, l.missed_in_time), (1, 1), "no back-off for this");
        // A miss with less margin than learned teaches nothing new.
        assert!(l.record_flip(12, 14, REFRESH, Some(ms(1))));
        assert_eq!(l.budget(REFRESH), Some(ms(2) + margin + MARGIN_STEP));
        // Made vblanks give it back slowly, and never below SLACK.
        assert!(!l.record_flip(14, 15, REFRESH, Some(ms(3))));
        assert_eq!(
            l.budget(REFRESH),
            Some(ms(2) + margin + MARGIN_STEP - MARGIN_DECAY)
        );
        for seq in 15..5000 {
            l.record_flip(seq, seq + 1, REFRESH, Some(ms(3)));
        }
        assert_eq!(l.budget(REFRESH), Some(ms(2) + SLACK));
        // Never more than half the refresh.
        assert!(l.record_flip(9000, 9002, REFRESH, Some(ms(15))));
        assert_eq!(l.budget(REFRESH), Some(ms(2) + REFRESH / 2));
    }
}
