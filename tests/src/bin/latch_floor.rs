//! `latch-floor`: the bare wake-up that the compositor's latch latency is measured against
//! (`cargo xtask bench`, scenarios `floor-export` and `floor-poll`).
//!
//! A minimal calloop loop waits, with the bridge's own event source, for the write fence
//! of a vgem buffer, as the compositor waits for an implicit client's commit: `export`
//! exports a sync_file from the dma-buf and watches it ([`SyncFileSource`]), `poll` polls
//! the dma-buf itself ([`DmabufReadySource`]). Another thread plays the client: it sleeps
//! the bench client's delays (0.5 to 3 ms) and signals the fence, while the loop blocks.
//! Measured per round: the fence's signal time (SYNC_IOC_FILE_INFO, the kernel's) to the
//! callback. The compositor's latch latency is the same interval up to the applied commit,
//! so the difference is what the compositor's loop adds over this floor.
//!
//! Writes `{"mode", "rounds", "wake_us": {count, p50, p99, mean, max}}` to `--out`.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use smithay::reexports::calloop::EventLoop;
use syncbridge_bridge::dmabuf::{export_sync_file, Access};
use syncbridge_bridge::percentile::nearest_rank;
use syncbridge_bridge::source::{DmabufReadySource, SyncFileSource};
use syncbridge_bridge::sync_file::monotonic_now_ns;
use syncbridge_tests::client::buffers::Allocator;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// Export a sync_file at "commit" time and watch it.
    Export,
    /// Poll the dma-buf.
    Poll,
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
    /// Where the JSON goes.
    #[arg(long)]
    out: PathBuf,
}

type Res<T> = Result<T, String>;

/// One round: attach an unsignalled write fence, arm the wait, let the other thread signal
/// it after `delay`, and return signal -> callback in microseconds.
fn round(
    vgem: &Allocator,
    buf: &syncbridge_tests::client::buffers::DmaBuffer,
    mode: Mode,
    delay: Duration,
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
    std::thread::scope(|scope| -> Res<()> {
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
    })?;
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
    // One round unmeasured: the first pays for page faults and the first thread spawn.
    round(&vgem, &buf, a.mode, Duration::from_micros(500))?;
    let mut wake_us = Vec::new();
    for i in 0..a.rounds {
        // The bench client's delays between its commit and its signal.
        let delay = Duration::from_micros(500 + u64::from(i * 617) % 2500);
        wake_us.push(round(&vgem, &buf, a.mode, delay)?);
    }
    wake_us.sort_by(|x, y| x.total_cmp(y));
    let mean = wake_us.iter().sum::<f64>() / wake_us.len().max(1) as f64;
    Ok(serde_json::json!({
        "mode": match a.mode { Mode::Export => "export", Mode::Poll => "poll" },
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
