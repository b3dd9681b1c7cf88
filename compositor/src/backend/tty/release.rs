//! When client buffers that were on a plane go back to their clients.
//!
//! * **Early** (the point of syncbridge): when commit N stops showing buffer B, N's
//!   out-fence ("the display stopped reading B") goes to the bridge right after the
//!   commit ioctl (imported into B as a read fence / transferred into the syncobj release
//!   point / sent as `fenced_release`) and our clone of B's `Buffer` is dropped, so
//!   `wl_buffer.release` goes out before the page flip.
//! * **Flip** (fallback): B is released at N's page-flip event, without a fence. Chosen
//!   with `--release-mode flip`, or automatically when the CRTC has no `OUT_FENCE_PTR` or
//!   the kernel cannot import fences into dma-bufs.
//!
//! The statistics measure the point of it: how long before the page-flip event each
//! release went out (negative in flip mode), and when the out-fence signalled relative to
//! that event.

use serde_json::json;

/// `--release-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReleaseMode {
    /// Early where out-fences and dma-buf fence import work, else at the flip.
    #[default]
    Auto,
    /// Release with the out-fence, before the flip.
    Early,
    /// Release at the page-flip event.
    Flip,
}

/// The mode in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveRelease {
    /// With the out-fence, before the flip.
    Early,
    /// At the page-flip event.
    Flip,
}

impl ActiveRelease {
    /// Name for logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            ActiveRelease::Early => "early (out-fence)",
            ActiveRelease::Flip => "at page flip",
        }
    }
}

/// Decide the mode, and say why.
pub fn resolve(
    requested: ReleaseMode,
    out_fences: bool,
    dmabuf_import: bool,
) -> (ActiveRelease, String) {
    match requested {
        ReleaseMode::Flip => (
            ActiveRelease::Flip,
            "requested with --release-mode flip".into(),
        ),
        ReleaseMode::Early if out_fences => (
            ActiveRelease::Early,
            if dmabuf_import {
                "requested with --release-mode early".into()
            } else {
                "requested with --release-mode early (no dma-buf fence import: implicit clients \
                 get the release without a fence)"
                    .into()
            },
        ),
        ReleaseMode::Early => (
            ActiveRelease::Flip,
            "--release-mode early, but the CRTC has no OUT_FENCE_PTR: releasing at the flip".into(),
        ),
        ReleaseMode::Auto => match (out_fences, dmabuf_import) {
            (true, true) => (
                ActiveRelease::Early,
                "out-fences available and the kernel imports fences into dma-bufs".into(),
            ),
            (false, _) => (
                ActiveRelease::Flip,
                "the CRTC has no OUT_FENCE_PTR property".into(),
            ),
            (true, false) => (
                ActiveRelease::Flip,
                "no DMA_BUF_IOCTL_IMPORT_SYNC_FILE: implicit clients could not carry the fence"
                    .into(),
            ),
        },
    }
}

/// Bounded sample set of signed nanosecond values.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<i64>,
    next: usize,
    count: u64,
}

const MAX_SAMPLES: usize = 4096;

impl Samples {
    /// Add a sample (the oldest is overwritten once full).
    pub fn push(&mut self, v: i64) {
        self.count += 1;
        if self.values.len() < MAX_SAMPLES {
            self.values.push(v);
        } else {
            self.values[self.next] = v;
            self.next = (self.next + 1) % MAX_SAMPLES;
        }
    }

    /// count / p50 / p99 / min / max in microseconds (nearest-rank percentiles; 0 when
    /// there are no samples).
    pub fn json(&self) -> serde_json::Value {
        let mut v = self.values.clone();
        v.sort_unstable();
        let pct = |p| {
            syncbridge_bridge::percentile::nearest_rank(&v, p).map_or(0.0, |x| x as f64 / 1000.0)
        };
        json!({
            "count": self.count,
            "p50_us": pct(50),
            "p99_us": pct(99),
            "min_us": v.first().map_or(0.0, |x| *x as f64 / 1000.0),
            "max_us": v.last().map_or(0.0, |x| *x as f64 / 1000.0),
        })
    }
}

