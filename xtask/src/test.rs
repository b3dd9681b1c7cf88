//! `cargo xtask test`: THE test command. WLCS and the host tests, then the VM suite on a
//! real kernel, then one summary line over all.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cmd::{output_of, run_streaming, target_dir, workspace_root};
use crate::install;
use crate::summary::Counts;
use crate::vm::{self, VmArgs};
use crate::wlcs;

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    /// Only the host tests.
    #[arg(long)]
    pub host_only: bool,
    /// Only the VM suite.
    #[arg(long)]
    pub vm_only: bool,
    /// Only run VM test binaries whose name contains this (e.g. `vm_platform`).
    #[arg(long)]
    pub vm_filter: Option<String>,
    /// Only WLCS (the Wayland conformance suite): no other host test, no VM.
    #[arg(long)]
    pub wlcs_only: bool,
    /// Only the WLCS tests matching this gtest filter (e.g. `XdgToplevelStable*`).
    #[arg(long)]
    pub wlcs_filter: Option<String>,
}

struct Phase {
    name: &'static str,
    secs: f64,
}

pub fn run(args: TestArgs) -> Result<i32> {
    let mut phases = Vec::new();
    let t = Instant::now();
    install::install_all()?;
    phases.push(Phase {
        name: "install",
        secs: t.elapsed().as_secs_f64(),
    });

    let mut host = Counts::default();
    let mut vm_counts = Counts::default();
    let mut host_ok = true;
    let mut vm_error: Option<String> = None;
    let mut vm_deaths: Vec<String> = Vec::new();

    // Build everything first so the phases below time tests, not compilation.
    let t = Instant::now();
    // --examples: protocols' minimal_compositor, which the tests run against real clients.
    let built = run_cargo(&["build", "--workspace", "--bins", "--examples"])
        // The WLCS module is a cdylib, which `--bins` leaves out.
        .and_then(|_| run_cargo(&["build", "-p", "wlcs_syncbridge"]))
        .and_then(|_| {
            if args.wlcs_only {
                Ok(())
            } else {
                run_cargo(&["test", "--workspace", "--no-run"])
            }
        })
        .and_then(|_| {
            if args.host_only || args.wlcs_only {
                Ok(vec![])
            } else {
                build_vm_tests(args.vm_filter.as_deref())
            }
        });
    phases.push(Phase {
        name: "build",
        secs: t.elapsed().as_secs_f64(),
    });
    let vm_bins = match built {
        Ok(bins) => bins,
        Err(e) => {
            println!("xtask: BUILD FAILED: {e:#}");
            println!("0 passed, 1 failed");
            return Ok(1);
        }
    };

    let mut wlcs_counts = Counts::default();
    let mut wlcs_error: Option<String> = None;
    if !args.vm_only {
        let t = Instant::now();
        match wlcs::run(args.wlcs_filter.as_deref()) {
            Ok(outcome) => {
                let total = outcome.total();
                wlcs_counts.passed = total.passed;
                wlcs_counts.ignored =
                    total.skipped + total.failed - outcome.unexpected.len() as u64;
                // Listed failures are known and explained; only the others fail the step.
                wlcs_counts.failed = outcome.unexpected.len() as u64;
            }
            Err(e) => {
                wlcs_error = Some(format!("{e:#}"));
                wlcs_counts.failed += 1;
            }
        }
        phases.push(Phase {
            name: "WLCS",
            secs: t.elapsed().as_secs_f64(),
        });
    }

    let mut msrv_error: Option<String> = None;
    if !args.vm_only && !args.wlcs_only {
        let t = Instant::now();
        match crate::msrv::check() {
            Ok(lines) => host.passed += lines.len() as u64,
            Err(e) => {
                msrv_error = Some(format!("{e:#}"));
                host.failed += 1;
            }
        }
        phases.push(Phase {
            name: "MSRV",
            secs: t.elapsed().as_secs_f64(),
        });

        let t = Instant::now();
        println!("xtask: test: host tests (cargo test --workspace)");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["test", "--workspace"])
            .current_dir(workspace_root());
        let code = run_streaming(&mut cmd, |l| {
            host.add_line(l);
        })?;
        host_ok = code == 0;
        if !host_ok && host.failed == 0 {
            // A crash or build failure without a libtest summary still counts as a failure.
            host.failed += 1;
        }
        phases.push(Phase {
            name: "host tests",
            secs: t.elapsed().as_secs_f64(),
        });
    }

    if !args.host_only && !args.wlcs_only {
        // The bench smoke runs unless a filter excludes it.
        let smoke = args
            .vm_filter
            .as_deref()
            .is_none_or(|f| BENCH_SMOKE.contains(f));
        match run_vm_suite(&vm_bins, smoke) {
            Ok(suite) => {
                vm_counts = suite.counts;
                vm_deaths = suite.deaths;
                phases.push(Phase {
                    name: "VM boot",
                    secs: suite.boot_s,
                });
                phases.push(Phase {
                    name: "VM tests",
                    secs: suite.total_s - suite.boot_s,
                });
            }
            Err(e) => {
                vm_error = Some(format!("{e:#}"));
                vm_counts.failed += 1;
            }
        }
    }

    println!();
    println!(
        "xtask: phases: {}",
        phases
            .iter()
            .map(|p| format!("{} {:.1}s", p.name, p.secs))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "xtask: host: {} passed, {} failed, {} ignored; VM: {} passed, {} failed",
        host.passed, host.failed, host.ignored, vm_counts.passed, vm_counts.failed
    );
    println!(
        "xtask: WLCS: {} passed, {} unexpected failures, {} skipped or expected to fail",
        wlcs_counts.passed, wlcs_counts.failed, wlcs_counts.ignored
    );
    if let Some(e) = &msrv_error {
        println!("xtask: MSRV CHECK FAILED: {e}");
    }
    if let Some(e) = &vm_error {
        println!("xtask: VM SUITE FAILED: {e}");
    }
    for death in &vm_deaths {
        println!("xtask: VM LOST BEFORE ITS STEPS FINISHED: {death}");
    }
    if let Some(e) = &wlcs_error {
        println!("xtask: WLCS FAILED: {e}");
    }
    let mut total = host;
    total.merge(vm_counts);
    total.merge(wlcs_counts);
    println!("{} passed, {} failed", total.passed, total.failed);
    Ok(
        if total.failed == 0
            && host_ok
            && msrv_error.is_none()
            && vm_error.is_none()
            && wlcs_error.is_none()
        {
            0
        } else {
            1
        },
    )
}

