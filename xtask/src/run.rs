//! `cargo xtask run`: the README's first command.
//!
//! - With arguments after `--`: runs `syncbridge` with exactly those.
//! - On a desktop (`WAYLAND_DISPLAY` or `DISPLAY` set): the nested backend with a demo
//!   client.
//! - With a seat and a DRM device: the tty backend with a demo client.
//! - Otherwise (machines like CI's: no display, no GPU): boots the test VM and runs the
//!   demo (assets/demo.sh) on its virgl card with GLES composition: a fullscreen GL
//!   client scanned out directly (out-fence, early release), then GL clients composited
//!   (render fence imported into an implicit client's buffer, and sent in
//!   `fenced_release` to an explicit-sync client). Writes a PNG of what the display
//!   showed and the stats JSON to `target/demo/`, and prints a summary.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use crate::cmd::{target_dir, workspace_root};
use crate::install;
use crate::vm::{self, VmArgs};

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// VM demo: client commits per phase (direct scanout, then composition).
    #[arg(long, default_value_t = 300)]
    pub commits: u64,
    /// Run the VM demo even on a machine with a display or a GPU.
    #[arg(long)]
    pub vm: bool,
    /// Arguments passed to `syncbridge` (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

fn build() -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "syncbridge-compositor",
            "--bin",
            "syncbridge",
        ])
        .args([
            "-p",
            "syncbridge-tests",
            "--bin",
            "demo-client",
            "--bin",
            "drm-cards",
        ])
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("building syncbridge and the demo client failed");
    }
    Ok(())
}

fn has_seat_and_gpu() -> bool {
    let has_card = std::fs::read_dir("/dev/dri")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("card"))
        })
        .unwrap_or(false);
    let has_seat = std::env::var_os("XDG_SEAT").is_some()
        || Path::new("/run/seatd.sock").exists()
        || Path::new("/run/systemd/seats").exists();
    has_card && has_seat
}

pub fn run(args: RunArgs) -> Result<i32> {
    install::install_all()?;
    build()?;
    let bin = target_dir().join("debug/syncbridge");
    let demo_client = target_dir().join("debug/demo-client");
    if !args.args.is_empty() {
        let status = Command::new(&bin).args(&args.args).status()?;
        return Ok(status.code().unwrap_or(1));
    }
    let desktop =
        std::env::var_os("WAYLAND_DISPLAY").is_some() || std::env::var_os("DISPLAY").is_some();
    if !args.vm && (desktop || has_seat_and_gpu()) {
        let backend = if desktop { "nested" } else { "tty" };
        println!("xtask: run: syncbridge --backend {backend} with a demo client (close the window or press Ctrl-C to stop)");
        let status = Command::new(&bin)
            .args(["--backend", backend, "--"])
            .arg(&demo_client)
            .args(["--mode", "shm"])
            .status()?;
        return Ok(status.code().unwrap_or(1));
    }
    println!("xtask: run: no display and no seat with a GPU here: running the demo in the test VM on its virgl card (GLES, a real GL driver stack)");
    run_vm_demo(args.commits)
}

