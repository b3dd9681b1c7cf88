//! Booting the real-kernel test VM with virtme-ng: Debian's 6.12 kernel under QEMU
//! (software emulation: no KVM on these machines), two virtio-gpu cards (a 2D one with two
//! heads, and a virgl one whose GL runs on the host's Mesa through QEMU's gtk display on a
//! private Xvfb, see `gl_display.rs`), vgem, vivid and VKMS (cursor, overlay and writeback
//! on), the host root shared read-only, and `target/vm-scratch` shared read-write.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cmd::{describe_exit, run_streaming_spawned, target_dir, workspace_root};
use crate::gl_display::{self, GlDisplay};
use crate::{install, kernel};

/// Printed by the guest once it is up; its absence means the VM did not boot.
pub const BOOT_MARKER: &str = "SYNCBRIDGE-VM: booted, guest kernel";

/// The guest's DRM cards: virtio-gpu (2D, two heads), virtio-gpu with virgl, vgem, VKMS.
const GUEST_CARDS: u32 = 4;

/// The VM's two virtio-gpu devices, in this order (the 2D one first, so it keeps the lower
/// PCI slot). The virgl one needs a GL display: QEMU's gtk display with GL, on the X
/// server of [`GlDisplay`] (QEMU's sdl display finds no current GL context there).
const QEMU_GPUS: &str =
    "-device virtio-gpu-pci,max_outputs=2 -device virtio-gpu-gl-pci -display gtk,gl=on";

#[derive(Args, Debug, Clone)]
pub struct VmArgs {
    /// Shell command to run inside the guest (as root, in the workspace directory).
    #[arg(long)]
    pub exec: String,
    /// Guest memory.
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Kill the VM after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Extra QEMU options (repeatable).
    #[arg(long = "qemu-opt")]
    pub qemu_opts: Vec<String>,
    /// Stop the VM when no line with one of these markers came for this long: a guest
    /// hung in the kernel (a virtio-gpu request the host's virgl never answers) kills
    /// nothing inside, not even `timeout -k`. `None`: only `timeout` applies.
    #[arg(skip)]
    pub stall: Option<StallLimit>,
}

/// [`VmArgs::stall`]: how long the guest may go without printing a progress marker.
#[derive(Debug, Clone)]
pub struct StallLimit {
    pub limit: Duration,
    /// A line containing one of these is progress.
    pub markers: Vec<String>,
}

/// Kills the VM's process group (`timeout`, vng, QEMU) when the guest made no progress
/// for [`StallLimit::limit`]; its thread ends when the run ends.
struct StallGuard {
    last: Arc<Mutex<Instant>>,
    done: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl StallGuard {
    fn new() -> StallGuard {
        StallGuard {
            last: Arc::new(Mutex::new(Instant::now())),
            done: Arc::new(AtomicBool::new(false)),
            fired: Arc::new(AtomicBool::new(false)),
            thread: Mutex::new(None),
        }
    }

    /// Starts watching process group `pgid` (the VM command, spawned as its leader).
    fn watch(&self, pgid: u32, limit: Duration) {
        let (last, done, fired) = (self.last.clone(), self.done.clone(), self.fired.clone());
        let handle = std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(500));
                let idle = last.lock().map(|t| t.elapsed()).unwrap_or_default();
                if idle < limit {
                    continue;
                }
                fired.store(true, Ordering::Release);
                println!(
                    "xtask: vm: no progress for {}s: stopping the VM (SIGKILL to its process group)",
                    idle.as_secs()
                );
                if let Some(pid) = rustix::process::Pid::from_raw(pgid as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                return;
            }
        });
        if let Ok(mut t) = self.thread.lock() {
            *t = Some(handle);
        }
    }

    fn progress(&self) {
        if let Ok(mut t) = self.last.lock() {
            *t = Instant::now();
        }
    }

    /// Ends the watch; whether it stopped the VM.
    fn finish(self) -> bool {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
        self.fired.load(Ordering::Acquire)
    }
}

/// What a VM run produced.
#[derive(Debug)]
pub struct VmOutcome {
    /// Exit status of the guest command (or of vng/QEMU when the guest never came up);
    /// -1 when vng/QEMU died from a signal.
    pub code: i32,
    /// How vng/QEMU ended, in words (`exit code 0`, `killed by signal 11 (SIGSEGV)`).
    pub ended: String,
    /// The last lines of the Xvfb log (QEMU's GL display; a host GL crash shows there).
    pub xvfb_messages: String,
    /// Time from starting QEMU to the guest's boot marker.
    pub boot_time: Option<Duration>,
    pub total_time: Duration,
}

/// `cargo xtask vm --exec CMD`.
pub fn run(args: VmArgs) -> Result<i32> {
    install::install_all()?;
    let outcome = boot(&args, |_| {})?;
    Ok(outcome.code)
}

/// The scratch directory shared read-write with the guest.
pub fn scratch_dir() -> PathBuf {
    target_dir().join("vm-scratch")
}

