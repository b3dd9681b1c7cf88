//! `cargo xtask bench`: the benchmarks of issue 7, in one VM boot.
//!
//! Builds `syncbridge`, `bench-client`, `bench-driver`, `latch-floor` and the library's
//! `minimal_compositor` example (release by default), boots the test VM once and runs
//! `bench-driver` there. The driver leaves raw files per scenario
//! (client JSON, syncbridge `--stats-json`, compositor log) in the scratch directory; this
//! module reads them on the host, prints the table, and writes into `target/bench/`:
//! `bench.json` (every figure plus the environment), one SVG chart per figure, and
//! `raw/` (the driver's files as they were). Nothing here asserts on timing: the bench
//! reports what it measured, and fails only when a scenario did not run.
//!
//! `--smoke` runs a tiny version (seconds inside the VM); `cargo xtask test` runs that
//! smoke driver in its own VM boot so the bench cannot rot.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::cmd::{target_dir, workspace_root};
use crate::install;
use crate::vm::{self, VmArgs};

mod kms_paths;
mod library_floor;
mod perf_split;
#[cfg(test)]
mod test_fixtures;
mod vkms_peer;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A tiny version (a few seconds per scenario), as `cargo xtask test` runs it.
    #[arg(long)]
    pub smoke: bool,
    /// Use debug builds (default: release, which the CPU figures should come from).
    #[arg(long)]
    pub debug: bool,
    /// Only scenarios whose name contains this (e.g. `latch`, `frames-weston`).
    #[arg(long)]
    pub only: Option<String>,
    /// No build, no VM: redo the table, JSON and charts from `target/bench/raw`.
    #[arg(long)]
    pub from_raw: bool,
    /// Also run each VKMS peer scenario once under `perf record -a` and split each
    /// compositor's CPU per frame into the kernel's part and user space's (section 8).
    /// Needs perf in the VM and on the host (Debian package linux-perf).
    #[arg(long)]
    pub perf: bool,
}

/// Marker the guest prints with the driver's exit status.
const DRIVER_EXIT: &str = "SYNCBRIDGE-BENCH-EXIT";

/// The guest command that runs the driver with the binaries in `bin_dir`, leaving its files
/// in `out` (`perf`: with the `@perf` scenarios). Also used by `cargo xtask test` for the
/// smoke step.
pub fn driver_command(
    bin_dir: &Path,
    out: &Path,
    smoke: bool,
    perf: bool,
    only: Option<&str>,
) -> String {
    format!(
        "rm -rf {out}; {driver} {smoke}{perf}{only}--out {out} --syncbridge {sb} --client {client} \
         --minimal {minimal}",
        out = out.display(),
        driver = bin_dir.join("bench-driver").display(),
        smoke = if smoke { "--smoke " } else { "" },
        perf = if perf { "--perf " } else { "" },
        only = only.map_or(String::new(), |o| format!("--only='{o}' ")),
        sb = bin_dir.join("syncbridge").display(),
        client = bin_dir.join("bench-client").display(),
        minimal = bin_dir
            .join("examples")
            .join("minimal_compositor")
            .display(),
    )
}

pub fn run(args: BenchArgs) -> Result<i32> {
    let started = Instant::now();
    if args.from_raw {
        let out_dir = target_dir().join("bench");
        let report = Report::load(&out_dir.join("raw"), "as recorded")?;
        return write_outputs(&report, &out_dir, json!(null)).map(|_| 0);
    }
    install::install_all()?;
    let t = Instant::now();
    let profile = if args.debug { "debug" } else { "release" };
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args([
        "build",
        "-p",
        "syncbridge-compositor",
        "-p",
        "syncbridge-tests",
        "-p",
        "syncbridge-protocols",
        "--example",
        "minimal_compositor",
    ]);
    cargo.args([
        "--bin",
        "syncbridge",
        "--bin",
        "bench-client",
        "--bin",
        "bench-driver",
        "--bin",
        "latch-floor",
    ]);
    if !args.debug {
        cargo.arg("--release");
    }
    let status = cargo.current_dir(workspace_root()).status()?;
    if !status.success() {
        bail!("building the bench binaries failed");
    }
    let build_s = t.elapsed().as_secs_f64();

    let bin_dir = target_dir().join(profile);
    let raw = vm::scratch_dir().join(format!("bench-{}", std::process::id()));
    let exec = format!(
        "{}; echo \"{DRIVER_EXIT} $?\"",
        driver_command(&bin_dir, &raw, args.smoke, args.perf, args.only.as_deref())
    );
    let vm_args = VmArgs {
        exec,
        memory: "2G".into(),
        cpus: 2,
        timeout: 1500,
        qemu_opts: vec![],
        stall: None,
    };
    let mut driver_code: Option<i32> = None;
    let outcome = vm::boot(&vm_args, |line| {
        if let Some(rest) = line.strip_prefix(DRIVER_EXIT) {
            driver_code = rest.trim().parse().ok();
        }
    })?;
    let vm_s = outcome.total_time.as_secs_f64();
    let boot_s = outcome.boot_time.map_or(0.0, |d| d.as_secs_f64());

    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let raw_dest = out_dir.join("raw");
    let _ = std::fs::remove_dir_all(&raw_dest);
    std::fs::rename(&raw, &raw_dest)
        .or_else(|_| copy_dir(&raw, &raw_dest))
        .with_context(|| format!("collecting {}", raw.display()))?;

    let report = Report::load(&raw_dest, profile)?;
    let timing = json!({
        "build": build_s,
        "vm_boot": boot_s,
        "vm_total": vm_s,
        "total": started.elapsed().as_secs_f64(),
    });
    write_outputs(&report, &out_dir, timing)?;
    println!(
        "xtask: bench: build {build_s:.1}s, VM {vm_s:.1}s (boot {boot_s:.1}s), total {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for name in ["tty-early-3buf", "tty-flip-3buf"] {
        let chart = raw_dest.join(format!("{name}.timeline.svg"));
        if chart.exists() {
            println!(
                "xtask: bench: timeline of six consecutive buffers on VKMS ({name}): {}",
                chart.display()
            );
        }
    }
    let failed = report.failed_scenarios();
    if !failed.is_empty() {
        println!(
            "xtask: bench: scenarios that did not complete: {}",
            failed.join(", ")
        );
    }
    Ok(match driver_code {
        Some(0) if failed.is_empty() => 0,
        _ => 1,
    })
}

