//! `wp_linux_drm_syncobj_timeline_v1`: an imported DRM timeline syncobj and points on it.
//!
//! A [`SyncobjTimeline`] is a shared handle on one imported timeline (one bridge
//! `Timeline`). Identity is per import: two `import_timeline` requests on fds of the same
//! kernel syncobj give two distinct timelines, as in wlroots; the `conflicting_points`
//! check compares these identities.
//!
//! ```
//! use syncbridge_protocols::drm_syncobj::point_from_hi_lo;
//! assert_eq!(point_from_hi_lo(1, 2), (1u64 << 32) | 2);
//! assert_eq!(point_from_hi_lo(u32::MAX, u32::MAX), u64::MAX);
//! ```

use std::fmt;
use std::sync::Arc;

use syncbridge_bridge::syncobj::Timeline;

use crate::gauge::{Gauge, GaugeGuard};

/// Combines the protocol's `point_hi`/`point_lo` into a 64-bit timeline point.
pub fn point_from_hi_lo(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

/// A shared handle on one imported timeline.
#[derive(Clone)]
pub struct SyncobjTimeline(Arc<Inner>);

struct Inner {
    timeline: Timeline,
    /// Counts the timeline on its client's timeline gauge until the last handle drops (the
    /// protocol object may be destroyed while pending points still hold the timeline).
    _counted: Option<GaugeGuard>,
}

impl SyncobjTimeline {
    /// Wraps a timeline the bridge imported.
    pub fn new(timeline: Timeline) -> Self {
        Self(Arc::new(Inner {
            timeline,
            _counted: None,
        }))
    }

    /// Wraps a timeline imported for a client, counted on `gauge` (the client's timeline
    /// gauge) as long as any handle on it lives.
    pub fn counted(timeline: Timeline, gauge: &Gauge) -> Self {
        Self(Arc::new(Inner {
            timeline,
            _counted: Some(gauge.hold(1)),
        }))
    }

    /// The bridge timeline.
    pub fn timeline(&self) -> &Timeline {
        &self.0.timeline
    }

    /// Whether two handles come from the same `import_timeline` request.
    pub fn same_import(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl PartialEq for SyncobjTimeline {
    fn eq(&self, other: &Self) -> bool {
        self.same_import(other)
    }
}

impl Eq for SyncobjTimeline {}

impl fmt::Debug for SyncobjTimeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SyncobjTimeline")
            .field(&Arc::as_ptr(&self.0))
            .finish()
    }
}

/// One point on an imported timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncobjPoint {
    /// The timeline.
    pub timeline: SyncobjTimeline,
    /// The point value.
    pub point: u64,
}

/// User data of a `wp_linux_drm_syncobj_timeline_v1` object.
#[derive(Debug)]
pub struct SyncobjTimelineData {
    /// None when the import failed (the client got `invalid_timeline` and is gone).
    pub(crate) timeline: Option<SyncobjTimeline>,
}

impl SyncobjTimelineData {
    /// The imported timeline behind the object (None if its import failed).
    pub fn timeline(&self) -> Option<&SyncobjTimeline> {
        self.timeline.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hi_lo_combines() {
        assert_eq!(point_from_hi_lo(0, 0), 0);
        assert_eq!(point_from_hi_lo(0, 7), 7);
        assert_eq!(point_from_hi_lo(1, 0), 1 << 32);
        assert_eq!(
            point_from_hi_lo(0xdead_beef, 0x1234_5678),
            0xdead_beef_1234_5678
        );
    }
}
