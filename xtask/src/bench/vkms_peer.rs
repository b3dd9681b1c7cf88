//! The VKMS peer comparison: syncbridge's tty backend against sway 1.7 (wlroots, pixman) on
//! the same VKMS card in the same boot, the same frame-callback-driven shm client, both
//! with presentation feedback from the page flip (`vkms-syncbridge-N`, `vkms-sway-N`).
//!
//! `bench-driver` runs both compositors in several rounds (`...-N@rK` from the second),
//! one after the other within each round: the VM's speed drifts within a boot, so one run
//! each can differ by more than what is compared. Every figure here is the median over
//! the rounds that completed, and the ratio is that of the medians.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{fmt, ratio, Report};

/// Both compositors' completed rounds for one client count.
struct Pair<'a> {
    ours: Vec<&'a Value>,
    peer: Vec<&'a Value>,
}

/// The median of the values `f` finds in `rounds` (`None`: none found).
fn median(rounds: &[&Value], f: impl Fn(&Value) -> Option<f64>) -> Option<f64> {
    let mut v: Vec<f64> = rounds.iter().filter_map(|c| f(c)).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn cpu_of(c: &Value) -> Option<f64> {
    c["cpu_ms_per_frame"].as_f64()
}

impl Pair<'_> {
    fn summary(&self, key: &str, q: &str) -> (Option<f64>, Option<f64>) {
        let f = |c: &Value| c[key][q].as_f64();
        (median(&self.ours, f), median(&self.peer, f))
    }

    fn cpu(&self) -> (Option<f64>, Option<f64>) {
        (median(&self.ours, cpu_of), median(&self.peer, cpu_of))
    }
}

/// One compositor's side of the figures: medians over its rounds, and each round's CPU.
fn side_json(rounds: &[&Value]) -> Value {
    let q = |key: &'static str, q: &'static str| median(rounds, move |c| c[key][q].as_f64());
    let split = |key: &'static str| median(rounds, move |c| c["cpu_split_per_frame"][key].as_f64());
    json!({
        "rounds": rounds.len(),
        "commit_to_present_ms": { "p50": q("commit_to_present_ms", "p50"), "p99": q("commit_to_present_ms", "p99") },
        "present_to_present_ms": { "p50": q("present_to_present_ms", "p50") },
        "cpu_ms_per_frame": median(rounds, cpu_of),
        "cpu_user_ms_per_frame": split("user_ms"),
        "cpu_system_ms_per_frame": split("system_ms"),
        "cpu_ms_per_frame_rounds": rounds.iter().map(|c| c["cpu_ms_per_frame"].clone()).collect::<Vec<_>>(),
        "presented_rounds": rounds.iter().map(|c| c["presented"].clone()).collect::<Vec<_>>(),
        "discarded_rounds": rounds.iter().map(|c| c["discarded"].clone()).collect::<Vec<_>>(),
    })
}

impl Report {
    fn vkms_client_counts(&self) -> Vec<u64> {
        self.client_counts_of("vkms-syncbridge-", "")
    }

    /// Every round of `vkms-WHO-N` that ran (`vkms-WHO-N`, `vkms-WHO-N@r2`, ...),
    /// completed or not.
    fn vkms_rounds_run(&self, who: &str, n: u64) -> Vec<&super::Scenario> {
        let base = format!("vkms-{who}-{n}");
        let round = format!("{base}@r");
        self.scenarios
            .iter()
            .filter(|s| s.name == base || s.name.starts_with(&round))
            .collect()
    }

    /// The rounds of `vkms-WHO-N` that completed.
    fn vkms_rounds_completed(&self, who: &str, n: u64) -> Vec<&super::Scenario> {
        self.vkms_rounds_run(who, n)
            .into_iter()
            .filter(|s| s.code == 0)
            .collect()
    }