fn guest_script(exec: &str) -> String {
    let ws = workspace_root();
    let scratch = scratch_dir();
    format!(
        r#"#!/bin/sh
echo "{BOOT_MARKER} $(uname -r)"
for m in virtio_gpu vgem vivid; do
    modprobe "$m" || echo "SYNCBRIDGE-VM: warning: modprobe $m failed"
done
modprobe vkms enable_cursor=1 enable_overlay=1 enable_writeback=1 || echo "SYNCBRIDGE-VM: warning: modprobe vkms failed"
# Device nodes appear asynchronously; wait (bounded) for the {GUEST_CARDS} DRM cards.
i=0
while [ "$(ls /dev/dri 2>/dev/null | grep -c '^card')" -lt {GUEST_CARDS} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ "$(ls /dev/dri 2>/dev/null | grep -c '^card')" -ge {GUEST_CARDS} ] || echo "SYNCBRIDGE-VM: warning: fewer than {GUEST_CARDS} DRM cards: $(ls /dev/dri 2>/dev/null | tr '\n' ' ')"
# QEMU's gtk display (for the virgl card) lights the 2D card's second head too; the
# suites expect it off, as with `-display none`.
[ -x "{cards}" ] && {{ "{cards}" --single-head || echo "SYNCBRIDGE-VM: warning: the 2D card's second head stays on"; "{cards}"; }}
export SYNCBRIDGE_IN_VM=1
export SYNCBRIDGE_SCRATCH="{scratch}"
export XDG_RUNTIME_DIR=/tmp/xdg-runtime
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
cd "{ws}"
{exec}
"#,
        scratch = scratch.display(),
        ws = ws.display(),
        cards = target_dir().join("debug/drm-cards").display(),
    )
}

/// Boots the VM, runs `args.exec` inside, streams every output line through `on_line`
/// (and to stdout). Fails with a clear message when the VM cannot boot.
pub fn boot(args: &VmArgs, mut on_line: impl FnMut(&str)) -> Result<VmOutcome> {
    let kernel = kernel::prepare().context("preparing the VM kernel")?;
    // The guest's start-up lists DRM nodes by driver name with this small tool.
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "syncbridge-tests",
            "--bin",
            "drm-cards",
        ])
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("building drm-cards failed");
    }
    let scratch = scratch_dir();
    std::fs::create_dir_all(&scratch)?;
    // One script per run: several VMs may share the scratch directory at once.
    let script = scratch.join(format!("guest-{}.sh", std::process::id()));
    std::fs::write(&script, guest_script(&args.exec))?;

    // The virgl card's GL display: a private Xvfb, killed when `display` drops (every
    // return below, error or not).
    let display = GlDisplay::start(scratch.join(format!("xvfb-{}.log", std::process::id())))?;
    let mut qemu_opts = vec![QEMU_GPUS.to_string()];
    qemu_opts.extend(args.qemu_opts.iter().cloned());
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=10")
        .arg(args.timeout.to_string())
        .arg(install::vng_path())
        .env("PATH", install::vng_search_path())
        .env("DISPLAY", display.display())
        // gtk must use X11 (the Xvfb), not a Wayland session the caller may have.
        .env("GDK_BACKEND", "x11")
        .env_remove("WAYLAND_DISPLAY")
        .arg("--run")
        .arg(&kernel.vmlinuz)
        .args(["--disable-kvm", "--disable-microvm"])
        .args(["--memory", &args.memory])
        .args(["--cpus", &args.cpus.to_string()])
        .arg(format!("--rwdir={}", scratch.display()))
        .arg(format!("--qemu-opts={}", qemu_opts.join(" ")))
        .arg("--exec")
        .arg(format!("sh {}", script.display()))
        .current_dir(workspace_root())
        .stdin(std::process::Stdio::null());

    println!(
        "xtask: vm: booting Linux {} (QEMU, no KVM; GL display on Xvfb {})",
        kernel.kver,
        display.display()
    );
    let cpu_before = gl_display::children_cpu_time();
    let start = Instant::now();
    let mut boot_time = None;
    let mut tail: Vec<String> = Vec::new();
    // Its own process group, so the stall guard can stop vng and QEMU with it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let guard = StallGuard::new();
    let stall = args.stall.clone();
    let status = run_streaming_spawned(
        &mut cmd,
        |pid| {
            if let Some(s) = &stall {
                guard.watch(pid, s.limit);
            }
        },
        |line| {
            if stall
                .as_ref()
                .is_some_and(|s| s.markers.iter().any(|m| line.contains(m.as_str())))
            {
                guard.progress();
            }
            if boot_time.is_none() && line.contains(BOOT_MARKER) {
                boot_time = Some(start.elapsed());
            }
            tail.push(line.to_string());
            if tail.len() > 20 {
                tail.remove(0);
            }
            on_line(line);
        },
    )?;
    let stalled = guard.finish();
    let total_time = start.elapsed();
    let code = status.code().unwrap_or(-1);
    let ended = match &args.stall {
        Some(s) if stalled => format!(
            "stopped by xtask after {}s without progress ({})",
            s.limit.as_secs(),
            describe_exit(status)
        ),
        _ => describe_exit(status),
    };
    let xvfb_messages = display.messages_tail(10);
    let _ = std::fs::remove_file(&script);
    // What the VM cost the host: QEMU (with its gtk GL display) and vng, then Xvfb.
    if let (Some(before), Some(after)) = (cpu_before, gl_display::children_cpu_time()) {
        println!(
            "xtask: vm: host CPU: QEMU+vng {:.1}s, Xvfb {:.1}s over {:.1}s",
            after.saturating_sub(before).as_secs_f64(),
            display.cpu_time().unwrap_or_default().as_secs_f64(),
            total_time.as_secs_f64()
        );
    }
    if boot_time.is_none() {
        bail!(
            "the VM did not boot (vng/QEMU ended: {ended} after {:.1}s, no boot marker). \
             QEMU runs with `{QEMU_GPUS}` on Xvfb {} (the virgl card's GL display: a GL or gtk \
             error above comes from there). Last output:\n{}",
            total_time.as_secs_f64(),
            display.display(),
            tail.join("\n")
        );
    }
    if code == 124 || code == 137 {
        bail!("the VM command timed out after {} s", args.timeout);
    }
    Ok(VmOutcome {
        code,
        ended,
        xvfb_messages,
        boot_time,
        total_time,
    })
}