fn run_vm_demo(commits: u64) -> Result<i32> {
    let out = vm::scratch_dir().join("demo");
    let script = workspace_root().join("assets/demo.sh");
    let exec = format!(
        "export SYNCBRIDGE_BIN={bin}\nsh {script} {out} {commits}",
        bin = target_dir().join("debug/syncbridge").display(),
        script = script.display(),
        out = out.display(),
    );
    let outcome = vm::boot(
        &VmArgs {
            exec,
            memory: "2G".into(),
            cpus: 2,
            timeout: 900,
            qemu_opts: vec![],
            stall: None,
        },
        |_| {},
    )?;
    let dest = target_dir().join("demo");
    std::fs::create_dir_all(&dest)?;
    for name in [
        "screen.png",
        "stats.json",
        "timeline.svg",
        "timeline.json",
        "compositor.log",
        "fullscreen.log",
        "window.log",
        "explicit.log",
    ] {
        let from = out.join(name);
        if from.exists() {
            std::fs::copy(&from, dest.join(name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    if outcome.code != 0 {
        println!(
            "xtask: run: the demo failed (exit {}); logs in {}",
            outcome.code,
            dest.display()
        );
        if let Ok(log) = std::fs::read_to_string(dest.join("compositor.log")) {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            println!("--- last lines of compositor.log ---");
            for line in tail.iter().rev() {
                println!("{line}");
            }
        }
        return Ok(outcome.code);
    }
    print_summary(&dest)?;
    Ok(0)
}

fn us_to_ms(v: &Value) -> String {
    v.as_f64()
        .map(|us| format!("{:.2} ms", us / 1000.0))
        .unwrap_or_else(|| "n/a".into())
}

/// Prints the human summary of a finished demo from its stats JSON.
fn print_summary(dest: &Path) -> Result<()> {
    let stats: Value = serde_json::from_str(
        &std::fs::read_to_string(dest.join("stats.json"))
            .context("reading the demo's stats.json")?,
    )?;
    let sync = &stats["sync"];
    let kms = &stats["kms"];
    println!();
    println!(
        "syncbridge demo on {} ({}), Linux 6.12 in QEMU",
        kms["device"].as_str().unwrap_or("?"),
        kms["driver"].as_str().unwrap_or("?")
    );
    for o in stats["outputs"].as_array().into_iter().flatten() {
        println!(
            "  output {}: {} frames presented, {} refresh cycles",
            o["name"].as_str().unwrap_or("?"),
            o["frames_presented"],
            o["refresh_cycles"]
        );
    }
    let release = &sync["release"];
    let gpu = &kms["renderer"]["gpu"];
    println!(
        "  renderer {} on {} ({}), native fences {}",
        kms["renderer"]["name"].as_str().unwrap_or("?"),
        gpu["render_node"].as_str().unwrap_or("?"),
        gpu["gl_renderer"].as_str().unwrap_or("?"),
        gpu["native_fences"]
    );
    println!(
        "  frames: {} scanned out directly, {} composited; protocol errors {}",
        kms["direct_scanout_frames"], kms["composited_frames"], stats["protocol_errors_sent"]
    );
    println!(
        "  out-fence releases (a scanned-out buffer released at the commit that replaced it, before the flip): {}",
        kms["early_releases"]
    );
    let lead = &kms["release_lead_time"];
    if lead["count"].as_u64().unwrap_or(0) > 0 {
        println!(
            "    released p50 {}, p99 {} before the page flip that stopped showing them",
            us_to_ms(&lead["p50_us"]),
            us_to_ms(&lead["p99_us"])
        );
    }
    println!(
        "  render-fenced releases: {} implicit (render fence imported into the dma-buf), {} explicit-sync-v1 fenced_release; render fences handed over {}, composited commits with the render fence as IN_FENCE_FD {}",
        release["implicit_fences_imported"],
        release["explicit_fenced_releases"],
        stats["render_sync"]["exported"],
        kms["in_fence"]["plane_commits_with_render_fence"]
    );
    println!(
        "  commits waited on a fence: implicit {}, explicit-sync-v1 {}, syncobj {}",
        sync["commits_waited"]["implicit"],
        sync["commits_waited"]["explicit_sync_v1"],
        sync["commits_waited"]["syncobj"]
    );
    println!(
        "  latch latency (fence signalled -> commit applied): p50 {}, p99 {} over {} commits",
        us_to_ms(&sync["latch_latency"]["p50_us"]),
        us_to_ms(&sync["latch_latency"]["p99_us"]),
        sync["latch_latency"]["count"]
    );
    println!(
        "  compositor CPU {:.1} s in all; {} per frame after the first client commit",
        stats["cpu_s"].as_f64().unwrap_or(0.0),
        stats["cpu_ms_per_frame"]
            .as_f64()
            .map_or("n/a".to_string(), |ms| format!("{ms:.2} ms"))
    );
    println!("  screenshot: {}", dest.join("screen.png").display());
    println!("  stats:      {}", dest.join("stats.json").display());
    println!(
        "  timeline:   {} (six consecutive buffers of the scanned-out client: commit, on the plane, off it with the out-fence, released before the flip)",
        dest.join("timeline.svg").display()
    );
    Ok(())
}