    /// The completed rounds of `vkms-WHO-N`: their client figures.
    fn vkms_rounds(&self, who: &str, n: u64) -> Vec<&Value> {
        self.vkms_rounds_completed(who, n)
            .into_iter()
            .map(|s| &s.client)
            .collect()
    }

    /// syncbridge's own view of late latching in the completed rounds of `n` clients
    /// (its stats' `kms.late_latch_per_output`, first output): missed of the deferred
    /// cycles that flipped, how many of those misses had the commit in before the vblank,
    /// and the margin it learned. `None` when no round has these stats.
    fn vkms_late_latch_line(&self, n: u64) -> Option<String> {
        let rounds: Vec<&Value> = self
            .vkms_rounds_completed("syncbridge", n)
            .into_iter()
            .map(|s| &s.stats["kms"]["late_latch_per_output"][0])
            .filter(|l| l["made_vblanks"].is_u64())
            .collect();
        if rounds.is_empty() {
            return None;
        }
        let per_round = |f: &dyn Fn(&Value) -> String| {
            rounds.iter().map(|l| f(l)).collect::<Vec<_>>().join(" ")
        };
        let u = |l: &Value, key: &str| super::fmt_u(l[key].as_u64());
        Some(format!(
            "      syncbridge {n} client(s), late latching per round: missed vblanks {} of {} deferred cycles that flipped; of those in time (commit in before the vblank) {}; learned margin {} us",
            per_round(&|l| u(l, "missed_vblanks")),
            per_round(&|l| super::fmt_u(
                l["made_vblanks"].as_u64().zip(l["missed_vblanks"].as_u64()).map(|(a, b)| a + b)
            )),
            per_round(&|l| u(l, "missed_with_commit_in_time")),
            per_round(&|l| u(l, "margin_us")),
        ))
    }

