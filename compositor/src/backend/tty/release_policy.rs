//! `--release-mode auto`, per CRTC: release with the out-fence while it signals at the
//! flip, at the flip while it lags (issue 14, part 4: the switch).
//!
//! Early release hands a replaced buffer back at commit time with the commit's
//! out-fence; the client's next GPU write into it waits for that fence. A flip release
//! hands it back at the page-flip event, with nothing to wait for. So early release
//! only gains while the fence signals at the flip: a fence that signals well after it
//! (wlroots dropped `OUT_FENCE_PTR` in 0.20 because some drivers signal it "much later"
//! than the flip event) makes every client wait longer than a flip release would.
//!
//! **The rule.** Every measured delay (fence signal minus the flip's kernel timestamp,
//! see [`super::out_fence_delay`]) goes into a short window of the CRTC's last
//! [`DECIDE_WINDOW`] delays. Once that window has filled since the last switch:
//! * early -> flip when its median exceeds a quarter of the refresh ([`LAG_DIVISOR`]);
//! * flip -> early when its median is back under an eighth ([`RECOVER_DIVISOR`]).
//!
//! **Why a quarter.** A client that draws its next frame into the released buffer has
//! one refresh to make the next vblank; a fence that lags by a quarter of it takes a
//! quarter of that budget, more than early release gives back (the release goes out a
//! few ms before the flip event: 4.8 ms p50 measured in the demo on virgl, where the
//! commit is made early in the cycle), and it stalls a client that waits on the fence
//! with the CPU for that long after the image was already off the plane. The gap to an
//! eighth is hysteresis: a driver whose delay sits at the threshold does not flap. The
//! median rather than a high percentile: one late fence (a busy host, a missed timer)
//! should not turn early release off; a driver that lags does so on most frames.
//!
//! Out-fences are requested in both modes, so the measurement, and the way back,
//! continue while a CRTC releases at the flip.

use std::collections::VecDeque;

use serde_json::json;

use super::release::ActiveRelease;

/// Delays in the decision window (half a second at 60 Hz).
pub const DECIDE_WINDOW: usize = 30;

/// Early -> flip when the window's median delay exceeds refresh / this.
pub const LAG_DIVISOR: u64 = 4;

/// Flip -> early when the window's median delay is under refresh / this.
pub const RECOVER_DIVISOR: u64 = 8;

/// A switch the policy made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The mode from now on.
    pub to: ActiveRelease,
    /// The window's median delay that decided it, ns.
    pub median_ns: i64,
    /// The threshold it crossed, ns.
    pub threshold_ns: i64,
}

/// One CRTC's release mode under `--release-mode auto`.
#[derive(Debug, Clone)]
pub struct ReleasePolicy {
    /// Whether the mode may switch (`auto` with early release possible at all).
    adaptive: bool,
    mode: ActiveRelease,
    /// The last delays since the last switch, ns.
    recent: VecDeque<i64>,
    to_flip: u64,
    to_early: u64,
}

/// Release at the flip, never switching: the safe mode until the backend has resolved
/// the real one.
impl Default for ReleasePolicy {
    fn default() -> Self {
        Self::new(ActiveRelease::Flip, false)
    }
}

impl ReleasePolicy {
    /// Start in `mode`; `adaptive`: `--release-mode auto` resolved to early release
    /// (out-fences and dma-buf fence import work), so the CRTC may switch.
    pub fn new(mode: ActiveRelease, adaptive: bool) -> Self {
        Self {
            adaptive: adaptive && mode == ActiveRelease::Early,
            mode,
            recent: VecDeque::with_capacity(DECIDE_WINDOW),
            to_flip: 0,
            to_early: 0,
        }
    }

    /// The mode in effect.
    pub fn mode(&self) -> ActiveRelease {
        self.mode
    }

