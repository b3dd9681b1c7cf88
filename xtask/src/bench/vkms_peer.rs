//! The VKMS peer comparison: syncbridge's tty backend against sway 1.7 (wlroots, pixman) on
//! the same VKMS card in the same boot, the same frame-callback-driven shm client, both
//! with presentation feedback from the page flip (`vkms-syncbridge-N`, `vkms-sway-N`).

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{fmt, ratio, Report};

/// One figure of both compositors for one client count.
struct Pair<'a> {
    ours: Option<&'a Value>,
    peer: Option<&'a Value>,
}

impl Pair<'_> {
    fn summary(&self, key: &str, q: &str) -> (Option<f64>, Option<f64>) {
        let f = |c: Option<&Value>| c.and_then(|c| c[key][q].as_f64());
        (f(self.ours), f(self.peer))
    }

    fn cpu(&self) -> (Option<f64>, Option<f64>) {
        let f = |c: Option<&Value>| c.and_then(|c| c["cpu_ms_per_frame"].as_f64());
        (f(self.ours), f(self.peer))
    }
}

impl Report {
    fn vkms_client_counts(&self) -> Vec<u64> {
        self.client_counts_of("vkms-syncbridge-")
    }

    fn vkms_pair(&self, n: u64) -> Pair<'_> {
        let ok = |name: String| self.get(&name).filter(|s| s.code == 0).map(|s| &s.client);
        Pair {
            ours: ok(format!("vkms-syncbridge-{n}")),
            peer: ok(format!("vkms-sway-{n}")),
        }
    }

    pub(super) fn vkms_peer_figures(&self) -> Value {
        self.vkms_client_counts()
            .into_iter()
            .map(|n| {
                let p = self.vkms_pair(n);
                let side = |c: Option<&Value>| {
                    let c = c.unwrap_or(&Value::Null);
                    json!({
                        "commit_to_present_ms": c["commit_to_present_ms"],
                        "present_to_present_ms": c["present_to_present_ms"],
                        "cpu_ms_per_frame": c["cpu_ms_per_frame"],
                        "presented": c["presented"],
                        "discarded": c["discarded"],
                    })
                };
                let (c2p_ours, c2p_peer) = p.summary("commit_to_present_ms", "p50");
                let (p2p_ours, p2p_peer) = p.summary("present_to_present_ms", "p50");
                let (cpu_ours, cpu_peer) = p.cpu();
                json!({
                    "clients": n,
                    "syncbridge": side(p.ours),
                    "sway": side(p.peer),
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
            for (who, c) in [("syncbridge", p.ours), ("sway", p.peer)] {
                match c {
                    Some(c) => {
                        let _ = writeln!(
                            t,
                            "      {who} {n} client(s): {} presented, {} discarded, {} missed refresh cycles",
                            super::fmt_u(c["presented"].as_u64()),
                            super::fmt_u(c["discarded"].as_u64()),
                            super::fmt_u(c["missed_refreshes"].as_u64()),
                        );
                    }
                    None => {
                        let _ = writeln!(
                            t,
                            "      {who} {n} client(s): did not complete (see raw/vkms-{who}-{n}.log)"
                        );
                    }
                }
            }
        }
        let _ = writeln!(t, "    (ms; c2p = commit -> presented, p2p = one client's consecutive presents, cpu = compositor CPU per distinct presentation time)");
    }
}
