//! How long after its page flip each CRTC's out-fence signals, measured per CRTC over a
//! sliding window (issue 14, part 4: the measurement).
//!
//! A commit's out-fence (`OUT_FENCE_PTR`) is what early release hands to clients. It is
//! only worth handing out if it signals at the flip: the kernel does not promise that,
//! and on some drivers it signals much later. For every commit whose page-flip event
//! came, the delay is the fence's signal timestamp (`SYNC_IOC_FILE_INFO`) minus the
//! flip's kernel timestamp. A fence still unsignalled at its flip event is measured at a
//! later flip event of the same output, once it signalled ([`LateFence`]).
//!
//! Exposed in the stats (`kms.out_fence_delay_per_crtc`) and logged when a CRTC's window
//! first fills and every [`LOG_EVERY`] samples after.

use std::collections::VecDeque;

use serde_json::json;
use syncbridge_bridge::SyncFile;

use super::{release_policy::ReleasePolicy, TtyBackend};

/// Samples in a CRTC's window: two seconds at 60 Hz.
pub const WINDOW: usize = 120;

/// A CRTC's window is logged every this many samples (ten seconds at 60 Hz).
pub const LOG_EVERY: u64 = 600;

/// Late fences kept for measurement, over all outputs; older ones are dropped unmeasured.
pub const MAX_LATE: usize = 64;

/// An out-fence that had not signalled when its flip event was handled.
#[derive(Debug)]
pub struct LateFence {
    /// The fence (a clone of the commit's; owned here, closed when dropped).
    pub fence: SyncFile,
    /// The flip's kernel timestamp, ns.
    pub flip_ns: u64,
    /// The output (index into the backend's outputs) whose commit it was.
    pub output: usize,
}

/// One CRTC's out-fence delays.
#[derive(Debug, Default, Clone)]
pub struct OutFenceDelay {
    /// The last [`WINDOW`] delays, ns (signal time minus flip time).
    window: VecDeque<i64>,
    /// Delays measured since start-up.
    total: u64,
    /// Fences not yet signalled when their flip event was handled.
    late_at_flip: u64,
    /// Late fences dropped unmeasured (too many late at once).
    dropped: u64,
}

/// A window's figures, in ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Samples in the window.
    pub count: usize,
    /// Nearest-rank percentiles and extremes.
    pub min: i64,
    /// Median.
    pub p50: i64,
    /// 99th percentile.
    pub p99: i64,
    /// Largest.
    pub max: i64,
}

impl OutFenceDelay {
    /// Add a delay (ns). Returns the window's summary when it is due for the log.
    pub fn push(&mut self, delay_ns: i64) -> Option<Summary> {
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(delay_ns);
        self.total += 1;
        let due = self.total == WINDOW as u64 || self.total % LOG_EVERY == 0;
        due.then(|| self.summary())
    }

    /// A fence had not signalled at its flip event.
    pub fn late(&mut self) {
        self.late_at_flip += 1;
    }

    /// A late fence was dropped unmeasured.
    pub fn dropped(&mut self) {
        self.dropped += 1;
    }

    /// The window's figures (all zero when empty).
    pub fn summary(&self) -> Summary {
        let mut v: Vec<i64> = self.window.iter().copied().collect();
        v.sort_unstable();
        let pct = |p| syncbridge_bridge::percentile::nearest_rank(&v, p).unwrap_or(0);
        Summary {
            count: v.len(),
            min: v.first().copied().unwrap_or(0),
            p50: pct(50),
            p99: pct(99),
            max: v.last().copied().unwrap_or(0),
        }
    }

    /// One CRTC's entry in `kms.out_fence_delay_per_crtc`.
    pub fn json(&self, output: &str, crtc: u32, release: &ReleasePolicy) -> serde_json::Value {
        let s = self.summary();
        let us = |ns: i64| ns as f64 / 1000.0;
        json!({
            "release": release.json(),
            "output": output,
            "crtc": crtc,
            "window": {
                "size": WINDOW,
                "count": s.count,
                "min_us": us(s.min),
                "p50_us": us(s.p50),
                "p99_us": us(s.p99),
                "max_us": us(s.max),
            },
            "samples_total": self.total,
            "late_at_flip_event": self.late_at_flip,
            "dropped_unmeasured": self.dropped,
        })
    }
}

/// A delay in ns, `signal - flip` (saturating).
fn delay(signal_ns: u64, flip_ns: u64) -> i64 {
    i64::try_from(i128::from(signal_ns) - i128::from(flip_ns)).unwrap_or(i64::MAX)
}

