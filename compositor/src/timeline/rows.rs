//! Linking recorded timeline events into one row per buffer attachment.
//!
//! A commit has no buffer id yet (the bridge gives one when the commit is applied), so
//! commits are queued per surface and matched in order: a surface's commits are applied
//! in the order they were made, and the `applied` event names the id. Acquire waits are
//! matched to their commit by wait id.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use super::Event;

/// One buffer attachment's life (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BufferRow {
    /// The bridge's buffer id.
    pub buffer: u64,
    /// The surface key.
    pub surface: u64,
    /// The client committed it.
    pub commit_ns: Option<u64>,
    /// Its acquire fence signalled (the kernel's time when known, else the wake-up).
    pub acquire_signalled_ns: Option<u64>,
    /// The commit was applied.
    pub applied_ns: u64,
    /// Renders that sampled it, and whether each one's render fence went into its release.
    pub sampled: Vec<(u64, bool)>,
    /// Atomic commits that put it on a plane.
    pub on_plane: Vec<u64>,
    /// Atomic commits (or flips) that took it off its plane, and whether with the
    /// commit's out-fence.
    pub off_plane: Vec<(u64, bool)>,
    /// Its release went out, and how.
    pub released: Option<(u64, String)>,
}

/// Every recorded buffer's row, the compositor's atomic commits and page flips.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Rows by buffer id.
    pub rows: BTreeMap<u64, BufferRow>,
    /// Atomic commits: (time, output, with an out-fence).
    pub atomic_commits: Vec<(u64, u64, bool)>,
    /// Page flips: (the kernel's vblank time, output).
    pub page_flips: Vec<(u64, u64)>,
    /// Events the recorder dropped (it keeps the latest only).
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct PendingCommit {
    commit_ns: u64,
    wait: Option<u64>,
    signalled_ns: Option<u64>,
}

impl Timeline {
    /// Links `events` (in the order they were recorded).
    pub fn build(events: &[Event], dropped: u64) -> Self {
        let mut t = Self {
            dropped,
            ..Default::default()
        };
        let mut pending: HashMap<u64, VecDeque<PendingCommit>> = HashMap::new();
        for e in events {
            match (e.event.as_str(), e.surface, e.buffer) {
                ("commit", Some(surface), _) => {
                    pending
                        .entry(surface)
                        .or_default()
                        .push_back(PendingCommit {
                            commit_ns: e.t_ns,
                            ..Default::default()
                        });
                }
                ("acquire_wait", Some(surface), _) => {
                    if let Some(last) = pending.get_mut(&surface).and_then(|q| q.back_mut()) {
                        last.wait = e.wait;
                    }
                }
                ("acquire_signalled", Some(surface), _) => {
                    let commit = pending
                        .get_mut(&surface)
                        .and_then(|q| q.iter_mut().find(|c| c.wait.is_some() && c.wait == e.wait));
                    if let Some(c) = commit {
                        c.signalled_ns = Some(e.kernel_ns.unwrap_or(e.t_ns));
                    }
                }
                ("applied", Some(surface), Some(buffer)) => {
                    let commit = pending.get_mut(&surface).and_then(|q| q.pop_front());
                    let row = t.rows.entry(buffer).or_insert_with(|| BufferRow {
                        buffer,
                        surface,
                        applied_ns: e.t_ns,
                        ..Default::default()
                    });
                    if let Some(c) = commit {
                        row.commit_ns.get_or_insert(c.commit_ns);
                        if let Some(s) = c.signalled_ns {
                            row.acquire_signalled_ns.get_or_insert(s);
                        }
                    }
                }
                ("sampled", _, Some(buffer)) => {
                    if let Some(row) = t.rows.get_mut(&buffer) {
                        row.sampled.push((e.t_ns, e.fenced.unwrap_or(false)));
                    }
                }
                ("on_plane", _, Some(buffer)) => {
                    if let Some(row) = t.rows.get_mut(&buffer) {
                        row.on_plane.push(e.t_ns);
                    }
                }
                ("off_plane", _, Some(buffer)) => {
                    if let Some(row) = t.rows.get_mut(&buffer) {
                        row.off_plane.push((e.t_ns, e.fenced.unwrap_or(false)));
                    }
                }
                ("released", _, Some(buffer)) => {
                    if let Some(row) = t.rows.get_mut(&buffer) {
                        row.released
                            .get_or_insert_with(|| (e.t_ns, e.how.clone().unwrap_or_default()));
                    }
                }
                ("atomic_commit", _, _) => t.atomic_commits.push((
                    e.t_ns,
                    e.output.unwrap_or(0),
                    e.out_fence.unwrap_or(false),
                )),
                ("page_flip", _, _) => t
                    .page_flips
                    .push((e.kernel_ns.unwrap_or(e.t_ns), e.output.unwrap_or(0))),
                _ => {}
            }
        }
        t
    }

