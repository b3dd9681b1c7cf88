//! `latch-floor`: the bare wake-up that the compositor's latch latency is measured against
//! (`cargo xtask bench`, scenarios `floor-export` and `floor-poll`).
//!
//! A minimal calloop loop waits, with the bridge's own event source, for the write fence
//! of a vgem buffer, as the compositor waits for an implicit client's commit: `export`
//! exports a sync_file from the dma-buf and watches it ([`SyncFileSource`]), `poll` polls
//! the dma-buf itself ([`DmabufReadySource`]). Another thread plays the client: it sleeps
//! the bench client's delays (0.5 to 3 ms) and signals the fence, while the loop blocks.
//! By default that client is a separate process, as the bench client is to the compositor
//! (`--signaller process`, a child forked at start that shares the vgem file); with
//! `--signaller thread` it is a thread of this process, which makes a cheaper wake-up under
//! the VM's emulated CPU (no switch of address space between signaller and loop).
//! Measured per round: the fence's signal time (SYNC_IOC_FILE_INFO, the kernel's) to the
//! callback. The compositor's latch latency is the same interval up to the applied commit,
//! so the difference is what the compositor's loop adds over this floor.
//!
//! Writes `{"mode", "rounds", "wake_us": {count, p50, p99, mean, max}}` to `--out`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use smithay::reexports::calloop::EventLoop;
use syncbridge_bridge::dmabuf::{export_sync_file, Access};
use syncbridge_bridge::percentile::nearest_rank;
use syncbridge_bridge::source::{DmabufReadySource, SyncFileSource};
use syncbridge_bridge::sync_file::monotonic_now_ns;
use syncbridge_tests::client::buffers::Allocator;
use syncbridge_tests::kernel::vgem::VgemFence;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// Export a sync_file at "commit" time and watch it.
    Export,
    /// Poll the dma-buf.
    Poll,
}

/// Who signals the fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Signaller {
    /// A child process, as the bench client is a process of its own.
    Process,
    /// A thread of this process.
    Thread,
}

#[derive(Debug, Parser)]
#[command(
    name = "latch-floor",
    about = "The bare wake-up under the latch latency"
)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Rounds (one fence each).
    #[arg(long, default_value_t = 200)]
    rounds: u32,
    /// Who signals the fence.
    #[arg(long, value_enum, default_value = "process")]
    signaller: Signaller,
    /// Where the JSON goes.
    #[arg(long)]
    out: PathBuf,
}

/// A child process that signals vgem fences on command. It shares the parent's vgem file
/// (fence ids belong to a file), reads `(fence id, delay in us)` from a pipe, sleeps the
/// delay, signals, and answers one byte on another pipe (0: signalled, 1: the ioctl
/// failed). Both pipes' parent ends are owned here; dropping it closes the command pipe,
/// which ends the child, and reaps it.
struct ChildSignaller {
    cmd: Option<OwnedFd>,
    done: OwnedFd,
    pid: rustix::process::Pid,
}

impl ChildSignaller {
    /// Forks the child. Call it while this process has one thread only.
    fn spawn(vgem: &Allocator) -> Res<Self> {
        let (cmd_r, cmd_w) = rustix::pipe::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (done_r, done_w) = rustix::pipe::pipe().map_err(|e| format!("pipe: {e}"))?;
        // SAFETY: called from `run` before any round, when this process has a single
        // thread, so the child may use everything the parent could (allocator included).
        // The child leaves through `_exit`, running none of the parent's destructors or
        // exit handlers.
        match unsafe { libc::fork() } {
            -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
            0 => {
                drop(cmd_w);
                drop(done_r);
                let code = child_loop(vgem, &cmd_r, &done_w);
                // SAFETY: _exit ends the child at once; nothing of it is used after.
                unsafe { libc::_exit(code) }
            }
            pid => Ok(ChildSignaller {
                cmd: Some(cmd_w),
                done: done_r,
                pid: rustix::process::Pid::from_raw(pid).ok_or("fork gave no pid")?,
            }),
        }
    }

    /// Asks the child to signal `fence` after `delay`.
    fn signal_after(&self, fence: VgemFence, delay: Duration) -> Res<()> {
        let mut msg = [0u8; 12];
        msg[..4].copy_from_slice(&fence.0.to_ne_bytes());
        msg[4..].copy_from_slice(&(delay.as_micros() as u64).to_ne_bytes());
        let cmd = self.cmd.as_ref().ok_or("the signaller is closed")?;
        match rustix::io::write(cmd, &msg) {
            Ok(12) => Ok(()),
            Ok(n) => Err(format!("short write to the signaller: {n} bytes")),
            Err(e) => Err(format!("writing to the signaller: {e}")),
        }
    }

    /// Waits for the child's answer to the last command.
    fn wait_signalled(&self) -> Res<()> {
        let mut answer = [0u8; 1];
        match rustix::io::read(&self.done, &mut answer) {
            Ok(1) if answer[0] == 0 => Ok(()),
            Ok(1) => Err("vgem signal failed in the signaller".into()),
            Ok(_) => Err("the signaller exited".into()),
            Err(e) => Err(format!("reading from the signaller: {e}")),
        }
    }
}

impl Drop for ChildSignaller {
    fn drop(&mut self) {
        drop(self.cmd.take());
        let _ = rustix::process::waitpid(Some(self.pid), rustix::process::WaitOptions::empty());
    }
}