fn run_cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// Builds the `vm_*` test binaries of syncbridge-tests (feature `vm`) and returns their
/// paths.
fn build_vm_tests(filter: Option<&str>) -> Result<Vec<(String, PathBuf)>> {
    let out = output_of(
        Command::new(env!("CARGO"))
            .args([
                "test",
                "-p",
                "syncbridge-tests",
                "--features",
                "vm",
                "--no-run",
                "--message-format=json",
            ])
            .current_dir(workspace_root()),
    )
    .context("building the VM test suite")?;
    let mut bins = Vec::new();
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let name = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        if name.starts_with("vm_") && filter.is_none_or(|f| name.contains(f)) {
            bins.push((name, PathBuf::from(exe)));
        }
    }
    bins.sort();
    if bins.is_empty() {
        bail!("no VM test binaries were built (expected syncbridge-tests' vm_* tests)");
    }
    Ok(bins)
}

const EXIT_MARKER: &str = "SYNCBRIDGE-VM-EXIT";
/// Printed by the guest as each step starts.
const STEP_MARKER: &str = "=== VM";
/// A VM step silent for this long is hung: the VM is stopped (see [`run_vm_suite`]).
/// `SYNCBRIDGE_VM_STALL_SECS` overrides it (to try the stall path on a short step).
const STEP_STALL_SECS: u64 = 900;
/// The name of the bench smoke step in the VM suite.
const BENCH_SMOKE: &str = "bench_smoke";

/// One step of the VM suite: a name and the guest shell lines that run it and print
/// `EXIT_MARKER name status`.
struct Step {
    name: String,
    script: String,
}

/// The VM suite's outcome over its boots.
struct VmSuite {
    counts: Counts,
    boot_s: f64,
    total_s: f64,
    /// One line per VM that died before its steps finished (printed in the summary).
    deaths: Vec<String>,
}

/// What one boot of the VM suite finished.
struct VmRun {
    counts: Counts,
    /// Steps that printed their exit marker, in order.
    finished: usize,
    outcome: vm::VmOutcome,
    /// A line of the guest's output that says its kernel panicked, if any.
    kernel_panic: Option<String>,
}

