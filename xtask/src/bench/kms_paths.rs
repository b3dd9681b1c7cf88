//! Presentation per plane path on VKMS (issue 14): syncbridge's tty backend with one
//! frame-callback-driven client per scenario, each taking a different path to the screen:
//! a fullscreen vgem dma-buf of the mode's size scanned out on the primary plane
//! (`plane-fullscreen`), a 256x256 windowed vgem dma-buf that nothing overlaps on an overlay
//! plane (`plane-overlay`), and a 256x256 windowed shm client composited (`plane-composited`).
//!
//! From the client: commit -> present and present -> present (presentation feedback from
//! the page flip) and the feedback flags it saw. From syncbridge's `--stats-json`
//! (`kms`): how many commits used an overlay plane or scanned a client buffer out on the
//! primary plane, and each CRTC's out-fence delay after the flip
//! (`kms.out_fence_delay_per_crtc`).

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{fmt, fmt_u, Report, Scenario};

/// The scenarios, in table order, with the plane path each one measures.
const PATHS: [(&str, &str); 3] = [
    ("plane-fullscreen", "primary plane scanout"),
    ("plane-overlay", "overlay plane"),
    ("plane-composited", "composited"),
];

/// One CRTC's out-fence delay (an entry of `kms.out_fence_delay_per_crtc`).
#[derive(Debug, Clone, PartialEq)]
struct CrtcDelay {
    output: String,
    crtc: Option<u64>,
    /// Figures over the CRTC's sliding window (its last `window_size` flips), us.
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    max_us: Option<f64>,
    /// Samples in the window, and the window's size.
    window_count: Option<u64>,
    window_size: Option<u64>,
    /// Delays measured since start-up.
    samples_total: Option<u64>,
    late_at_flip_event: Option<u64>,
    dropped_unmeasured: Option<u64>,
    release_mode: Option<String>,
}

impl CrtcDelay {
    fn from_json(v: &Value) -> CrtcDelay {
        let w = &v["window"];
        CrtcDelay {
            output: v["output"].as_str().unwrap_or("?").to_string(),
            crtc: v["crtc"].as_u64(),
            p50_us: w["p50_us"].as_f64(),
            p99_us: w["p99_us"].as_f64(),
            max_us: w["max_us"].as_f64(),
            window_count: w["count"].as_u64(),
            window_size: w["size"].as_u64(),
            samples_total: v["samples_total"].as_u64(),
            late_at_flip_event: v["late_at_flip_event"].as_u64(),
            dropped_unmeasured: v["dropped_unmeasured"].as_u64(),
            release_mode: v["release"]["release_mode"].as_str().map(String::from),
        }
    }

    fn json(&self) -> Value {
        json!({
            "output": self.output,
            "crtc": self.crtc,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
            "window_count": self.window_count,
            "window_size": self.window_size,
            "samples_total": self.samples_total,
            "late_at_flip_event": self.late_at_flip_event,
            "dropped_unmeasured": self.dropped_unmeasured,
            "release_mode": self.release_mode,
        })
    }

    /// The table line under a scenario's row.
    fn line(&self) -> String {
        format!(
            "      {} crtc {} out-fence delay: p50 {} us, p99 {} us, max {} us (last {} flips; {} measured in all, {} late at their flip event, {} dropped)",
            self.output,
            fmt_u(self.crtc),
            fmt(self.p50_us, 1),
            fmt(self.p99_us, 1),
            fmt(self.max_us, 1),
            fmt_u(self.window_count),
            fmt_u(self.samples_total),
            fmt_u(self.late_at_flip_event),
            fmt_u(self.dropped_unmeasured),
        )
    }
}

/// One plane-path scenario's figures.
#[derive(Debug, Clone, PartialEq)]
struct PathRow {
    name: &'static str,
    path: &'static str,
    ok: bool,
    size: Option<String>,
    c2p_p50_ms: Option<f64>,
    c2p_p99_ms: Option<f64>,
    c2p_p50_frames: Option<f64>,
    p2p_p50_ms: Option<f64>,
    p2p_p99_ms: Option<f64>,
    refresh_ns: Option<u64>,
    presented: Option<u64>,
    discarded: Option<u64>,
    /// Flag-set name -> presented commits in the window that carried it.
    flags: Vec<(String, u64)>,
    overlay_frames: Option<u64>,
    direct_frames: Option<u64>,
    composited_frames: Option<u64>,
    crtcs: Vec<CrtcDelay>,
}