    /// The rows to chart: `count` consecutive complete rows (committed, applied and
    /// released) of one surface, from the middle of its run (the start has shader
    /// compilation and first allocations in it). The surface is the one with the most
    /// complete rows that were on a plane (direct scanout shows the out-fence release),
    /// else with the most complete rows.
    pub fn chart_rows(&self, count: usize) -> Vec<&BufferRow> {
        let complete = |r: &&BufferRow| r.commit_ns.is_some() && r.released.is_some();
        let mut per_surface: HashMap<u64, (usize, usize)> = HashMap::new();
        for r in self.rows.values().filter(complete) {
            let n = per_surface.entry(r.surface).or_default();
            n.0 += usize::from(!r.on_plane.is_empty());
            n.1 += 1;
        }
        let Some((&surface, _)) = per_surface.iter().max_by_key(|(s, n)| (**n, **s)) else {
            return Vec::new();
        };
        let mut rows: Vec<&BufferRow> = self
            .rows
            .values()
            .filter(complete)
            .filter(|r| r.surface == surface)
            .collect();
        rows.sort_by_key(|r| r.applied_ns);
        let start = (rows.len() / 2).saturating_sub(count / 2);
        rows.into_iter().skip(start).take(count).collect()
    }

    /// The page flip that ended the display's reads of a scanned-out buffer: the flip of
    /// the atomic commit that took it off its plane (the last commit made before the
    /// bridge heard of it; the first flip after that commit). `None` for a buffer never
    /// taken off a plane, or when that flip was not recorded.
    pub fn flip_ending_scanout(&self, row: &BufferRow) -> Option<u64> {
        let (off, _) = row.off_plane.last()?;
        let commit = self
            .atomic_commits
            .iter()
            .map(|(t, _, _)| *t)
            .filter(|t| t <= off)
            .max()?;
        self.page_flips
            .iter()
            .map(|(f, _)| *f)
            .filter(|f| *f >= commit)
            .min()
    }

    /// How long before that flip the release went out (ns; negative: after it).
    pub fn release_lead_ns(&self, row: &BufferRow) -> Option<i64> {
        let flip = self.flip_ending_scanout(row)?;
        let (released, _) = row.released.as_ref()?;
        Some(i64::try_from(i128::from(flip) - i128::from(*released)).unwrap_or(0))
    }

    /// Every row, the commits and flips, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let charted = self.chart_rows(CHARTED);
        serde_json::json!({
            "rows": self.rows.values().collect::<Vec<_>>(),
            "atomic_commits": self.atomic_commits,
            "page_flips": self.page_flips,
            "dropped_events": self.dropped,
            "charted_buffers": charted.iter().map(|r| r.buffer).collect::<Vec<_>>(),
            "charted_release_lead_ns": charted.iter().map(|r| self.release_lead_ns(r)).collect::<Vec<_>>(),
        })
    }
}

/// How many buffers the chart shows.
pub const CHARTED: usize = 6;

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t_ns: u64, event: &str) -> Event {
        Event {
            t_ns,
            event: event.into(),
            ..Default::default()
        }
    }

    #[test]
    fn commits_are_matched_to_buffers_in_order_and_waits_by_id() {
        let mut events = Vec::new();
        for (t, wait) in [(10, 1), (20, 2)] {
            events.push(Event {
                surface: Some(7),
                ..ev(t, "commit")
            });
            events.push(Event {
                surface: Some(7),
                wait: Some(wait),
                ..ev(t, "acquire_wait")
            });
        }
        // The second commit's fence signals first; commits still apply in order.
        events.push(Event {
            surface: Some(7),
            wait: Some(2),
            kernel_ns: Some(24),
            ..ev(25, "acquire_signalled")
        });
        events.push(Event {
            surface: Some(7),
            wait: Some(1),
            ..ev(30, "acquire_signalled")
        });
        events.push(Event {
            surface: Some(7),
            buffer: Some(100),
            ..ev(31, "applied")
        });
        events.push(Event {
            surface: Some(7),
            buffer: Some(101),
            ..ev(32, "applied")
        });
        events.push(Event {
            buffer: Some(100),
            how: Some("wl_buffer.release".into()),
            ..ev(40, "released")
        });
        events.push(Event {
            output: Some(0),
            kernel_ns: Some(45),
            ..ev(46, "page_flip")
        });
        let t = Timeline::build(&events, 0);
        let a = &t.rows[&100];
        assert_eq!((a.commit_ns, a.acquire_signalled_ns), (Some(10), Some(30)));
        let b = &t.rows[&101];
        assert_eq!((b.commit_ns, b.acquire_signalled_ns), (Some(20), Some(24)));
        assert_eq!(a.released.as_ref().map(|r| r.0), Some(40));
        assert_eq!(t.release_lead_ns(a), None, "never on a plane");
        assert_eq!(t.chart_rows(6).len(), 1, "only buffer 100 is complete");
    }

    #[test]
    fn the_flip_ending_a_scanout_is_that_of_the_commit_that_took_it_off() {
        // The commit at 200 took the buffer off; its flip came at 210, before the bridge
        // heard of it at 212 (a slow cycle): the release is late, not 37 early.
        let t = Timeline {
            atomic_commits: vec![(100, 0, true), (200, 0, true)],
            page_flips: vec![(150, 0), (210, 0), (250, 0)],
            ..Default::default()
        };
        let row = BufferRow {
            off_plane: vec![(212, true)],
            released: Some((213, "wl_buffer.release".into())),
            ..Default::default()
        };
        assert_eq!(t.flip_ending_scanout(&row), Some(210));
        assert_eq!(t.release_lead_ns(&row), Some(-3));
    }
}
