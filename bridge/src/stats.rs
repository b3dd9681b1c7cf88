//! Process-wide counters of what the bridge did, for logs and `--stats-json`.
//!
//! The counters are global atomics (relaxed ordering: they are statistics, not
//! synchronization), updated by every operation in this crate.
//!
//! ```
//! let before = syncbridge_bridge::stats();
//! // ... run the compositor for a while ...
//! let now = syncbridge_bridge::stats();
//! assert!(now.fences_exported >= before.fences_exported);
//! println!("live fence fds: {}", now.live_fds());
//! ```

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A snapshot of the bridge's counters. Take one with [`stats()`](crate::stats()).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` calls that succeeded (one per plane).
    pub fences_exported: u64,
    /// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE` calls that succeeded (one per plane).
    pub fences_imported: u64,
    /// `SYNC_IOC_MERGE` calls that succeeded.
    pub fences_merged: u64,
    /// Reader fences the release merger dropped because they had already signalled.
    pub signalled_fences_dropped: u64,
    /// Timeline point -> sync_file conversions.
    pub points_exported: u64,
    /// sync_file -> timeline point conversions.
    pub points_imported: u64,
    /// Timeline points signalled from the CPU (the fallback when no fence exists).
    pub points_cpu_signalled: u64,
    /// eventfds registered on timeline points.
    pub eventfds_registered: u64,
    /// `SyncFile`s alive right now (each holds one fd).
    pub live_sync_files: i64,
    /// `Timeline`s alive right now (each holds one syncobj handle, no fd).
    pub live_timelines: i64,
}

impl Stats {
    /// File descriptors the bridge holds right now (sync_files; timelines hold handles).
    pub fn live_fds(&self) -> i64 {
        self.live_sync_files
    }
}

pub(crate) struct Counters {
    pub fences_exported: AtomicU64,
    pub fences_imported: AtomicU64,
    pub fences_merged: AtomicU64,
    pub signalled_fences_dropped: AtomicU64,
    pub points_exported: AtomicU64,
    pub points_imported: AtomicU64,
    pub points_cpu_signalled: AtomicU64,
    pub eventfds_registered: AtomicU64,
    pub live_sync_files: AtomicI64,
    pub live_timelines: AtomicI64,
}

pub(crate) static COUNTERS: Counters = Counters {
    fences_exported: AtomicU64::new(0),
    fences_imported: AtomicU64::new(0),
    fences_merged: AtomicU64::new(0),
    signalled_fences_dropped: AtomicU64::new(0),
    points_exported: AtomicU64::new(0),
    points_imported: AtomicU64::new(0),
    points_cpu_signalled: AtomicU64::new(0),
    eventfds_registered: AtomicU64::new(0),
    live_sync_files: AtomicI64::new(0),
    live_timelines: AtomicI64::new(0),
};

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of the process-wide bridge counters.
pub fn stats() -> Stats {
    let c = &COUNTERS;
    Stats {
        fences_exported: c.fences_exported.load(Ordering::Relaxed),
        fences_imported: c.fences_imported.load(Ordering::Relaxed),
        fences_merged: c.fences_merged.load(Ordering::Relaxed),
        signalled_fences_dropped: c.signalled_fences_dropped.load(Ordering::Relaxed),
        points_exported: c.points_exported.load(Ordering::Relaxed),
        points_imported: c.points_imported.load(Ordering::Relaxed),
        points_cpu_signalled: c.points_cpu_signalled.load(Ordering::Relaxed),
        eventfds_registered: c.eventfds_registered.load(Ordering::Relaxed),
        live_sync_files: c.live_sync_files.load(Ordering::Relaxed),
        live_timelines: c.live_timelines.load(Ordering::Relaxed),
    }
}