/// Prints the table and writes bench.json, table.txt and the charts into `out_dir`.
fn write_outputs(report: &Report, out_dir: &Path, timing: Value) -> Result<()> {
    let table = report.table();
    println!();
    print!("{table}");
    let mut doc = report.json();
    doc["timing_s"] = timing;
    std::fs::write(
        out_dir.join("bench.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    std::fs::write(out_dir.join("table.txt"), &table)?;
    let charts = report.charts();
    for (name, svg) in &charts {
        std::fs::write(out_dir.join(name), svg)?;
    }
    println!(
        "xtask: bench: wrote {} (bench.json, table.txt, {}, raw/)",
        out_dir.display(),
        charts
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reading the driver's files

#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    code: i32,
    secs: f64,
    note: String,
    client: Value,
    stats: Value,
    /// `latch-floor`'s output (`floor-*` scenarios).
    floor: Value,
    /// Largest `fences_held` / `fds_held` in the compositor's periodic stats lines.
    log_fences_max: Option<u64>,
    log_fds_max: Option<u64>,
    /// The compositor's CPU split from `<name>.perf.data` (`@perf` scenarios; see
    /// [`perf_split`]), `null` for the others.
    perf: Value,
}

#[derive(Debug)]
struct Report {
    env: Value,
    profile: String,
    scenarios: Vec<Scenario>,
}

fn read_json(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn log_field_max(log: &str, field: &str) -> Option<u64> {
    let key = format!("{field}=");
    log.lines()
        .filter(|l| l.contains(" stats "))
        .filter_map(|l| {
            let l = strip_ansi(l);
            let at = l.find(&key)? + key.len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
}

impl Report {
    fn load(dir: &Path, profile: &str) -> Result<Report> {
        let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).with_context(|| {
            format!("no manifest in {} (the driver did not run)", dir.display())
        })?;
        let mut scenarios = Vec::new();
        for line in manifest.lines() {
            let mut f = line.split('\t');
            let name = f.next().unwrap_or_default().to_string();
            if name.is_empty() {
                continue;
            }
            let code = f.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
            let secs = f.next().and_then(|c| c.parse().ok()).unwrap_or(0.0);
            let note = f.next().unwrap_or_default().to_string();
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            let client = read_json(&dir.join(format!("{name}.client.json")));
            scenarios.push(Scenario {
                perf: perf_split::read(dir, &name, &client),
                client,
                stats: read_json(&dir.join(format!("{name}.stats.json"))),
                floor: read_json(&dir.join(format!("{name}.floor.json"))),
                log_fences_max: log_field_max(&log, "fences_held"),
                log_fds_max: log_field_max(&log, "fds_held"),
                name,
                code,
                secs,
                note,
            });
        }
        Ok(Report {
            env: read_json(&dir.join("env.json")),
            profile: profile.to_string(),
            scenarios,
        })
    }

    /// The latch runs, in order: (mode, round, latch_latency object).
    fn latch_runs(&self) -> Vec<(String, String, Value)> {
        self.scenarios
            .iter()
            .filter(|s| s.code == 0)
            .filter_map(|s| {
                let rest = s.name.strip_prefix("latch-")?;
                let (mode, round) = rest.split_once('-').unwrap_or((rest, "a"));
                Some((
                    mode.to_string(),
                    round.to_string(),
                    s.stats["sync"]["latch_latency"].clone(),
                ))
            })
            .collect()
    }

    /// The latch latency of run (`mode`, `round`) split (us summaries): fence signalled ->
    /// the wait's callback (the loop's wake-up), callback -> commit applied, and the latter
    /// split again: callback -> smithay made the state current (the bridge's post-commit
    /// hook begins), that hook, and the other hooks and the commit handler after it.
    fn latch_split(&self, mode: &str, round: &str) -> LatchSplit {
        let sync = self
            .get(&format!("latch-{mode}-{round}"))
            .map(|s| &s.stats["sync"]);
        let part = |k: &str| sync.map_or(Value::Null, |s| s[k].clone());
        LatchSplit {
            wake: part("latch_wake"),
            apply: part("latch_apply"),
            state: part("latch_apply_state"),
            bridge_hook: part("latch_apply_bridge_hook"),
            handlers: part("latch_apply_handlers"),
        }
    }

    /// The bare wake-up measured in the same round as latch run (`mode`, `round`).
    fn floor(&self, mode: &str, round: &str) -> Option<&Value> {
        self.get(&format!("floor-{mode}-{round}"))
            .map(|s| &s.floor["wake_us"])
            .filter(|w| w.is_object())
    }

    /// The compositor's latch latency minus the bare wake-up of the same round, at p50 and
    /// p99 (us): what the compositor's loop adds over its event source.
    fn latch_overhead(&self, mode: &str, round: &str, latch: &Value) -> (Option<f64>, Option<f64>) {
        let floor = self.floor(mode, round);
        let minus = |q: &str, fq: &str| Some(latch[q].as_f64()? - floor?[fq].as_f64()?);
        (minus("p50_us", "p50"), minus("p99_us", "p99"))
    }

    fn get(&self, name: &str) -> Option<&Scenario> {
        self.scenarios
            .iter()
            .find(|s| s.name == name && s.code == 0)
    }

    fn failed_scenarios(&self) -> Vec<String> {
        self.scenarios
            .iter()
            .filter(|s| s.code != 0)
            .map(|s| {
                format!(
                    "{} ({}{})",
                    s.name,
                    s.code,
                    if s.note.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", s.note)
                    }
                )
            })
            .collect()
    }

    fn client_counts(&self) -> Vec<u64> {
        self.client_counts_of("frames-syncbridge-", "")
    }

    /// The N of the scenarios named `{prefix}N{suffix}`, sorted, once each.
    fn client_counts_of(&self, prefix: &str, suffix: &str) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .scenarios
            .iter()
            .filter_map(|s| s.name.strip_prefix(prefix)?.strip_suffix(suffix))
            .filter_map(|n| n.parse().ok())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn json(&self) -> Value {
        let mut scen = serde_json::Map::new();
        for s in &self.scenarios {
            scen.insert(
                s.name.clone(),
                json!({
                    "exit": s.code,
                    "secs": s.secs,
                    "note": s.note,
                    "client": s.client,
                    "compositor_sync": s.stats.get("sync").cloned().unwrap_or(Value::Null),
                    "compositor_kms": s.stats.get("kms").cloned().unwrap_or(Value::Null),
                    "compositor_frames_presented": s.stats.get("frames_presented_total").cloned().unwrap_or(Value::Null),
                    "log_fences_held_max": s.log_fences_max,
                    "log_fds_held_max": s.log_fds_max,
                }),
            );
        }
        json!({
            "environment": self.env,
            "build_profile": self.profile,
            "figures": self.figures(),
            "scenarios": scen,
        })
    }

    /// The headline figures, as in the table.
    fn figures(&self) -> Value {
        let latch = |mode: &str| {
            self.latch_runs()
                .into_iter()
                .filter(|(m, _, _)| m == mode)
                .map(|(_, round, l)| {
                    let (p50, p99) = self.latch_overhead(mode, &round, &l);
                    let split = self.latch_split(mode, &round);
                    json!({
                        "run": round,
                        "latency": l,
                        "signal_to_callback": split.wake,
                        "callback_to_applied": split.apply,
                        "callback_to_state_applied_by_smithay": split.state,
                        "bridge_post_commit_hook": split.bridge_hook,
                        "other_hooks_and_commit_handler": split.handlers,
                        "bare_wake_up_us": self.floor(mode, &round),
                        "overhead_over_bare_wake_up_us": { "p50": p50, "p99": p99 },
                        "minimal_compositor": self.library_floor_figures(mode, &round, &l),
                    })
                })
                .collect::<Vec<_>>()
        };
        let mut frames = Vec::new();
        for n in self.client_counts() {
            let sb = self
                .get(&format!("frames-syncbridge-{n}"))
                .map(|s| &s.client);
            let we = self.get(&format!("frames-weston-{n}")).map(|s| &s.client);
            let f = |c: Option<&Value>, k: &str, q: &str| c.and_then(|c| c[k][q].as_f64());
            let cpu = |c: Option<&Value>| c.and_then(|c| c["cpu_ms_per_frame"].as_f64());
            frames.push(json!({
                "clients": n,
                "syncbridge": { "commit_to_present_frames_p50": f(sb, "commit_to_present_frames", "p50"),
                                "commit_to_present_frames_p99": f(sb, "commit_to_present_frames", "p99"),
                                "cpu_ms_per_frame": cpu(sb) },
                "weston": { "commit_to_present_frames_p50": f(we, "commit_to_present_frames", "p50"),
                            "commit_to_present_frames_p99": f(we, "commit_to_present_frames", "p99"),
                            "cpu_ms_per_frame": cpu(we) },
                "ratio_ours_over_weston": {
                    "commit_to_present_p50": ratio(f(sb, "commit_to_present_frames", "p50"), f(we, "commit_to_present_frames", "p50")),
                    "cpu_per_frame": ratio(cpu(sb), cpu(we)),
                },
            }));
        }
        json!({
            "latch_latency_us": { "export": latch("export"), "poll": latch("poll") },
            "frames": frames,
            "frames_on_vkms_against_sway": self.vkms_peer_figures(),
            "presentation_on_vkms_by_plane": self.kms_path_figures(),
            "cpu_split_by_perf": self.perf_figures(),
            "release_on_vkms": self.tty_rows().iter().map(|r| json!({
                "scenario": r.name, "release_mode": r.mode, "buffers": r.buffers,
                "release_lead_p50_us": r.lead_p50, "release_lead_p99_us": r.lead_p99,
                "release_lead_min_us": r.lead_min, "out_fence_delay_p50_us": r.delay_p50,
                "missed_refreshes": r.missed, "frames_without_free_buffer": r.starved,
                "direct_scanout_frames": r.direct,
                "presented": r.presented,
            })).collect::<Vec<_>>(),
        })
    }

    fn tty_rows(&self) -> Vec<TtyRow> {
        self.scenarios
            .iter()
            .filter(|s| s.name.starts_with("tty-"))
            .map(|s| {
                let kms = &s.stats["kms"];
                let mut parts = s.name.split('-');
                let _ = parts.next();
                let mode = parts.next().unwrap_or("?").to_string();
                let buffers = parts
                    .next()
                    .and_then(|b| b.trim_end_matches("buf").parse().ok())
                    .unwrap_or(0);
                TtyRow {
                    name: s.name.clone(),
                    ok: s.code == 0,
                    mode,
                    buffers,
                    lead_p50: kms["release_lead_time"]["p50_us"].as_f64(),
                    lead_p99: kms["release_lead_time"]["p99_us"].as_f64(),
                    lead_min: kms["release_lead_time"]["min_us"].as_f64(),
                    delay_p50: kms["out_fence_signal_delay"]["p50_us"].as_f64(),
                    starved: s.client["frames_without_free_buffer"].as_u64(),
                    direct: kms["direct_scanout_frames"].as_u64(),
                    missed: s.client["missed_refreshes"].as_u64(),
                    presented: s.client["presented"].as_u64(),
                }
            })
            .collect()
    }
}

#[derive(Debug)]
struct TtyRow {
    name: String,
    ok: bool,
    mode: String,
    buffers: u64,
    lead_p50: Option<f64>,
    lead_p99: Option<f64>,
    lead_min: Option<f64>,
    delay_p50: Option<f64>,
    starved: Option<u64>,
    direct: Option<u64>,
    missed: Option<u64>,
    presented: Option<u64>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

fn fmt_u(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

// ---------------------------------------------------------------------------------------
// The table

impl Report {
    fn table(&self) -> String {
        let mut t = String::new();
        let e = &self.env;
        let _ = writeln!(
            t,
            "syncbridge bench ({}{} build; guest Linux {}, {} vCPUs, QEMU without KVM: compare ratios, not absolutes; peer: {})",
            if e["smoke"].as_bool() == Some(true) { "SMOKE, " } else { "" },
            self.profile,
            e["kernel"].as_str().unwrap_or("?"),
            e["cpus"],
            e["weston"].as_str().unwrap_or("?"),
        );

        // Latch latency.
        let _ = writeln!(t, "\n[1] latch latency: fence signalled -> commit applied (syncbridge --stats-json; signal time = the kernel's fence timestamp)");
        let _ = writeln!(
            t,
            "    {:<44} {:>10} {:>10} {:>8}",
            "implicit acquire mode", "p50 us", "p99 us", "samples"
        );
        let runs = self.latch_runs();
        for (mode, round, l) in &runs {
            let label = match mode.as_str() {
                "export" => "export sync_file at commit (syncbridge)",
                "poll" => "poll the dma-buf (smithay generate_blocker)",
                other => other,
            };
            let _ = writeln!(
                t,
                "    {:<44} {:>10} {:>10} {:>8}",
                format!("{label}, run {round}"),
                fmt(l["p50_us"].as_f64(), 0),
                fmt(l["p99_us"].as_f64(), 0),
                fmt_u(l["count"].as_u64())
            );
            let split = self.latch_split(mode, round);
            for (what, part) in [
                ("  of it: signal -> wait callback", &split.wake),
                ("  of it: callback -> commit applied", &split.apply),
                ("    smithay makes the state current", &split.state),
                ("    the bridge's post-commit hook", &split.bridge_hook),
                ("    other hooks + the commit handler", &split.handlers),
            ] {
                if part.is_object() {
                    let _ = writeln!(
                        t,
                        "    {:<44} {:>10} {:>10}",
                        what,
                        fmt(part["p50_us"].as_f64(), 0),
                        fmt(part["p99_us"].as_f64(), 0),
                    );
                }
            }
            if let Some(w) = self.floor(mode, round) {
                let _ = writeln!(
                    t,
                    "    {:<44} {:>10} {:>10} {:>8}",
                    "  bare wake-up of the same source (floor)",
                    fmt(w["p50"].as_f64(), 0),
                    fmt(w["p99"].as_f64(), 0),
                    fmt_u(w["count"].as_u64())
                );
                let (p50, p99) = self.latch_overhead(mode, round, l);
                let _ = writeln!(
                    t,
                    "    {:<44} {:>10} {:>10}",
                    "  overhead: latch minus floor",
                    fmt(p50, 0),
                    fmt(p99, 0)
                );
            }
            self.library_floor_rows(&mut t, mode, round, l);
        }
        for (round, e, p) in
            runs.iter()
                .filter(|(m, _, _)| m == "export")
                .filter_map(|(_, r, e)| {
                    let p = runs.iter().find(|(m, r2, _)| m == "poll" && r2 == r)?;
                    Some((r, e, &p.2))
                })
        {
            let _ = writeln!(
                t,
                "    run {round}: export/poll ratio p50 {}  p99 {}",
                fmt(ratio(e["p50_us"].as_f64(), p["p50_us"].as_f64()), 2),
                fmt(ratio(e["p99_us"].as_f64(), p["p99_us"].as_f64()), 2)
            );
        }
        if runs.is_empty() {
            let _ = writeln!(t, "    not measured");
        }

        // Commit -> present and CPU per frame.
        let _ = writeln!(t, "\n[2] commit -> presented, in refresh cycles (wp_presentation feedback; same shm client, frame-callback driven, 128x128)");
        let _ = writeln!(t, "[3] compositor CPU per presented frame, ms (/proc/PID/stat utime+stime / distinct presentation times in the window)");
        let _ = writeln!(
            t,
            "    {:>7} | {:>17} {:>17} {:>11} | {:>10} {:>10} {:>11}",
            "clients",
            "syncbridge p50/p99",
            "weston p50/p99",
            "ours/weston",
            "sb cpu ms",
            "wes cpu ms",
            "ours/weston"
        );
        for n in self.client_counts() {
            let sb = self
                .get(&format!("frames-syncbridge-{n}"))
                .map(|s| &s.client);
            let we = self.get(&format!("frames-weston-{n}")).map(|s| &s.client);
            let q = |c: Option<&Value>, k: &str| {
                c.and_then(|c| c["commit_to_present_frames"][k].as_f64())
            };
            let cpu = |c: Option<&Value>| c.and_then(|c| c["cpu_ms_per_frame"].as_f64());
            let _ = writeln!(
                t,
                "    {:>7} | {:>17} {:>17} {:>11} | {:>10} {:>10} {:>11}",
                n,
                format!("{} / {}", fmt(q(sb, "p50"), 2), fmt(q(sb, "p99"), 2)),
                format!("{} / {}", fmt(q(we, "p50"), 2), fmt(q(we, "p99"), 2)),
                fmt(ratio(q(sb, "p50"), q(we, "p50")), 2),
                fmt(cpu(sb), 2),
                fmt(cpu(we), 2),
                fmt(ratio(cpu(sb), cpu(we)), 2),
            );
        }
        for n in self.client_counts() {
            for who in ["syncbridge", "weston"] {
                if let Some(s) = self.get(&format!("frames-{who}-{n}")) {
                    let c = &s.client;
                    let _ = writeln!(
                        t,
                        "      {who} {n} client(s): {} presented, {} discarded, {} missed refresh cycles, {} output frames in {} s",
                        fmt_u(c["presented"].as_u64()),
                        fmt_u(c["discarded"].as_u64()),
                        fmt_u(c["missed_refreshes"].as_u64()),
                        fmt_u(c["output_frames_in_window"].as_u64()),
                        fmt(c["window_s"].as_f64(), 1),
                    );
                }
            }
        }
        let feat = |who: &str, key: &str| {
            self.scenarios
                .iter()
                .find(|s| s.name.starts_with(&format!("frames-{who}-")) && s.code == 0)
                .and_then(|s| s.client["globals"][key].as_bool())
        };
        let yes = |v: Option<bool>| match v {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = writeln!(
            t,
            "    features seen by the client: linux-drm-syncobj-v1 syncbridge {} / weston {}; linux-dmabuf syncbridge {} / weston {}; explicit-sync-v1 syncbridge {} / weston {}",
            yes(feat("syncbridge", "linux_drm_syncobj_v1")),
            yes(feat("weston", "linux_drm_syncobj_v1")),
            yes(feat("syncbridge", "linux_dmabuf")),
            yes(feat("weston", "linux_dmabuf")),
            yes(feat("syncbridge", "explicit_sync_v1")),
            yes(feat("weston", "explicit_sync_v1")),
        );
        if feat("weston", "linux_drm_syncobj_v1") == Some(false) {
            let _ = writeln!(t, "    weston 10 has no linux-drm-syncobj-v1 (and its pixman headless no linux-dmabuf): syncobj and dma-buf rows are n/a for it; the peer comparison uses shm");
        }

        // Release on VKMS.
        let _ = writeln!(t, "\n[4] release on VKMS (tty backend): lead time = page-flip time - wl_buffer.release time (positive: released before the flip)");
        let rows = self.tty_rows();
        if rows.is_empty() {
            let why = if self.env["tty_backend"].as_bool() == Some(true) {
                if self.env["smoke"].as_bool() == Some(true) {
                    "not run in the smoke version"
                } else {
                    "not run"
                }
            } else {
                "not measured: this syncbridge build has no tty backend (--release-mode)"
            };
            let _ = writeln!(t, "    {why}");
        } else {
            let _ = writeln!(
                t,
                "    {:<7} {:>4} | {:>9} {:>9} {:>9} {:>11} | {:>6} {:>9} {:>12} {:>8}",
                "release",
                "bufs",
                "lead p50",
                "lead p99",
                "lead min",
                "fence dly50",
                "direct",
                "presented",
                "no free buf",
                "missed"
            );
            for r in &rows {
                if !r.ok {
                    let _ = writeln!(
                        t,
                        "    {:<7} {:>4} | did not complete (see raw/{}.log)",
                        r.mode, r.buffers, r.name
                    );
                    continue;
                }
                let _ = writeln!(
                    t,
                    "    {:<7} {:>4} | {:>9} {:>9} {:>9} {:>11} | {:>6} {:>9} {:>12} {:>8}",
                    r.mode,
                    r.buffers,
                    fmt(r.lead_p50, 0),
                    fmt(r.lead_p99, 0),
                    fmt(r.lead_min, 0),
                    fmt(r.delay_p50, 1),
                    fmt_u(r.direct),
                    fmt_u(r.presented),
                    fmt_u(r.starved),
                    fmt_u(r.missed),
                );
            }
            let _ = writeln!(t, "    (us; lead = flip - release, out-fence delay = fence signal - flip; direct = frames scanned out from the client buffer;");
            let _ = writeln!(t, "     no free buf = frame callbacks that found every buffer still held; missed = refresh cycles between presents, any cause incl. the emulated CPU)");
            for mode in ["early", "flip"] {
                let need = rows
                    .iter()
                    .filter(|r| r.ok && r.mode == mode && r.starved == Some(0))
                    .map(|r| r.buffers)
                    .min();
                let _ = writeln!(
                    t,
                    "    buffers a client needs so no frame waits for a buffer, release {mode}: {}",
                    need.map_or("more than tested (or not measured)".into(), |b| b
                        .to_string())
                );
            }
        }

        // Bounds.
        let _ = writeln!(t, "\n[5] bounds held by syncbridge (/proc of the compositor; fences/fds held by the bridge from its stats)");
        let _ = writeln!(
            t,
            "    {:<26} {:>8} {:>9} | {:>13} {:>19} | {:>14} {:>12}",
            "scenario",
            "commits",
            "commits/s",
            "fds before>after",
            "RSS KiB before>after",
            "fences held peak",
            "bridge fds pk"
        );
        for (name, label) in [
            ("bounds-same", "same buffer"),
            ("bounds-rotate", "4 rotating buffers"),
        ] {
            if let Some(s) = self.get(name) {
                let c = &s.client;
                let _ = writeln!(
                    t,
                    "    {:<26} {:>8} {:>9} | {:>13} {:>19} | {:>14} {:>12}",
                    label,
                    fmt_u(c["commits"].as_u64()),
                    fmt(c["commits_per_s"].as_f64(), 0),
                    format!(
                        "{} > {}",
                        fmt_u(c["before"]["fds"].as_u64()),
                        fmt_u(c["after"]["fds"].as_u64())
                    ),
                    format!(
                        "{} > {}",
                        fmt_u(c["before"]["rss_kib"].as_u64()),
                        fmt_u(c["after"]["rss_kib"].as_u64())
                    ),
                    fmt_u(s.stats["sync"]["fences_held"]["peak"].as_u64()),
                    fmt_u(s.stats["sync"]["fds_held"]["peak"].as_u64()),
                );
            } else {
                let _ = writeln!(t, "    {label:<26} did not complete");
            }
        }
        if let Some(s) = self.get("stall") {
            let c = &s.client;
            let _ = writeln!(
                t,
                "    {:<26} {:>8} {:>9} | {:>13} {:>19} | {:>14} {:>12}",
                format!("{} stalled clients", fmt_u(c["stalled_clients"].as_u64())),
                fmt_u(c["unsignalled_fences"].as_u64()),
                "-",
                format!(
                    "{} > {}",
                    fmt_u(c["before"]["fds"].as_u64()),
                    fmt_u(c["during"]["fds"].as_u64())
                ),
                format!(
                    "{} > {}",
                    fmt_u(c["before"]["rss_kib"].as_u64()),
                    fmt_u(c["during"]["rss_kib"].as_u64())
                ),
                fmt_u(s.stats["sync"]["fences_held"]["peak"].as_u64()),
                fmt_u(s.stats["sync"]["fds_held"]["peak"].as_u64()),
            );
            let _ = writeln!(
                t,
                "      while stalled: a healthy shm client presented {} frames/s (output {} Hz); after the stalled clients disconnected: {} fds, {} KiB RSS; bridge at exit: {} fences, {} fds held",
                fmt(c["healthy_fps"].as_f64(), 1),
                fmt(c["refresh_ns"].as_f64().filter(|r| *r > 0.0).map(|r| 1e9 / r), 0),
                fmt_u(c["after_disconnect"]["fds"].as_u64()),
                fmt_u(c["after_disconnect"]["rss_kib"].as_u64()),
                fmt_u(s.stats["sync"]["fences_held"]["now"].as_u64()),
                fmt_u(s.stats["sync"]["fds_held"]["now"].as_u64()),
            );
        } else {
            let _ = writeln!(t, "    stalled clients: did not complete");
        }

        self.vkms_peer_table(&mut t);
        self.kms_path_table(&mut t);
        self.perf_table(&mut t);

        let _ = writeln!(
            t,
            "\n    scenario run times: {}",
            self.scenarios
                .iter()
                .map(|s| format!(
                    "{} {:.0}s{}",
                    s.name,
                    s.secs,
                    if s.code == 0 { "" } else { " FAILED" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        t
    }
}

// ---------------------------------------------------------------------------------------
// Charts: hand-written SVG grouped bars

const COLORS: [&str; 4] = ["#3b6fb6", "#d9822b", "#5aa05a", "#9b59b6"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A grouped bar chart: one group per category, one bar per series. Missing values are
/// drawn as "n/a".
fn bar_chart(
    title: &str,
    unit: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> String {
    let (w, h) = (720.0, 380.0);
    let (left, right, top, bottom) = (70.0, 20.0, 50.0, 70.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0_f64, |m, v| m.max(*v));
    let max = if max > 0.0 { max * 1.1 } else { 1.0 };
    // Negative values (a release after the flip) hang below a zero line.
    let min = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0_f64, |m, v| m.min(*v))
        * 1.1;
    let span = max - min;
    let y_of = |v: f64| top + plot_h * (max - v) / span;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    for i in 0..=4 {
        let v = min + span * f64::from(i) / 4.0;
        let y = y_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            w - right
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 4.0,
            short(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        esc(unit)
    );
    let groups = categories.len().max(1) as f64;
    let group_w = plot_w / groups;
    let bars = series.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / bars;
    for (ci, cat) in categories.iter().enumerate() {
        let gx = left + group_w * ci as f64;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + group_w / 2.0,
            top + plot_h + 18.0,
            esc(cat)
        );
        for (si, (_, values)) in series.iter().enumerate() {
            let x = gx + group_w * 0.1 + bar_w * si as f64;
            match values.get(ci).copied().flatten() {
                Some(v) => {
                    let (y0, y1) = (y_of(v.max(0.0)), y_of(v.min(0.0)));
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                        bar_w - 2.0,
                        y1 - y0,
                        COLORS[si % COLORS.len()]
                    );
                    let label_y = if v >= 0.0 { y0 - 3.0 } else { y1 + 11.0 };
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{label_y:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                        x + bar_w / 2.0 - 1.0,
                        short(v)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#888">n/a</text>"##,
                        x + bar_w / 2.0 - 1.0,
                        y_of(0.0) - 3.0
                    );
                }
            }
        }
    }
    let _ = writeln!(
        s,
        r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        w - right,
        y_of(0.0),
        y_of(0.0)
    );
    for (si, (name, _)) in series.iter().enumerate() {
        let x = left + 150.0 * si as f64;
        let y = h - 22.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/>"#,
            y - 10.0,
            COLORS[si % COLORS.len()]
        );
        let _ = writeln!(s, r#"<text x="{}" y="{y}">{}</text>"#, x + 16.0, esc(name));
    }
    s.push_str("</svg>\n");
    s
}

fn short(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    fn charts(&self) -> Vec<(String, String)> {
        let mut charts = Vec::new();
        let runs = self.latch_runs();
        charts.push((
            "latch-latency.svg".into(),
            bar_chart(
                "Latch latency: fence signalled -> commit applied",
                "microseconds",
                &["p50".into(), "p99".into()],
                &runs
                    .iter()
                    .map(|(mode, round, l)| {
                        (
                            format!("{mode} (run {round})"),
                            vec![l["p50_us"].as_f64(), l["p99_us"].as_f64()],
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
        ));
        let counts = self.client_counts();
        let cats: Vec<String> = counts.iter().map(|n| format!("{n} client(s)")).collect();
        let col = |who: &str, f: &dyn Fn(&Value) -> Option<f64>| -> Vec<Option<f64>> {
            counts
                .iter()
                .map(|n| {
                    self.get(&format!("frames-{who}-{n}"))
                        .and_then(|s| f(&s.client))
                })
                .collect()
        };
        let p = |q: &'static str| move |c: &Value| c["commit_to_present_frames"][q].as_f64();
        charts.push((
            "commit-to-present.svg".into(),
            bar_chart(
                "Commit -> presented (refresh cycles)",
                "refresh cycles",
                &cats,
                &[
                    ("syncbridge p50".into(), col("syncbridge", &p("p50"))),
                    ("weston p50".into(), col("weston", &p("p50"))),
                    ("syncbridge p99".into(), col("syncbridge", &p("p99"))),
                    ("weston p99".into(), col("weston", &p("p99"))),
                ],
            ),
        ));
        let cpu = |c: &Value| c["cpu_ms_per_frame"].as_f64();
        charts.push((
            "cpu-per-frame.svg".into(),
            bar_chart(
                "Compositor CPU per presented frame",
                "ms CPU / frame",
                &cats,
                &[
                    ("syncbridge".into(), col("syncbridge", &cpu)),
                    ("weston 10".into(), col("weston", &cpu)),
                ],
            ),
        ));
        let bound_names = [
            ("bounds-same", "same buffer"),
            ("bounds-rotate", "rotating"),
            ("stall", "stalled clients"),
        ];
        let bcats: Vec<String> = bound_names.iter().map(|(_, l)| l.to_string()).collect();
        let sample = |name: &str, when: &str, what: &str| -> Option<f64> {
            self.get(name).and_then(|s| s.client[when][what].as_f64())
        };
        let after = |name: &str| if name == "stall" { "during" } else { "after" };
        charts.push((
            "bounds-fds.svg".into(),
            bar_chart(
                "Compositor open fds (before / after or during)",
                "fds",
                &bcats,
                &[
                    (
                        "before".into(),
                        bound_names
                            .iter()
                            .map(|(n, _)| sample(n, "before", "fds"))
                            .collect(),
                    ),
                    (
                        "after / during".into(),
                        bound_names
                            .iter()
                            .map(|(n, _)| sample(n, after(n), "fds"))
                            .collect(),
                    ),
                    (
                        "bridge fences held (peak)".into(),
                        bound_names
                            .iter()
                            .map(|(n, _)| {
                                self.get(n)
                                    .and_then(|s| s.stats["sync"]["fences_held"]["peak"].as_f64())
                            })
                            .collect(),
                    ),
                ],
            ),
        ));
        charts.push((
            "bounds-rss.svg".into(),
            bar_chart(
                "Compositor RSS (before / after or during)",
                "KiB",
                &bcats,
                &[
                    (
                        "before".into(),
                        bound_names
                            .iter()
                            .map(|(n, _)| sample(n, "before", "rss_kib"))
                            .collect(),
                    ),
                    (
                        "after / during".into(),
                        bound_names
                            .iter()
                            .map(|(n, _)| sample(n, after(n), "rss_kib"))
                            .collect(),
                    ),
                ],
            ),
        ));
        let rows = self.tty_rows();
        if !rows.is_empty() {
            let cats: Vec<String> = rows
                .iter()
                .map(|r| format!("{} {}buf", r.mode, r.buffers))
                .collect();
            charts.push((
                "release-lead-time.svg".into(),
                bar_chart(
                    "Release lead time on VKMS (flip time - release time)",
                    "microseconds",
                    &cats,
                    &[
                        ("p50".into(), rows.iter().map(|r| r.lead_p50).collect()),
                        ("p99".into(), rows.iter().map(|r| r.lead_p99).collect()),
                    ],
                ),
            ));
        }
        charts
    }
}

/// [`Report::latch_split`]'s parts of one latch run (us summaries; `Null` where missing).
struct LatchSplit {
    wake: Value,
    apply: Value,
    state: Value,
    bridge_hook: Value,
    handlers: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_only_filter_that_starts_with_a_dash_reaches_the_driver_as_a_value() {
        // `--only '-1@perf'` made the driver's clap read `-1@perf` as an option and exit 2;
        // `--only=` keeps any value a value.
        let cmd = driver_command(
            Path::new("/b"),
            Path::new("/o"),
            false,
            true,
            Some("-1@perf"),
        );
        assert!(cmd.contains(" --perf --only='-1@perf' --out /o "), "{cmd}");
        let plain = driver_command(Path::new("/b"), Path::new("/o"), true, false, None);
        assert!(plain.contains("bench-driver --smoke --out /o "), "{plain}");
    }
}
