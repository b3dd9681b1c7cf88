//! Counters, the periodic stats line, and the `--stats-json` document.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::json;
use smithay::reexports::wayland_server::backend::DisconnectReason;
use syncbridge_protocols::sync_bridge::{LatencySummary, SyncStats};

/// Errors writing the stats document.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// Serializing failed.
    #[error("serializing stats: {0}")]
    Serialize(#[from] serde_json::Error),
    /// Writing the file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// Target path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How many protocol error messages the stats keep (the count is unbounded).
const MAX_ERROR_MESSAGES: usize = 32;

/// Counters updated from [`smithay::reexports::wayland_server::backend::ClientData`]
/// callbacks, which only get `&self`.
#[derive(Debug, Default)]
pub struct ClientCounters {
    connected: AtomicU64,
    disconnected: AtomicU64,
    protocol_errors: AtomicU64,
    error_messages: Mutex<Vec<String>>,
    accept_paused: AtomicU64,
}

impl ClientCounters {
    pub(crate) fn client_connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn client_disconnected(&self, reason: &DisconnectReason) {
        self.disconnected.fetch_add(1, Ordering::Relaxed);
        if let DisconnectReason::ProtocolError(err) = reason {
            self.protocol_errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut messages) = self.error_messages.lock() {
                if messages.len() < MAX_ERROR_MESSAGES {
                    messages.push(format!(
                        "{}#{}: code {}: {}",
                        err.object_interface, err.object_id, err.code, err.message
                    ));
                }
            }
        }
    }

    pub(crate) fn accept_failed(&self) {
        self.accept_paused.fetch_add(1, Ordering::Relaxed);
    }

    /// Times `accept()` on the listening socket failed (EMFILE, ...) and accepting paused.
    pub fn accept_paused(&self) -> u64 {
        self.accept_paused.load(Ordering::Relaxed)
    }

    /// Clients that connected so far.
    pub fn connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// Clients that disconnected so far.
    pub fn disconnected(&self) -> u64 {
        self.disconnected.load(Ordering::Relaxed)
    }

    /// Protocol errors sent (each one ends its client).
    pub fn protocol_errors(&self) -> u64 {
        self.protocol_errors.load(Ordering::Relaxed)
    }

    /// The first protocol error messages.
    pub fn error_messages(&self) -> Vec<String> {
        self.error_messages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

/// Per-output frame counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutputStats {
    /// Output name.
    pub name: String,
    /// Mode size.
    pub size: (i32, i32),
    /// Refresh in millihertz.
    pub refresh_mhz: u32,
    /// Refresh cycles that rendered new content (had damage).
    pub frames_presented: u64,
    /// Refresh cycles the frame clock ran (with or without new content).
    pub refresh_cycles: u64,
    /// Refresh cycles where the timer fired late by a whole interval or more.
    pub missed_cycles: u64,
    /// Refresh cycles whose render failed.
    pub render_errors: u64,
}

/// Counters owned by the compositor itself (the bridge keeps its own).
#[derive(Debug)]
pub struct CompositorStats {
    started: Instant,
    /// One entry per output, in backend order.
    pub outputs: Vec<OutputStats>,
    /// `wl_surface.commit`s applied (after every blocker cleared).
    pub commits: u64,
    /// Surfaces created.
    pub surfaces_created: u64,
    /// Surfaces destroyed.
    pub surfaces_destroyed: u64,
    /// dma-buf imports accepted / refused.
    pub dmabuf_imports: u64,
    /// dma-buf imports the renderer refused.
    pub dmabuf_import_failures: u64,
    /// What the renderers' sync points were at report time.
    pub render_sync: RenderSyncStats,
    /// Process CPU seconds and frames presented (all outputs) at the first applied
    /// commit: the baseline of `cpu_ms_per_frame`, which so leaves out start-up (EGL and
    /// GL initialisation, the first mode set).
    pub cpu_baseline: Option<(f64, u64)>,
}

/// CPU seconds this process has used (all threads; CLOCK_PROCESS_CPUTIME_ID).
pub fn process_cpu_s() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// How the renderers' sync points were reported to the fence bridge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RenderSyncStats {
    /// Already reached (pixman, or a GLES render that was done): no fence needed.
    pub reached: u64,
    /// Exported as a sync_file and handed to the bridge as the render fence.
    pub exported: u64,
    /// Not reached and not exportable (GLES without `EGL_ANDROID_native_fence_sync`, or
    /// the export failed, e.g. out of fds): the sampled buffers were held and the sync
    /// point waited for on a thread.
    pub deferred: u64,
    /// Of those, how many the wait thread saw reached (their buffers were then released).
    pub deferred_done: u64,
    /// Deferred sync points waited for on the event loop because the wait thread was gone.
    pub waited_inline: u64,
}