impl PathRow {
    fn from_scenario(name: &'static str, path: &'static str, s: &Scenario) -> PathRow {
        let c = &s.client;
        let kms = &s.stats["kms"];
        let flags = c["presentation_flags"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let crtcs = kms["out_fence_delay_per_crtc"]
            .as_array()
            .map(|a| a.iter().map(CrtcDelay::from_json).collect())
            .unwrap_or_default();
        PathRow {
            name,
            path,
            ok: s.code == 0,
            size: c["size"].as_str().map(String::from),
            c2p_p50_ms: c["commit_to_present_ms"]["p50"].as_f64(),
            c2p_p99_ms: c["commit_to_present_ms"]["p99"].as_f64(),
            c2p_p50_frames: c["commit_to_present_frames"]["p50"].as_f64(),
            p2p_p50_ms: c["present_to_present_ms"]["p50"].as_f64(),
            p2p_p99_ms: c["present_to_present_ms"]["p99"].as_f64(),
            refresh_ns: c["refresh_ns"].as_u64(),
            presented: c["presented"].as_u64(),
            discarded: c["discarded"].as_u64(),
            flags,
            overlay_frames: kms["overlay_frames"].as_u64(),
            direct_frames: kms["direct_scanout_frames"].as_u64(),
            composited_frames: kms["composited_frames"].as_u64(),
            crtcs,
        }
    }

    /// `presentation_flags` as a JSON object (name -> count).
    fn flags_json(&self) -> Value {
        self.flags
            .iter()
            .map(|(k, n)| (k.clone(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    fn json(&self) -> Value {
        json!({
            "scenario": self.name,
            "path": self.path,
            "completed": self.ok,
            "size": self.size,
            "commit_to_present_ms_p50": self.c2p_p50_ms,
            "commit_to_present_ms_p99": self.c2p_p99_ms,
            "commit_to_present_frames_p50": self.c2p_p50_frames,
            "present_to_present_ms_p50": self.p2p_p50_ms,
            "present_to_present_ms_p99": self.p2p_p99_ms,
            "refresh_ns": self.refresh_ns,
            "presented": self.presented,
            "discarded": self.discarded,
            "presentation_flags": self.flags_json(),
            "overlay_frames": self.overlay_frames,
            "direct_scanout_frames": self.direct_frames,
            "composited_frames": self.composited_frames,
            "out_fence_delay_per_crtc": self.crtcs.iter().map(CrtcDelay::json).collect::<Vec<_>>(),
        })
    }

    /// The flags seen, "name xN" each, most frequent first; "-" when none came.
    fn flags_text(&self) -> String {
        let mut v = self.flags.clone();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if v.is_empty() {
            return "-".into();
        }
        v.iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The scenario's row (and its CRTC lines) in the table.
    fn lines(&self) -> Vec<String> {
        if !self.ok {
            return vec![format!(
                "    {:<31} | did not complete (see raw/{}.log)",
                self.path, self.name
            )];
        }
        let mut v = vec![format!(
            "    {:<21} {:>9} | {:>13} {:>6} | {:>7} | {:>9} {:>9} | {:>7} {:>7} | {}",
            self.path,
            self.size.as_deref().unwrap_or("-"),
            format!("{} / {}", fmt(self.c2p_p50_ms, 1), fmt(self.c2p_p99_ms, 1)),
            fmt(self.c2p_p50_frames, 2),
            fmt(self.p2p_p50_ms, 2),
            fmt_u(self.presented),
            fmt_u(self.discarded),
            fmt_u(self.overlay_frames),
            fmt_u(self.direct_frames),
            self.flags_text(),
        )];
        if self.crtcs.is_empty() {
            v.push("      out-fence delay: no CRTC in the stats".into());
        }
        v.extend(self.crtcs.iter().map(CrtcDelay::line));
        v
    }
}

impl Report {
    /// The plane-path scenarios the driver ran (completed or not), in table order.
    fn kms_path_rows(&self) -> Vec<PathRow> {
        PATHS
            .iter()
            .filter_map(|&(name, path)| {
                let s = self
                    .get(name)
                    .or_else(|| self.scenarios.iter().find(|s| s.name == name))?;
                Some(PathRow::from_scenario(name, path, s))
            })
            .collect()
    }

    /// `figures.presentation_on_vkms_by_plane`: one object per scenario that ran.
    pub(super) fn kms_path_figures(&self) -> Value {
        self.kms_path_rows().iter().map(PathRow::json).collect()
    }

    /// Section 7 of the table.
    pub(super) fn kms_path_table(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "\n[7] presentation on VKMS by plane path (tty backend, one client each, feedback from the page flip)"
        );
        let rows = self.kms_path_rows();
        if rows.is_empty() {
            let _ = writeln!(
                t,
                "    not measured (no VKMS, or no tty backend in this build)"
            );
            return;
        }
        let _ = writeln!(
            t,
            "    {:<21} {:>9} | {:>13} {:>6} | {:>7} | {:>9} {:>9} | {:>7} {:>7} | flags seen (presented commits)",
            "path",
            "size",
            "c2p p50/p99",
            "c2p fr",
            "p2p p50",
            "presented",
            "discarded",
            "overlay",
            "direct",
        );
        for line in rows.iter().flat_map(PathRow::lines) {
            let _ = writeln!(t, "{line}");
        }
        let _ = writeln!(t, "    (ms; c2p = commit -> presented, c2p fr = the same in refresh cycles, p2p = consecutive presents;");
        let _ = writeln!(t, "     overlay / direct = the compositor's commits with a client buffer on an overlay / the primary plane, whole run incl. warm-up;");
        let _ = writeln!(t, "     out-fence delay = fence signal - flip, per CRTC over its last flips; flags = wp_presentation_feedback kinds)");
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_fixtures::{report, scenario};
    use super::*;

    fn fullscreen() -> Scenario {
        scenario(
            "plane-fullscreen",
            0,
            json!({
                "size": "1024x768",
                "presented": 238, "discarded": 2, "refresh_ns": 16_666_666,
                "commit_to_present_ms": {"p50": 27.24, "p99": 34.51},
                "commit_to_present_frames": {"p50": 1.63, "p99": 2.07},
                "present_to_present_ms": {"p50": 16.67, "p99": 33.33},
                "presentation_flags": {"vsync|hw_clock|hw_completion|zero_copy": 236, "vsync|hw_clock|hw_completion": 2},
            }),
            json!({"kms": {
                "overlay_frames": 0, "direct_scanout_frames": 301, "composited_frames": 4,
                "out_fence_delay_per_crtc": [{
                    "output": "Virtual-1", "crtc": 42,
                    "release": {"release_mode": "early"},
                    "window": {"size": 120, "count": 120, "min_us": 0.2, "p50_us": 0.5, "p99_us": 1.23, "max_us": 3.0},
                    "samples_total": 305, "late_at_flip_event": 0, "dropped_unmeasured": 0,
                }],
            }}),
        )
    }

    #[test]
    fn absent_scenarios_are_not_measured() {
        let r = report(vec![]);
        let mut t = String::new();
        r.kms_path_table(&mut t);
        assert!(t.contains("[7] presentation on VKMS by plane path"), "{t}");
        assert!(t.contains("not measured (no VKMS"), "{t}");
        assert_eq!(r.kms_path_figures(), json!([]));
    }

    #[test]
    fn rows_carry_the_client_and_compositor_figures() {
        let r = report(vec![
            fullscreen(),
            scenario("plane-overlay", 1, Value::Null, Value::Null),
        ]);
        let mut t = String::new();
        r.kms_path_table(&mut t);
        let row = t
            .lines()
            .find(|l| l.trim_start().starts_with("primary plane scanout"))
            .unwrap_or_else(|| panic!("no fullscreen row in\n{t}"));
        for want in [
            "1024x768",
            "27.2 / 34.5",
            "1.63",
            "16.67",
            "238",
            "301",
            "vsync|hw_clock|hw_completion|zero_copy x236, vsync|hw_clock|hw_completion x2",
        ] {
            assert!(row.contains(want), "{want:?} not in {row:?}");
        }
        assert!(
            t.contains("Virtual-1 crtc 42 out-fence delay: p50 0.5 us, p99 1.2 us, max 3.0 us (last 120 flips; 305 measured in all"),
            "{t}"
        );
        assert!(
            t.contains(
                "overlay plane                   | did not complete (see raw/plane-overlay.log)"
            ),
            "{t}"
        );
        assert!(
            !t.lines().any(|l| l.trim_start().starts_with("composited")),
            "absent scenario shown:\n{t}"
        );

        let f = r.kms_path_figures();
        let full = &f[0];
        assert_eq!(full["scenario"], "plane-fullscreen");
        assert_eq!(full["commit_to_present_ms_p50"], 27.24);
        assert_eq!(full["direct_scanout_frames"], 301);
        assert_eq!(full["overlay_frames"], 0);
        assert_eq!(
            full["presentation_flags"]["vsync|hw_clock|hw_completion|zero_copy"],
            236
        );
        assert_eq!(full["out_fence_delay_per_crtc"][0]["p50_us"], 0.5);
        assert_eq!(full["out_fence_delay_per_crtc"][0]["samples_total"], 305);
        assert_eq!(f[1]["completed"], false);
        assert_eq!(f.as_array().map(Vec::len), Some(2));
    }
}
