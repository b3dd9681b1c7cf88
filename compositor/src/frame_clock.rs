//! Per-output frame clock: turns timer deadlines into CLOCK_MONOTONIC presentation
//! timestamps and sequence numbers.

use std::time::{Duration, Instant};

use smithay::utils::{Clock, Monotonic};

/// One refresh cycle of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTick {
    /// Refresh counter (starts at 1).
    pub seq: u64,
    /// When this frame is presented (CLOCK_MONOTONIC).
    pub time: Duration,
    /// When the following frame will be presented (CLOCK_MONOTONIC).
    pub next: Duration,
}

/// A fixed-rate frame clock.
#[derive(Debug, Clone)]
pub struct FrameClock {
    refresh: Duration,
    anchor_instant: Instant,
    anchor_monotonic: Duration,
    last: Option<FrameTick>,
}

impl FrameClock {
    /// A clock ticking every `refresh`, anchored now: `Instant::now()` read between two
    /// CLOCK_MONOTONIC reads, taking the midpoint of the tightest of a few tries. An anchor
    /// read by the caller before a slow step (a GLES renderer takes seconds to start in the
    /// emulated VM) put every presentation time that far in the past; a thread preempted
    /// between two plain reads puts them in the future (7.5 ms once, under load in the VM).
    pub fn starting_now(refresh: Duration) -> Self {
        /// A bracket this tight is taken at once.
        const GOOD: Duration = Duration::from_micros(20);
        const TRIES: usize = 16;
        let clock = Clock::<Monotonic>::new();
        // (gap between the two CLOCK_MONOTONIC reads, the Instant, their midpoint)
        let bracket = || {
            let before: Duration = clock.now().into();
            let instant = Instant::now();
            let after: Duration = clock.now().into();
            let gap = after.saturating_sub(before);
            (gap, instant, before + gap / 2)
        };
        let mut best = bracket();
        for _ in 1..TRIES {
            if best.0 <= GOOD {
                break;
            }
            let next = bracket();
            if next.0 < best.0 {
                best = next;
            }
        }
        let (_, instant, monotonic) = best;
        Self::new(refresh, instant, monotonic)
    }

    /// A clock ticking every `refresh`, anchored so `now_monotonic` corresponds to `now`.
    pub fn new(refresh: Duration, now: Instant, now_monotonic: Duration) -> Self {
        Self {
            refresh: refresh.max(Duration::from_micros(100)),
            anchor_instant: now,
            anchor_monotonic: now_monotonic,
            last: None,
        }
    }

    /// Refresh interval.
    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    /// The last tick, if any.
    pub fn last(&self) -> Option<FrameTick> {
        self.last
    }

    /// CLOCK_MONOTONIC time of an `Instant` (both are CLOCK_MONOTONIC on Linux; this
    /// keeps the arithmetic exact across the two types).
    pub fn monotonic_at(&self, instant: Instant) -> Duration {
        match instant.checked_duration_since(self.anchor_instant) {
            Some(after) => self.anchor_monotonic + after,
            None => self
                .anchor_monotonic
                .saturating_sub(self.anchor_instant - instant),
        }
    }

    /// A tick presented at `time` (a timer deadline converted with [`Self::monotonic_at`]).
    /// The sequence number counts refresh cycles, so cycles the loop missed are skipped.
    pub fn tick_at(&mut self, time: Duration) -> FrameTick {
        let seq = match self.last {
            None => 1,
            Some(last) => {
                let cycles =
                    time.saturating_sub(last.time).as_nanos() + self.refresh.as_nanos() / 2;
                let cycles = u64::try_from(cycles / self.refresh.as_nanos()).unwrap_or(1);
                last.seq + cycles.max(1)
            }
        };
        let tick = FrameTick {
            seq,
            time,
            next: time + self.refresh,
        };
        self.last = Some(tick);
        tick
    }

    /// The next tick exactly one interval after the previous one (manual clock).
    pub fn tick_manual(&mut self) -> FrameTick {
        let time = self.last.map_or(self.anchor_monotonic, |t| t.next);
        self.tick_at(time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_ticks_advance_by_refresh() {
        let now = Instant::now();
        let mut clock = FrameClock::new(Duration::from_millis(16), now, Duration::from_secs(5));
        let a = clock.tick_manual();
        let b = clock.tick_manual();
        assert_eq!(a.seq, 1);
        assert_eq!(b.seq, 2);
        assert_eq!(b.time - a.time, Duration::from_millis(16));
        let c = clock.tick_at(b.time + Duration::from_millis(48));
        assert_eq!(c.seq, 5);
        assert_eq!(
            clock.monotonic_at(now + Duration::from_millis(3)),
            Duration::from_secs(5) + Duration::from_millis(3)
        );
    }

    #[test]
    fn a_clock_starting_now_maps_instants_to_clock_monotonic_now() {
        let clock = FrameClock::starting_now(Duration::from_millis(16));
        std::thread::sleep(Duration::from_millis(20));
        let mapped = clock.monotonic_at(Instant::now());
        let kernel: Duration = Clock::<Monotonic>::new().now().into();
        let off = kernel.abs_diff(mapped);
        assert!(
            off < Duration::from_millis(5),
            "{mapped:?} against {kernel:?}"
        );
    }
}