impl Default for CompositorStats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            outputs: Vec::new(),
            commits: 0,
            surfaces_created: 0,
            surfaces_destroyed: 0,
            dmabuf_imports: 0,
            dmabuf_import_failures: 0,
            render_sync: RenderSyncStats::default(),
            cpu_baseline: None,
        }
    }
}

impl CompositorStats {
    /// Count an applied commit (the first sets the CPU baseline).
    pub fn count_commit(&mut self) {
        self.commits += 1;
        if self.cpu_baseline.is_none() {
            self.cpu_baseline = Some((process_cpu_s(), self.frames_presented_total()));
        }
    }

    /// Time since the compositor started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Frames presented on all outputs together.
    pub fn frames_presented_total(&self) -> u64 {
        self.outputs.iter().map(|o| o.frames_presented).sum()
    }

    /// Frames presented on the busiest output.
    pub fn max_frames_presented(&self) -> u64 {
        self.outputs
            .iter()
            .map(|o| o.frames_presented)
            .max()
            .unwrap_or(0)
    }
}

/// Client-related part of the document.
#[derive(Debug, Clone, Serialize)]
pub struct ClientsReport {
    /// Clients that connected.
    pub connected: u64,
    /// Clients that disconnected.
    pub disconnected: u64,
    /// Times `accept()` failed (EMFILE, ...) and accepting paused for a moment.
    pub accept_paused: u64,
}

/// What the `--command` client did.
#[derive(Debug, Clone, Serialize)]
pub struct ChildReport {
    /// argv.
    pub command: Vec<String>,
    /// Exit code (128 + signal when killed by a signal), if it exited.
    pub exit_code: Option<i32>,
}

/// The `--stats-json` document.
#[derive(Debug, Clone, Serialize)]
pub struct StatsReport {
    /// Backend that ran.
    pub backend: &'static str,
    /// Renderer that ran.
    pub renderer: &'static str,
    /// DRM device advertised for dma-buf, if any.
    pub render_device: Option<String>,
    /// Whether linux-dmabuf was advertised.
    pub dmabuf_advertised: bool,
    /// Seconds the compositor ran.
    pub uptime_s: f64,
    /// CPU seconds the compositor's process used (all its threads, the GL driver's
    /// included; CLOCK_PROCESS_CPUTIME_ID).
    pub cpu_s: f64,
    /// CPU per frame presented (all outputs), in milliseconds, from the first applied
    /// commit on (start-up left out); `None` before a frame followed a commit.
    pub cpu_ms_per_frame: Option<f64>,
    /// Per-output frame counters.
    pub outputs: Vec<OutputStats>,
    /// Sum of frames presented over all outputs.
    pub frames_presented_total: u64,
    /// Commits applied.
    pub commits: u64,
    /// Surfaces created.
    pub surfaces_created: u64,
    /// Surfaces destroyed.
    pub surfaces_destroyed: u64,
    /// dma-buf imports accepted.
    pub dmabuf_imports: u64,
    /// dma-buf imports refused.
    pub dmabuf_import_failures: u64,
    /// How the renderers' sync points were reported to the fence bridge.
    pub render_sync: RenderSyncStats,
    /// Client connections.
    pub clients: ClientsReport,
    /// Protocol errors sent to clients.
    pub protocol_errors_sent: u64,
    /// The first protocol error messages.
    pub protocol_errors: Vec<String>,
    /// Fence bridge statistics (acquire waits, latch latency, releases, fences held).
    pub sync: serde_json::Value,
    /// The client command, if one was run.
    pub child: Option<ChildReport>,
    /// tty backend: release lead time, out-fence delay, direct-scanout vs composited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms: Option<serde_json::Value>,
}

