//! Current/peak gauges with RAII guards: how many fences and fds syncbridge holds.
//!
//! Every object that keeps a fence or an fd alive (a queued acquire fence, a wait source,
//! a reader fence waiting to become a release fence) carries a [`GaugeGuard`]; dropping
//! the object drops the guard and the gauge goes down. Leaks therefore show up as a gauge
//! that never returns to zero, which the tests check after a client disconnects.
//!
//! ```
//! use syncbridge_protocols::gauge::Gauge;
//! let fds = Gauge::new();
//! let a = fds.hold(1);
//! let b = fds.hold(2);
//! assert_eq!((fds.current(), fds.peak()), (3, 3));
//! drop(a);
//! drop(b);
//! assert_eq!((fds.current(), fds.peak()), (0, 3));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use syncbridge_bridge::sync_file::SyncFile;

/// A shared current/peak counter. Cloning shares the counter.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<GaugeInner>);

#[derive(Debug, Default)]
struct GaugeInner {
    current: AtomicU64,
    peak: AtomicU64,
}

impl Gauge {
    /// A gauge at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` until the returned guard is dropped.
    pub fn hold(&self, n: u64) -> GaugeGuard {
        let now = self
            .0
            .current
            .fetch_add(n, Ordering::Relaxed)
            .saturating_add(n);
        self.0.peak.fetch_max(now, Ordering::Relaxed);
        GaugeGuard {
            gauge: self.clone(),
            n,
        }
    }

    /// The value right now.
    pub fn current(&self) -> u64 {
        self.0.current.load(Ordering::Relaxed)
    }

    /// The highest value seen.
    pub fn peak(&self) -> u64 {
        self.0.peak.load(Ordering::Relaxed)
    }
}

/// Keeps `n` counted on a [`Gauge`] while alive.
#[must_use = "the count is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct GaugeGuard {
    gauge: Gauge,
    n: u64,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.0.current.fetch_sub(self.n, Ordering::Relaxed);
    }
}

/// The two gauges every held fence touches: fences and the fds behind them.
#[derive(Debug, Clone, Default)]
pub struct HeldGauges {
    /// Fences (sync_files, timeline points, dma-buf waits) held right now.
    pub fences: Gauge,
    /// File descriptors held right now (sync_files, eventfds).
    pub fds: Gauge,
}

/// Guards for one held fence (and the fd it may hold), on the bridge-wide gauges and,
/// when the fence is held for a client, on that client's gauges too.
#[must_use = "the fence stops being counted as soon as this is dropped"]
#[derive(Debug)]
pub struct HeldGuard {
    _fence: GaugeGuard,
    _fd: Option<GaugeGuard>,
    _client: Option<Box<HeldGuard>>,
}

impl HeldGauges {
    /// Counts one fence, and one fd when `has_fd`.
    pub fn hold(&self, has_fd: bool) -> HeldGuard {
        HeldGuard {
            _fence: self.fences.hold(1),
            _fd: has_fd.then(|| self.fds.hold(1)),
            _client: None,
        }
    }

    /// Counts one fence (and one fd when `has_fd`) on these bridge-wide gauges and on
    /// `client`'s gauges (its budget), until the guard drops.
    pub fn hold_for(&self, client: &HeldGauges, has_fd: bool) -> HeldGuard {
        HeldGuard {
            _client: Some(Box::new(client.hold(has_fd))),
            ..self.hold(has_fd)
        }
    }
}

/// A [`SyncFile`] counted on the held gauges (one fence, one fd) while alive.
#[must_use = "dropping it closes the fence fd"]
#[derive(Debug)]
pub struct HeldSyncFile {
    fence: SyncFile,
    _guard: HeldGuard,
}

impl HeldSyncFile {
    /// Counts `fence` on `gauges`.
    pub fn new(fence: SyncFile, gauges: &HeldGauges) -> Self {
        Self {
            fence,
            _guard: gauges.hold(true),
        }
    }

    /// Counts `fence` on `gauges` and on `client`'s gauges (its budget).
    pub fn new_for(fence: SyncFile, gauges: &HeldGauges, client: &HeldGauges) -> Self {
        Self {
            fence,
            _guard: gauges.hold_for(client, true),
        }
    }

    /// The fence.
    pub fn fence(&self) -> &SyncFile {
        &self.fence
    }

    /// Splits into the fence and its guard (keep the guard as long as the fd lives).
    pub fn into_parts(self) -> (SyncFile, HeldGuard) {
        (self.fence, self._guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_guards_count_fences_and_fds() {
        let g = HeldGauges::default();
        let a = g.hold(true);
        let b = g.hold(false);
        assert_eq!(g.fences.current(), 2);
        assert_eq!(g.fds.current(), 1);
        drop(a);
        drop(b);
        assert_eq!(g.fences.current(), 0);
        assert_eq!(g.fds.current(), 0);
        assert_eq!(g.fences.peak(), 2);
    }

    #[test]
    fn client_guards_count_on_both_and_drop_together() {
        let all = HeldGauges::default();
        let client = HeldGauges::default();
        let a = all.hold_for(&client, true);
        let b = all.hold(true);
        assert_eq!((all.fds.current(), client.fds.current()), (2, 1));
        assert_eq!((all.fences.current(), client.fences.current()), (2, 1));
        drop(a);
        assert_eq!((all.fds.current(), client.fds.current()), (1, 0));
        assert_eq!(client.fences.current(), 0);
        drop(b);
        assert_eq!(all.fds.current(), 0);
    }

    #[test]
    fn clones_share() {
        let g = Gauge::new();
        let h = g.clone();
        let _x = h.hold(5);
        assert_eq!(g.current(), 5);
    }
}
