//! Section 8 (`cargo xtask bench --perf`): where each compositor's CPU per frame goes on
//! VKMS, the kernel's part and user space's, from `perf record -a` samples.
//!
//! `bench-driver --perf` runs each VKMS peer scenario once more under perf
//! (`vkms-WHO-N@perf`, outside the rounds of section 6) with samples on
//! `CLOCK_MONOTONIC`. Here `perf script` reads them back; the compositor's samples
//! (by its command name, the process with the most of them) inside the client's measured
//! window are summed by their period (ns of CPU each stands for), split by whether the
//! sampled address is in the kernel, and divided by the frames the client saw in the
//! window. The `/proc` figure of the same run stands beside it: the two instruments
//! disagree in this VM, and the table shows by how much.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use super::{fmt, ratio, Report};

/// x86-64 kernel addresses start here (the upper half of the canonical address space).
const KERNEL_START: u64 = 0xffff_8000_0000_0000;

/// One compositor's CPU inside the window, from its samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Split {
    pid: u32,
    kernel_ns: u64,
    user_ns: u64,
    samples: u64,
}

/// The split of process `comm` (the pid of that name with the most CPU in the window)
/// over `window` (seconds, perf's clock), from `perf script -F comm,pid,time,period,ip`.
/// perf prints those fields in its own fixed order, `comm pid time: period ip`; a
/// command name may hold spaces, so each line is read from its end.
fn split_of(script: &str, comm: &str, window: (f64, f64)) -> Option<Split> {
    let mut per_pid: HashMap<u32, Split> = HashMap::new();
    for line in script.lines() {
        let mut f = line.split_whitespace().rev();
        let (Some(ip), Some(period), Some(time), Some(pid)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let name: Vec<&str> = f.collect();
        if name.into_iter().rev().collect::<Vec<_>>().join(" ") != comm {
            continue;
        }
        let (Ok(ip), Ok(period), Ok(time), Ok(pid)) = (
            u64::from_str_radix(ip, 16),
            period.parse::<u64>(),
            time.trim_end_matches(':').parse::<f64>(),
            pid.parse::<u32>(),
        ) else {
            continue;
        };
        if time < window.0 || time > window.1 {
            continue;
        }
        let s = per_pid.entry(pid).or_insert(Split {
            pid,
            kernel_ns: 0,
            user_ns: 0,
            samples: 0,
        });
        s.samples += 1;
        if ip >= KERNEL_START {
            s.kernel_ns += period;
        } else {
            s.user_ns += period;
        }
    }
    per_pid
        .into_values()
        .max_by_key(|s| (s.kernel_ns + s.user_ns, s.pid))
}

/// `{"kernel_ms", "user_ms", "total_ms"}` per frame of scenario `name`'s compositor, from
/// `<name>.perf.data` in `dir` and the window in its client's JSON; or `{"error": why}`;
/// `null` for a scenario that is not `vkms-WHO-N@perf` or left no perf file.
pub(super) fn read(dir: &Path, name: &str, client: &Value) -> Value {
    let data = dir.join(format!("{name}.perf.data"));
    if !name.ends_with("@perf") || !data.exists() {
        return Value::Null;
    }
    // The compositor's command name: the peer's for its scenarios, else syncbridge's.
    let comm = if name.starts_with("vkms-sway-") {
        "sway"
    } else {
        "syncbridge"
    };
    let (Some(start), Some(end)) = (
        client["window_start_ns"].as_u64(),
        client["window_end_ns"].as_u64(),
    ) else {
        return json!({"error": "the client's JSON has no window (an older bench-client)"});
    };
    // CLOCK_MONOTONIC is 1: perf recorded on it; another presentation clock would not match.
    if client["window_clock"].as_u64() != Some(1) {
        return json!({"error": "the client's window is not on CLOCK_MONOTONIC"});
    }
    let window = (start as f64 / 1e9, end as f64 / 1e9);
    let frames = client["output_frames_in_window"].as_u64().unwrap_or(0);
    if frames == 0 {
        return json!({"error": "no frames in the window"});
    }
    let out = match Command::new("perf")
        .args(["script", "-F", "comm,pid,time,period,ip", "-i"])
        .arg(&data)
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            return json!({"error": format!("perf script failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""))})
        }
        Err(e) => {
            return json!({"error": format!("perf not runnable on the host ({e}): Debian package linux-perf")})
        }
    };
    let script = String::from_utf8_lossy(&out.stdout);
    let Some(s) = split_of(&script, comm, window) else {
        return json!({"error": format!("no samples of {comm} in the client's window")});
    };
    let per = |ns: u64| ns as f64 / 1e6 / frames as f64;
    json!({
        "pid": s.pid,
        "samples": s.samples,
        "kernel_ms": per(s.kernel_ns),
        "user_ms": per(s.user_ns),
        "total_ms": per(s.kernel_ns + s.user_ns),
    })
}

impl Report {
    /// The `@perf` scenarios' client counts that ran.
    fn perf_client_counts(&self) -> Vec<u64> {
        self.client_counts_of("vkms-syncbridge-", "@perf")
    }

    fn perf_scenario(&self, who: &str, n: u64) -> Option<&super::Scenario> {
        let name = format!("vkms-{who}-{n}@perf");
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// `figures.cpu_split_by_perf`: per client count, each side's split and `/proc`
    /// figure of the same run.
    pub(super) fn perf_figures(&self) -> Value {
        self.perf_client_counts()
            .into_iter()
            .map(|n| {
                let side = |who: &str| {
                    self.perf_scenario(who, n).map_or(Value::Null, |s| {
                        json!({
                            "exit": s.code,
                            "perf": s.perf,
                            "proc_cpu_ms_per_frame": s.client["cpu_ms_per_frame"],
                        })
                    })
                };
                let (ours, peer) = (side("syncbridge"), side("sway"));
                let total = |v: &Value| v["perf"]["total_ms"].as_f64();
                json!({
                    "clients": n,
                    "ratio_total": ratio(total(&ours), total(&peer)),
                    "syncbridge": ours,
                    "sway": peer,
                })
            })
            .collect()
    }

    /// Section 8 of the table.
    pub(super) fn perf_table(&self, t: &mut String) {
        let _ = writeln!(
            t,
            "\n[8] where the CPU per frame goes on VKMS, by perf (each VKMS scenario of [6] once more under `perf record -a`, samples of the compositor in the client's window; kernel = the sampled address is in the kernel)"
        );
        let counts = self.perf_client_counts();
        if counts.is_empty() {
            let _ = writeln!(
                t,
                "    not run (`cargo xtask bench --perf` runs it; it needs perf, Debian package linux-perf)"
            );
            return;
        }
        let _ = writeln!(
            t,
            "    clients | syncbridge kernel + user = total |  sway kernel + user = total | ratio | same runs by /proc: sb  sway ratio"
        );
        for n in counts {
            let cell = |who: &str| -> (String, Option<f64>, Option<f64>) {
                let Some(s) = self.perf_scenario(who, n) else {
                    return ("not run".into(), None, None);
                };
                let proc_ms = s.client["cpu_ms_per_frame"].as_f64();
                if s.code != 0 {
                    return (format!("failed: exit {}", s.code), None, proc_ms);
                }
                let p = &s.perf;
                match (
                    p["kernel_ms"].as_f64(),
                    p["user_ms"].as_f64(),
                    p["total_ms"].as_f64(),
                ) {
                    (Some(k), Some(u), Some(tot)) => (
                        format!(
                            "{} + {} = {}",
                            fmt(Some(k), 2),
                            fmt(Some(u), 2),
                            fmt(Some(tot), 2)
                        ),
                        Some(tot),
                        proc_ms,
                    ),
                    _ => (
                        p["error"].as_str().unwrap_or("no perf data").to_string(),
                        None,
                        proc_ms,
                    ),
                }
            };
            let (sb, sb_total, sb_proc) = cell("syncbridge");
            let (sw, sw_total, sw_proc) = cell("sway");
            let _ = writeln!(
                t,
                "    {n:>7} | {sb:>32} | {sw:>27} | {:>5} | {:>22} {:>5} {:>5}",
                fmt(ratio(sb_total, sw_total), 2),
                fmt(sb_proc, 2),
                fmt(sw_proc, 2),
                fmt(ratio(sb_proc, sw_proc), 2),
            );
        }
        let _ = writeln!(
            t,
            "    (ms per frame the client saw in its window; one run each, so compare within a row; perf and /proc count the same run differently in this VM)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_busiest_process_of_the_name_inside_the_window_is_split_by_address() {
        let script = "\
     syncbridge   300    10.000100:     333444  ffffffffb76e5fff
     syncbridge   300    10.500000:     333444      5594bf95c21f
     syncbridge   300    10.600000:     333000      5594bf95c21f
     syncbridge   300    12.000000:     333444      5594bf95c21f
     syncbridge   299    10.600000:     333444      5594bf95c21f
   bench-client   301    10.600000:     333444      5594bf95c21f
  kworker/u8:2-ev  55    10.600000:     333444  ffffffffb76e5fff
garbage line
";
        let s = split_of(script, "syncbridge", (10.0, 11.0)).expect("samples in the window");
        assert_eq!(s.pid, 300, "the pid with the most CPU in the window");
        assert_eq!(s.kernel_ns, 333_444);
        assert_eq!(
            s.user_ns,
            333_444 + 333_000,
            "periods summed, the sample at 12 s left out"
        );
        assert_eq!(s.samples, 3);
        let k = split_of(script, "kworker/u8:2-ev", (10.0, 11.0)).expect("kworker");
        assert_eq!((k.kernel_ns, k.user_ns), (333_444, 0));
        assert_eq!(split_of(script, "sway", (10.0, 11.0)), None);
        assert_eq!(split_of(script, "syncbridge", (20.0, 21.0)), None);
    }

    #[test]
    fn section_8_says_how_to_run_it_or_lists_each_side_with_the_proc_figure() {
        use super::super::test_fixtures::{report, scenario};
        let none = report(vec![scenario("vkms-syncbridge-1", 0, json!({}), json!({}))]);
        let mut t = String::new();
        none.perf_table(&mut t);
        assert!(t.contains("not run (`cargo xtask bench --perf`"), "{t}");

        let mut ours = scenario(
            "vkms-syncbridge-1@perf",
            0,
            json!({"cpu_ms_per_frame": 6.0}),
            json!({}),
        );
        ours.perf = json!({"kernel_ms": 1.5, "user_ms": 2.5, "total_ms": 4.0});
        let mut peer = scenario(
            "vkms-sway-1@perf",
            0,
            json!({"cpu_ms_per_frame": 4.0}),
            json!({}),
        );
        peer.perf = json!({"error": "no samples of sway in the client's window"});
        let r = report(vec![ours, peer]);
        let mut t = String::new();
        r.perf_table(&mut t);
        assert!(t.contains("1.50 + 2.50 = 4.00"), "{t}");
        assert!(t.contains("no samples of sway"), "{t}");
        assert!(
            t.contains("6.00  4.00  1.50"),
            "/proc figures and their ratio: {t}"
        );
        let f = r.perf_figures();
        assert_eq!(f[0]["clients"], 1);
        assert_eq!(f[0]["syncbridge"]["perf"]["user_ms"], 2.5);
        assert_eq!(
            f[0]["ratio_total"],
            Value::Null,
            "no ratio without both totals"
        );
    }
}