impl StatsReport {
    /// Write the report to `path` as one JSON object.
    pub fn write(&self, path: &Path) -> Result<(), StatsError> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(path, text).map_err(|source| StatsError::Write {
            path: path.display().to_string(),
            source,
        })
    }
}

fn latency_json(l: &LatencySummary) -> serde_json::Value {
    let us = |ns: u64| ns as f64 / 1000.0;
    json!({
        "count": l.count,
        "p50_us": us(l.p50_ns),
        "p99_us": us(l.p99_ns),
        "max_us": us(l.max_ns),
    })
}

/// The `sync` section of the stats document, from the bridge's counters and the
/// process-wide fence counters of the bridge library.
pub fn sync_json(s: &SyncStats, kernel: &syncbridge_bridge::Stats) -> serde_json::Value {
    json!({
        "modes": {
            "implicit_acquire": s.implicit_acquire_mode,
            "implicit_release": s.implicit_release_mode,
            "linux_drm_syncobj_v1": s.syncobj_mode,
            "explicit_sync_v1": s.explicit_sync_v1_mode,
        },
        "commits_seen": s.commits,
        "commits_waited": {
            "implicit": s.commits_waited_implicit,
            "implicit_poll": s.commits_waited_implicit_poll,
            "syncobj": s.commits_waited_syncobj,
            "explicit_sync_v1": s.commits_waited_explicit,
        },
        "commits_fence_already_signalled": s.commits_fence_already_signalled,
        "commits_rejected": s.commits_rejected,
        "latch_latency": latency_json(&s.latch_latency),
        "latch_wake": latency_json(&s.latch_wake),
        "latch_apply": latency_json(&s.latch_apply),
        "latch_apply_state": latency_json(&s.latch_apply_state),
        "latch_apply_bridge_hook": latency_json(&s.latch_apply_bridge_hook),
        "latch_apply_handlers": latency_json(&s.latch_apply_handlers),
        "commit_wait": latency_json(&s.commit_wait),
        "release": {
            "buffers_released": s.buffers_released,
            "reader_reports": s.reader_reports,
            "reader_reports_unknown": s.reader_reports_unknown,
            "implicit_fences_imported": s.fences_imported,
            "implicit_import_failures": s.fence_import_failures,
            "syncobj_points_fenced": s.release_points_fenced,
            "syncobj_points_cpu_signalled": s.release_points_cpu_signalled,
            "syncobj_points_cpu_waited": s.release_points_cpu_waited,
            "explicit_fenced_releases": s.explicit_fenced_releases,
            "explicit_immediate_releases": s.explicit_immediate_releases,
            "fail_closed": {
                "reader_fences_unkept": s.reader_fences_unkept,
                "releases_held_until_signalled": s.releases_held_until_signalled,
                "fence_waits_polled": s.fence_waits_polled,
                "implicit_releases_unheld": s.implicit_releases_unheld,
            },
            "reads_held": s.reads_held,
            "reads_held_ended": s.reads_held_ended,
        },
        "fences_exported": s.fences_exported,
        "fences_imported": s.fences_imported,
        "fences_held": { "now": s.fences_held, "peak": s.fences_held_peak },
        "fds_held": { "now": s.fds_held, "peak": s.fds_held_peak },
        "pending_waits": s.pending_waits,
        "tracked_buffers": s.tracked_buffers,
        "protocol_errors": s.protocol_errors,
        "clients_killed_for_limits": s.clients_killed_for_limits,
        "clients_killed_for_budget": s.clients_killed_for_budget,
        "client_fds_held_peak": s.client_fds_held_peak,
        "buffer_fds_held": { "now": s.buffer_fds_held, "peak": s.buffer_fds_held_peak },
        "buffer_imports_refused_for_budget": s.buffer_imports_refused_for_budget,
        "kernel_ops": {
            "dmabuf_exports": kernel.fences_exported,
            "dmabuf_imports": kernel.fences_imported,
            "sync_file_merges": kernel.fences_merged,
            "timeline_points_exported": kernel.points_exported,
            "timeline_points_imported": kernel.points_imported,
            "timeline_points_cpu_signalled": kernel.points_cpu_signalled,
            "eventfds_registered": kernel.eventfds_registered,
            "live_sync_files": kernel.live_sync_files,
            "live_timelines": kernel.live_timelines,
        },
    })
}