    /// A measured out-fence delay (ns) on a CRTC whose refresh is `refresh_ns`. Returns
    /// the switch, if this delay made one.
    pub fn observe(&mut self, delay_ns: i64, refresh_ns: u64) -> Option<Switch> {
        if !self.adaptive || refresh_ns == 0 {
            return None;
        }
        if self.recent.len() == DECIDE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(delay_ns);
        if self.recent.len() < DECIDE_WINDOW {
            return None;
        }
        let mut v: Vec<i64> = self.recent.iter().copied().collect();
        v.sort_unstable();
        let median = syncbridge_bridge::percentile::nearest_rank(&v, 50).unwrap_or(0);
        let lag = i64::try_from(refresh_ns / LAG_DIVISOR).unwrap_or(i64::MAX);
        let recover = i64::try_from(refresh_ns / RECOVER_DIVISOR).unwrap_or(i64::MAX);
        let (to, threshold) = match self.mode {
            ActiveRelease::Early if median > lag => (ActiveRelease::Flip, lag),
            ActiveRelease::Flip if median < recover => (ActiveRelease::Early, recover),
            _ => return None,
        };
        self.mode = to;
        self.recent.clear();
        match to {
            ActiveRelease::Flip => self.to_flip += 1,
            ActiveRelease::Early => self.to_early += 1,
        }
        Some(Switch {
            to,
            median_ns: median,
            threshold_ns: threshold,
        })
    }

    /// The CRTC's entry fields for `kms.out_fence_delay_per_crtc`.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "release_mode": self.mode.name(),
            "adaptive": self.adaptive,
            "switches_to_flip": self.to_flip,
            "switches_to_early": self.to_early,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFRESH: u64 = 16_666_667;

    fn feed(p: &mut ReleasePolicy, delay: i64, n: usize) -> Vec<Switch> {
        (0..n).filter_map(|_| p.observe(delay, REFRESH)).collect()
    }

    #[test]
    fn a_lagging_fence_switches_to_flip_and_back_once_it_keeps_up() {
        let mut p = ReleasePolicy::new(ActiveRelease::Early, true);
        // At the flip (VKMS: ~1 us): stays early.
        assert!(feed(&mut p, 1_000, 100).is_empty());
        // Lagging by 12 ms (> 4.17 ms): one switch, after a full window of lag.
        let s = feed(&mut p, 12_000_000, DECIDE_WINDOW / 2);
        assert!(s.is_empty(), "half a window of lag is not enough: {s:?}");
        let s = feed(&mut p, 12_000_000, DECIDE_WINDOW);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].to, ActiveRelease::Flip);
        assert_eq!(s[0].threshold_ns, (REFRESH / 4) as i64);
        assert_eq!(p.mode(), ActiveRelease::Flip);
        // Between an eighth and a quarter: hysteresis, stays at the flip.
        assert!(feed(&mut p, 3_000_000, 100).is_empty());
        // Back at the flip: early again.
        let s = feed(&mut p, 1_000, DECIDE_WINDOW);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].to, ActiveRelease::Early);
        let j = p.json();
        assert_eq!(j["switches_to_flip"], 1);
        assert_eq!(j["switches_to_early"], 1);
    }

    #[test]
    fn a_few_late_fences_do_not_switch() {
        let mut p = ReleasePolicy::new(ActiveRelease::Early, true);
        for i in 0..300 {
            let d = if i % 5 == 0 { 15_000_000 } else { 2_000 };
            assert_eq!(p.observe(d, REFRESH), None);
        }
        assert_eq!(p.mode(), ActiveRelease::Early);
    }

    #[test]
    fn fixed_modes_never_switch() {
        let mut early = ReleasePolicy::new(ActiveRelease::Early, false);
        let mut flip = ReleasePolicy::new(ActiveRelease::Flip, true);
        for _ in 0..200 {
            assert_eq!(early.observe(15_000_000, REFRESH), None);
            assert_eq!(flip.observe(0, REFRESH), None);
        }
        assert_eq!(early.mode(), ActiveRelease::Early);
        assert_eq!(flip.mode(), ActiveRelease::Flip);
    }
}