/// Counters of the TTY backend, for `--stats-json`.
#[derive(Debug, Clone, Default)]
pub struct KmsStats {
    /// Release lead time: when the page-flip event was received minus when the release
    /// was sent (positive = before the flip event).
    pub release_lead: Samples,
    /// The same against the flip's kernel timestamp (the vblank time the kernel reports,
    /// which a late vblank timer, e.g. VKMS in an emulated VM, puts before the event).
    pub release_lead_vblank: Samples,
    /// How long after its kernel timestamp each page-flip event was received.
    pub flip_event_latency: Samples,
    /// From receiving a page-flip event to the next commit ioctl returning.
    pub commit_after_flip_event: Samples,
    /// Commits whose out-fence had already signalled when the commit ioctl returned
    /// (the display flipped at once: nothing left for early release to gain).
    pub out_fence_signalled_at_commit: u64,
    /// Out-fence signal time minus page-flip time.
    pub out_fence_delay: Samples,
    /// Commits that put a client buffer on the primary plane (or kept it there).
    pub direct_scanout_frames: u64,
    /// Commits of composited frames.
    pub composited_frames: u64,
    /// Cycles that drew nothing: nothing changed since the last one, and the slot on
    /// screen shows it.
    pub composites_skipped: u64,
    /// Commits made.
    pub commits: u64,
    /// Refresh cycles with nothing new to show (no commit made; the output idled).
    pub idle_cycles: u64,
    /// Of them, cycles after a flip or at a deadline that nothing had woken since the last
    /// render began: not rendered at all (frame callbacks and barriers only).
    pub cycles_unchanged: u64,
    /// Commits the kernel refused (errno in the log).
    pub commit_errors: u64,
    /// EBUSY among them.
    pub commit_ebusy: u64,
    /// Commits made without `OUT_FENCE_PTR` because the process was out of fds (the kernel
    /// refuses the whole commit when it cannot install the out-fence fd): their replaced
    /// buffers went back at the page-flip event.
    pub commits_without_out_fence: u64,
    /// GLES renders without an exportable fence, waited for on the CPU before their commit.
    pub render_cpu_waits: u64,
    /// Flips injected to provoke EBUSY (`--kms-inject-ebusy-every`).
    pub injected_busy_flips: u64,
    /// TEST_ONLY commits that refused a client buffer.
    pub test_only_failures: u64,
    /// Page-flip events.
    pub flips: u64,
    /// Out-fences received.
    pub out_fences: u64,
    /// Buffers released early / at the flip.
    pub early_releases: u64,
    /// Buffers released at the flip.
    pub flip_releases: u64,
    /// Connectors that went away.
    pub connectors_lost: u64,
    /// Connectors that appeared after startup (outputs added by a rescan).
    pub connectors_added: u64,
    /// Session pauses (VT switches away).
    pub session_pauses: u64,
    /// Times a CRTC switched between early release and release at the flip
    /// (`--release-mode auto`, see [`super::release_policy`]).
    pub release_mode_switches: u64,
    /// Commits after which at least one overlay plane showed a client buffer.
    pub overlay_frames: u64,
    /// Client buffers newly put on an overlay plane.
    pub overlay_assignments: u64,
    /// Client buffers TEST_ONLY refused on an overlay plane (composited instead).
    pub overlay_test_failures: u64,
    /// Commits after which the cursor plane showed the pointer.
    pub cursor_frames: u64,
    /// Cursor images written into the cursor plane's buffers.
    pub cursor_uploads: u64,
    /// The last cursor image: "default", "client" or "hidden".
    pub cursor_source: &'static str,
}

impl KmsStats {
    /// The `kms` section of the stats document.
    pub fn json(
        &self,
        device: &str,
        driver: &str,
        mode: ActiveRelease,
        out_fences: bool,
    ) -> serde_json::Value {
        json!({
            "device": device,
            "driver": driver,
            "release_mode": mode.name(),
            "out_fences_available": out_fences,
            "release_lead_time": self.release_lead.json(),
            "release_lead_vs_vblank_timestamp": self.release_lead_vblank.json(),
            "flip_event_latency": self.flip_event_latency.json(),
            "commit_after_flip_event": self.commit_after_flip_event.json(),
            "out_fence_signalled_at_commit": self.out_fence_signalled_at_commit,
            "out_fence_signal_delay": self.out_fence_delay.json(),
            "direct_scanout_frames": self.direct_scanout_frames,
            "composited_frames": self.composited_frames,
            "composites_skipped": self.composites_skipped,
            "commits": self.commits,
            "idle_cycles": self.idle_cycles,
            "cycles_unchanged": self.cycles_unchanged,
            "commit_errors": self.commit_errors,
            "commit_ebusy": self.commit_ebusy,
            "commits_without_out_fence": self.commits_without_out_fence,
            "injected_busy_flips": self.injected_busy_flips,
            "test_only_failures": self.test_only_failures,
            "page_flips": self.flips,
            "out_fences": self.out_fences,
            "early_releases": self.early_releases,
            "flip_releases": self.flip_releases,
            "connectors_lost": self.connectors_lost,
            "connectors_added": self.connectors_added,
            "session_pauses": self.session_pauses,
            "release_mode_switches": self.release_mode_switches,
            "overlay_frames": self.overlay_frames,
            "overlay_assignments": self.overlay_assignments,
            "overlay_test_failures": self.overlay_test_failures,
            "cursor_frames": self.cursor_frames,
            "cursor_uploads": self.cursor_uploads,
            "cursor_source": self.cursor_source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_without_out_fences() {
        assert_eq!(
            resolve(ReleaseMode::Auto, true, true).0,
            ActiveRelease::Early
        );
        assert_eq!(
            resolve(ReleaseMode::Auto, false, true).0,
            ActiveRelease::Flip
        );
        assert_eq!(
            resolve(ReleaseMode::Auto, true, false).0,
            ActiveRelease::Flip
        );
        assert_eq!(
            resolve(ReleaseMode::Early, false, true).0,
            ActiveRelease::Flip
        );
        assert_eq!(
            resolve(ReleaseMode::Flip, true, true).0,
            ActiveRelease::Flip
        );
    }

    #[test]
    fn percentiles() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(i * 1000);
        }
        let j = s.json();
        assert_eq!(j["count"], 100);
        assert_eq!(j["p50_us"], 50.0);
        assert_eq!(j["p99_us"], 99.0);

        // Nearest rank, like every other figure: p99 of two samples is the larger one.
        let mut two = Samples::default();
        two.push(1000);
        two.push(2000);
        let j = two.json();
        assert_eq!(
            (j["p50_us"].as_f64(), j["p99_us"].as_f64()),
            (Some(1.0), Some(2.0))
        );
        let j = Samples::default().json();
        assert_eq!(j["count"], 0);
        assert_eq!(
            (j["p50_us"].as_f64(), j["max_us"].as_f64()),
            (Some(0.0), Some(0.0))
        );
    }
}