/// Record `delay_ns` for output `index` (and in the backend-wide samples); log the
/// window when due.
fn record(tty: &mut TtyBackend, index: usize, delay_ns: i64) {
    tty.stats.out_fence_delay.push(delay_ns);
    let Some(out) = tty.outputs.get_mut(index) else {
        return;
    };
    let refresh =
        super::presentation::mode_refresh(&out.mode).unwrap_or_else(|| out.clock.refresh());
    let refresh_ns = u64::try_from(refresh.as_nanos()).unwrap_or(u64::MAX);
    if let Some(switch) = out.release.observe(delay_ns, refresh_ns) {
        tty.stats.release_mode_switches += 1;
        tracing::warn!(
            output = %out.output.name(),
            crtc = u32::from(out.crtc),
            mode = switch.to.name(),
            median_delay_us = switch.median_ns as f64 / 1000.0,
            threshold_us = switch.threshold_ns as f64 / 1000.0,
            "tty: release mode switched: the out-fence's median delay after the flip over the last {} flips crossed the threshold",
            super::release_policy::DECIDE_WINDOW
        );
    }
    if let Some(s) = out.out_fence_delay.push(delay_ns) {
        tracing::info!(
            output = %out.output.name(),
            crtc = u32::from(out.crtc),
            window = s.count,
            min_us = s.min as f64 / 1000.0,
            p50_us = s.p50 as f64 / 1000.0,
            p99_us = s.p99 as f64 / 1000.0,
            max_us = s.max as f64 / 1000.0,
            "tty: out-fence signal delay after the page flip, last {} flips",
            s.count
        );
    }
}

/// At any page-flip event: out-fences of earlier flips that were late and have
/// signalled since are measured; those still unsignalled stay (at most [`MAX_LATE`]).
pub(crate) fn measure_late(tty: &mut TtyBackend) {
    let late = std::mem::take(&mut tty.late_fences);
    for l in late {
        match l.fence.signaled_at_ns().ok().flatten() {
            Some(sig) => record(tty, l.output, delay(sig, l.flip_ns)),
            None if tty.late_fences.len() < MAX_LATE => tty.late_fences.push(l),
            None => {
                if let Some(out) = tty.outputs.get_mut(l.output) {
                    out.out_fence_delay.dropped();
                }
            }
        }
    }
}

/// The page-flip event of output `index`'s commit, at kernel time `flip_ns`, came: its
/// out-fence (if it had one) is measured now, or once it signalled. `committed_ns`: when
/// the commit ioctl returned; a fence signalled by then is counted
/// (`out_fence_signalled_at_commit`), read from its timestamp rather than polled at
/// every commit.
pub(crate) fn measure(
    tty: &mut TtyBackend,
    index: usize,
    fence: Option<SyncFile>,
    committed_ns: u64,
    flip_ns: u64,
) {
    let Some(fence) = fence else {
        return;
    };
    match fence.signaled_at_ns().ok().flatten() {
        Some(sig) => {
            if sig <= committed_ns {
                tty.stats.out_fence_signalled_at_commit += 1;
            }
            record(tty, index, delay(sig, flip_ns))
        }
        None => {
            if let Some(out) = tty.outputs.get_mut(index) {
                out.out_fence_delay.late();
            }
            if tty.late_fences.len() < MAX_LATE {
                tty.late_fences.push(LateFence {
                    fence,
                    flip_ns,
                    output: index,
                });
            } else if let Some(out) = tty.outputs.get_mut(index) {
                out.out_fence_delay.dropped();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides_and_logs_when_full_then_every_log_every() {
        let mut d = OutFenceDelay::default();
        let mut logged = Vec::new();
        for i in 0..(LOG_EVERY + 10) {
            if let Some(s) = d.push(i as i64) {
                logged.push((i + 1, s));
            }
        }
        assert_eq!(logged.len(), 2, "{logged:?}");
        assert_eq!(logged[0].0, WINDOW as u64);
        assert_eq!(logged[0].1.min, 0);
        assert_eq!(logged[1].0, LOG_EVERY);
        let s = d.summary();
        assert_eq!(s.count, WINDOW);
        // The window holds the last WINDOW samples only.
        let last = (LOG_EVERY + 10 - 1) as i64;
        assert_eq!(s.max, last);
        assert_eq!(s.min, last - WINDOW as i64 + 1);
        let j = d.json("Virtual-1", 42, &ReleasePolicy::default());
        assert_eq!(j["samples_total"], LOG_EVERY + 10);
        assert_eq!(j["window"]["count"], WINDOW);
    }

    #[test]
    fn empty_is_zero() {
        let d = OutFenceDelay::default();
        assert_eq!(
            d.summary(),
            Summary {
                count: 0,
                min: 0,
                p50: 0,
                p99: 0,
                max: 0
            }
        );
    }
}