/// Runs every VM test binary (and the bench smoke) in one boot. A VM lost before its
/// steps finish without a guest kernel panic (QEMU gone under it, as in CI stop 23, or a
/// guest hung for [`STEP_STALL_SECS`] in one step, which the stall guard stops) gets its
/// unfinished steps rerun once in a fresh VM, and the loss is reported; a second loss, or
/// a guest kernel panic, fails them.
fn run_vm_suite(bins: &[(String, PathBuf)], smoke: bool) -> Result<VmSuite> {
    let mut steps: Vec<Step> = bins
        .iter()
        .map(|(name, exe)| Step {
            name: name.clone(),
            script: format!(
                "echo '{STEP_MARKER} test binary {name}'\n{exe} --test-threads=1; echo \"{EXIT_MARKER} {name} $?\"\n",
                exe = exe.display()
            ),
        })
        .collect();
    // The bench's smoke version, so `cargo xtask bench` cannot rot: one more step.
    if smoke {
        let out = crate::vm::scratch_dir().join(format!("bench-smoke-{}", std::process::id()));
        steps.push(Step {
            name: BENCH_SMOKE.to_string(),
            script: format!(
                "echo '{STEP_MARKER} bench smoke'\n{}; echo \"{EXIT_MARKER} {BENCH_SMOKE} $?\"; rm -rf {}\n",
                crate::bench::driver_command(&target_dir().join("debug"), &out, true, false, None),
                out.display()
            ),
        });
    }
    let mut suite = VmSuite {
        counts: Counts::default(),
        boot_s: 0.0,
        total_s: 0.0,
        deaths: Vec::new(),
    };
    let mut remaining = &steps[..];
    loop {
        let run = run_vm_steps(remaining)?;
        suite.counts.merge(run.counts);
        let boot = run.outcome.boot_time.map_or(0.0, |d| d.as_secs_f64());
        suite.boot_s += boot;
        suite.total_s += run.outcome.total_time.as_secs_f64();
        if run.finished >= remaining.len() {
            return Ok(suite);
        }
        let unfinished = &remaining[run.finished..];
        let death = format!(
            "the VM ended during step {} ({} of {} steps of this boot finished, after {:.0}s): \
             vng/QEMU {}{}",
            unfinished[0].name,
            run.finished,
            remaining.len(),
            run.outcome.total_time.as_secs_f64(),
            run.outcome.ended,
            match &run.kernel_panic {
                Some(line) => format!("; the guest kernel panicked: {line}"),
                None => "; no guest kernel panic in its output".to_string(),
            }
        );
        println!("xtask: VM: {death}");
        if !run.outcome.xvfb_messages.is_empty() {
            println!(
                "xtask: VM: the last lines of the GL display's log (Xvfb, host Mesa):\n{}",
                run.outcome.xvfb_messages
            );
        }
        let rerun = suite.deaths.is_empty() && run.kernel_panic.is_none();
        suite.deaths.push(death);
        if !rerun {
            suite.counts.failed += unfinished.len() as u64;
            println!(
                "xtask: VM: {} steps did not finish; they count as failed",
                unfinished.len()
            );
            return Ok(suite);
        }
        println!(
            "xtask: VM: running the unfinished steps ({}) once more, in a fresh VM",
            unfinished.len()
        );
        remaining = unfinished;
    }
}

/// Boots the VM once and runs `steps` in it.
fn run_vm_steps(steps: &[Step]) -> Result<VmRun> {
    let syncbridge = target_dir().join("debug/syncbridge");
    let mut script = format!(
        "export SYNCBRIDGE_BIN={}\nexport SYNCBRIDGE_MINIMAL_BIN={}\n",
        syncbridge.display(),
        target_dir()
            .join("debug/examples/minimal_compositor")
            .display()
    );
    for step in steps {
        script.push_str(&step.script);
    }
    let args = VmArgs {
        exec: script,
        memory: "2G".into(),
        cpus: 2,
        timeout: 3600,
        qemu_opts: vec![],
        // The longest step takes about 5 minutes (vm_tty_gles); a guest silent for 15 is
        // hung (CI once sat 24 minutes in a virgl EGL start-up that `timeout` could not
        // kill), and its unfinished steps get the one rerun below.
        stall: Some(vm::StallLimit {
            limit: std::time::Duration::from_secs(
                std::env::var("SYNCBRIDGE_VM_STALL_SECS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(STEP_STALL_SECS),
            ),
            markers: vec![STEP_MARKER.to_string(), EXIT_MARKER.to_string()],
        }),
    };
    let mut counts = Counts::default();
    let mut per_bin = Counts::default();
    let mut finished = 0;
    let mut kernel_panic = None;
    let outcome = vm::boot(&args, |line| {
        per_bin.add_line(line);
        if kernel_panic.is_none() && line.contains("Kernel panic") {
            kernel_panic = Some(line.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix(EXIT_MARKER) {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or("?").to_string();
            let code: i32 = words.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
            if name == BENCH_SMOKE {
                // Not a libtest binary: its exit status is the verdict.
                per_bin.passed += u64::from(code == 0);
            }
            // A binary that died without a libtest summary reporting failures (a crash, a
            // panic in a harness) still counts as one failure.
            if code != 0 && per_bin.failed == 0 {
                per_bin.failed += 1;
            }
            finished += 1;
            counts.merge(per_bin);
            per_bin = Counts::default();
        }
    })?;
    Ok(VmRun {
        counts,
        finished,
        outcome,
        kernel_panic,
    })
}