/// The child's side of [`ChildSignaller`]; returns its exit status.
fn child_loop(vgem: &Allocator, cmd: &OwnedFd, done: &OwnedFd) -> i32 {
    let mut msg = [0u8; 12];
    loop {
        match rustix::io::read(cmd, &mut msg) {
            Ok(12) => {}
            // EOF: the parent is done.
            Ok(0) => return 0,
            Ok(_) | Err(_) => return 1,
        }
        let fence = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]);
        let mut us = [0u8; 8];
        us.copy_from_slice(&msg[4..]);
        std::thread::sleep(Duration::from_micros(u64::from_ne_bytes(us)));
        let answer = [u8::from(vgem.signal(VgemFence(fence)).is_err())];
        if rustix::io::write(done, &answer) != Ok(1) {
            return 1;
        }
    }
}

type Res<T> = Result<T, String>;

/// One round: attach an unsignalled write fence, arm the wait, let the other thread signal
/// it after `delay`, and return signal -> callback in microseconds.
fn round(
    vgem: &Allocator,
    buf: &syncbridge_tests::client::buffers::DmaBuffer,
    mode: Mode,
    delay: Duration,
    child: Option<&ChildSignaller>,
) -> Res<f64> {
    let fence = vgem
        .attach_write_fence(buf)
        .map_err(|e| format!("vgem fence: {e}"))?;
    // The signal's kernel time, read afterwards from a sync_file of the same fence.
    let stamp = export_sync_file(buf.fd.as_fd(), Access::Read).map_err(|e| e.to_string())?;
    let mut ev: EventLoop<'_, Option<u64>> = EventLoop::try_new().map_err(|e| e.to_string())?;
    let handle = ev.handle();
    match mode {
        Mode::Export => {
            let watched =
                export_sync_file(buf.fd.as_fd(), Access::Read).map_err(|e| e.to_string())?;
            handle
                .insert_source(SyncFileSource::new(watched), |_, _, woke| {
                    *woke = Some(monotonic_now_ns());
                })
                .map_err(|e| e.error.to_string())?;
        }
        Mode::Poll => {
            let plane = buf.fd.try_clone().map_err(|e| e.to_string())?;
            handle
                .insert_source(DmabufReadySource::new(vec![plane]), |_, _, woke| {
                    *woke = Some(monotonic_now_ns());
                })
                .map_err(|e| e.error.to_string())?;
        }
    }
    let mut woke = None;
    match child {
        Some(child) => {
            child.signal_after(fence, delay)?;
            let give_up = Instant::now() + Duration::from_secs(5);
            while woke.is_none() && Instant::now() < give_up {
                ev.dispatch(Some(Duration::from_secs(1)), &mut woke)
                    .map_err(|e| e.to_string())?;
            }
            child.wait_signalled()?;
            if woke.is_none() {
                return Err("the wait never fired".into());
            }
        }
        None => std::thread::scope(|scope| -> Res<()> {
            let signaller = scope.spawn(|| {
                std::thread::sleep(delay);
                vgem.signal(fence)
            });
            while woke.is_none() {
                ev.dispatch(Some(Duration::from_secs(5)), &mut woke)
                    .map_err(|e| e.to_string())?;
                if woke.is_none() && signaller.is_finished() {
                    // Signalled and dispatched once more: give it one more chance, then fail.
                    ev.dispatch(Some(Duration::from_secs(1)), &mut woke)
                        .map_err(|e| e.to_string())?;
                    if woke.is_none() {
                        return Err("the wait never fired".into());
                    }
                }
            }
            signaller
                .join()
                .map_err(|_| "the signalling thread panicked".to_string())?
                .map_err(|e| format!("vgem signal: {e}"))
        })?,
    }
    let woke = woke.ok_or("no wake-up")?;
    let signalled = stamp
        .signaled_at_ns()
        .map_err(|e| e.to_string())?
        .ok_or("the fence has no signal time")?;
    Ok(woke.saturating_sub(signalled) as f64 / 1e3)
}

fn run(a: &Args) -> Res<serde_json::Value> {
    let vgem = Allocator::vgem();
    let buf = vgem
        .allocate(64, 64)
        .map_err(|e| format!("vgem buffer: {e}"))?;
    let child = match a.signaller {
        Signaller::Process => Some(ChildSignaller::spawn(&vgem)?),
        Signaller::Thread => None,
    };
    // One round unmeasured: the first pays for page faults and the first thread spawn.
    round(
        &vgem,
        &buf,
        a.mode,
        Duration::from_micros(500),
        child.as_ref(),
    )?;
    let mut wake_us = Vec::new();
    for i in 0..a.rounds {
        // The bench client's delays between its commit and its signal.
        let delay = Duration::from_micros(500 + u64::from(i * 617) % 2500);
        wake_us.push(round(&vgem, &buf, a.mode, delay, child.as_ref())?);
    }
    wake_us.sort_by(|x, y| x.total_cmp(y));
    let mean = wake_us.iter().sum::<f64>() / wake_us.len().max(1) as f64;
    Ok(serde_json::json!({
        "mode": match a.mode { Mode::Export => "export", Mode::Poll => "poll" },
        "signaller": match a.signaller { Signaller::Process => "process", Signaller::Thread => "thread" },
        "rounds": a.rounds,
        "wake_us": {
            "count": wake_us.len(),
            "p50": nearest_rank(&wake_us, 50),
            "p99": nearest_rank(&wake_us, 99),
            "mean": mean,
            "max": wake_us.last(),
        },
    }))
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    match run(&a).and_then(|v| {
        std::fs::write(&a.out, v.to_string() + "\n")
            .map_err(|e| format!("{}: {e}", a.out.display()))?;
        Ok(v)
    }) {
        Ok(v) => {
            println!("latch-floor: {v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("latch-floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