    fn vkms_pair(&self, n: u64) -> Pair<'_> {
        Pair {
            ours: self.vkms_rounds("syncbridge", n),
            peer: self.vkms_rounds("sway", n),
        }
    }

    pub(super) fn vkms_peer_figures(&self) -> Value {
        self.vkms_client_counts()
            .into_iter()
            .map(|n| {
                let p = self.vkms_pair(n);
                let (c2p_ours, c2p_peer) = p.summary("commit_to_present_ms", "p50");
                let (p2p_ours, p2p_peer) = p.summary("present_to_present_ms", "p50");
                let (cpu_ours, cpu_peer) = p.cpu();
                json!({
                    "clients": n,
                    "syncbridge": side_json(&p.ours),
                    "sway": side_json(&p.peer),
                    "ratio_ours_over_sway": {
                        "commit_to_present_p50": ratio(c2p_ours, c2p_peer),
                        "present_to_present_p50": ratio(p2p_ours, p2p_peer),
                        "cpu_per_frame": ratio(cpu_ours, cpu_peer),
                    },
                })
            })
            .collect()
    }

    pub(super) fn vkms_peer_table(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "\n[6] on VKMS (60 Hz), syncbridge tty against {} (wlroots DRM, pixman, as user nobody under seatd); presentation feedback from the page flip, same shm client, 128x128, same scene (sway floats the windows where syncbridge cascades them)",
            self.env["sway"].as_str().unwrap_or("sway")
        );
        let counts = self.vkms_client_counts();
        if counts.is_empty() {
            let _ = writeln!(
                t,
                "    not measured (no VKMS, or no tty backend in this build)"
            );
            return;
        }
        let _ = writeln!(
            t,
            "    {:>7} | {:>15} {:>15} {:>6} | {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6}",
            "clients",
            "sb c2p p50/p99",
            "sway c2p p50/99",
            "ratio",
            "sb p2p",
            "sway",
            "ratio",
            "sb cpu",
            "sway",
            "ratio"
        );
        for n in counts {
            let p = self.vkms_pair(n);
            let (c50, s50) = p.summary("commit_to_present_ms", "p50");
            let (c99, s99) = p.summary("commit_to_present_ms", "p99");
            let (cp, sp) = p.summary("present_to_present_ms", "p50");
            let (cc, sc) = p.cpu();
            let _ = writeln!(
                t,
                "    {:>7} | {:>15} {:>15} {:>6} | {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6}",
                n,
                format!("{} / {}", fmt(c50, 1), fmt(c99, 1)),
                format!("{} / {}", fmt(s50, 1), fmt(s99, 1)),
                fmt(ratio(c50, s50), 2),
                fmt(cp, 2),
                fmt(sp, 2),
                fmt(ratio(cp, sp), 2),
                fmt(cc, 2),
                fmt(sc, 2),
                fmt(ratio(cc, sc), 2),
            );
            for (who, rounds) in [("syncbridge", &p.ours), ("sway", &p.peer)] {
                let run = self.vkms_rounds_run(who, n).len();
                if rounds.is_empty() {
                    let _ = writeln!(
                        t,
                        "      {who} {n} client(s): did not complete (see raw/vkms-{who}-{n}*.log)"
                    );
                    continue;
                }
                let list = |key: &str| {
                    rounds
                        .iter()
                        .map(|c| super::fmt_u(c[key].as_u64()))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let cpu_rounds = rounds
                    .iter()
                    .map(|c| fmt(cpu_of(c), 2))
                    .collect::<Vec<_>>()
                    .join(" ");
                let split = |key: &'static str| {
                    median(rounds, move |c| c["cpu_split_per_frame"][key].as_f64())
                };
                let _ = writeln!(
                    t,
                    "      {who} {n} client(s), {} of {run} round(s): cpu {cpu_rounds} (user {} + system {} ms, medians); presented {}; discarded {}; missed refresh cycles {}",
                    rounds.len(),
                    fmt(split("user_ms"), 2),
                    fmt(split("system_ms"), 2),
                    list("presented"),
                    list("discarded"),
                    list("missed_refreshes"),
                );
            }
            if let Some(line) = self.vkms_late_latch_line(n) {
                let _ = writeln!(t, "{line}");
            }
        }
        let _ = writeln!(t, "    (ms, medians over the rounds, which alternate the two compositors; ratio = of the medians; c2p = commit -> presented, p2p = one client's consecutive presents, cpu = compositor CPU per distinct presentation time)");
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_fixtures, Scenario};
    use super::*;

    fn round(name: &str, code: i32, late_latch: Value) -> Scenario {
        test_fixtures::scenario(
            name,
            code,
            json!({"presented": 230}),
            json!({"kms": {"late_latch_per_output": [late_latch]}}),
        )
    }

    #[test]
    fn the_late_latch_line_lists_each_completed_rounds_misses_and_margin() {
        let r = test_fixtures::report(vec![
            round(
                "vkms-syncbridge-1",
                0,
                json!({"made_vblanks": 265, "missed_vblanks": 8, "missed_with_commit_in_time": 3, "margin_us": 2490}),
            ),
            // A failed round does not count.
            round(
                "vkms-syncbridge-1@r2",
                1,
                json!({"made_vblanks": 1, "missed_vblanks": 99, "missed_with_commit_in_time": 0, "margin_us": 1500}),
            ),
            // A stats file from before the split: its missing figures are shown as such.
            round(
                "vkms-syncbridge-1@r3",
                0,
                json!({"made_vblanks": 270, "missed_vblanks": 0}),
            ),
        ]);
        let line = r.vkms_late_latch_line(1).expect("two completed rounds");
        assert!(
            line.contains("missed vblanks 8 0 of 273 270 deferred"),
            "{line}"
        );
        assert!(
            line.contains("in time (commit in before the vblank) 3 -;"),
            "{line}"
        );
        assert!(line.contains("learned margin 2490 - us"), "{line}");
        assert_eq!(r.vkms_late_latch_line(8), None, "no such rounds");
    }
}
