//! The demo client of `cargo xtask run`: an animated window whose buffers are real
//! dma-bufs, synchronized the way a GPU client would be.
//!
//! ```text
//! demo-client --mode implicit|syncobj|shm [--frames N] [--fence-delay-ms MS]
//!             [--color RRGGBB] [--size WxH]
//! ```
//!
//! - `implicit`: vgem buffers. Every frame gets a vgem write fence that signals
//!   `--fence-delay-ms` after the commit (a GPU that finishes late). The compositor must
//!   wait for it (exported sync_file) and, on release, leaves its own read fence in the
//!   buffer, which this client honours (it waits for `export(Write)`) before drawing again.
//! - `syncobj`: linux-drm-syncobj-v1 with a timeline on virtio_gpu's render node: the
//!   acquire point is signalled late, and the buffer is reused only after its release
//!   point signalled.
//! - `shm`: plain wl_shm, for desktops without dma-bufs.
//!
//! Prints one line per second and a summary at exit; exits non-zero if the compositor
//! never presented a frame.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use syncbridge_bridge::dmabuf::{export_sync_file, Access};
use syncbridge_bridge::syncobj::{SyncobjDevice, Timeline, WaitMode};
use syncbridge_tests::client::buffers::{Allocator, DmaBuffer};
use syncbridge_tests::client::harness::virtio_render_node;
use syncbridge_tests::client::{BufferId, Commit, SurfaceId, TestClient};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Implicit,
    Syncobj,
    Shm,
}

#[derive(Debug, clap::Parser)]
#[command(name = "demo-client", about = "The demo client of `cargo xtask run`")]
struct Args {
    /// How the buffers are synchronized.
    #[arg(long, value_enum, default_value_t = Mode::Implicit)]
    mode: Mode,
    /// Frames to draw before exiting (default: until the compositor goes away).
    #[arg(long, default_value_t = u64::MAX, hide_default_value = true)]
    frames: u64,
    /// How long after the commit each frame's fence signals.
    #[arg(long = "fence-delay-ms", default_value = "30", value_parser = millis)]
    fence_delay: Duration,
    /// Fill colour, RRGGBB (a leading # is allowed).
    #[arg(long, default_value = "3070c0", value_parser = color)]
    color: u32,
    /// Window size, WxH.
    #[arg(long, default_value = "320x240", value_parser = size)]
    size: (u32, u32),
}

fn millis(v: &str) -> Result<Duration, String> {
    v.parse()
        .map(Duration::from_millis)
        .map_err(|e| format!("{e}"))
}

fn color(v: &str) -> Result<u32, String> {
    u32::from_str_radix(v.trim_start_matches('#'), 16).map_err(|e| format!("{e}"))
}

fn size(v: &str) -> Result<(u32, u32), String> {
    let (w, h) = v.split_once('x').ok_or("WxH")?;
    Ok((
        w.parse().map_err(|e| format!("{e}"))?,
        h.parse().map_err(|e| format!("{e}"))?,
    ))
}

fn socket_path() -> Result<PathBuf, String> {
    let display = std::env::var("WAYLAND_DISPLAY").map_err(|_| "WAYLAND_DISPLAY is not set")?;
    if display.starts_with('/') {
        return Ok(PathBuf::from(display));
    }
    let dir = std::env::var("XDG_RUNTIME_DIR").map_err(|_| "XDG_RUNTIME_DIR is not set")?;
    Ok(PathBuf::from(dir).join(display))
}

/// Fills `pixels` (XRGB8888 rows of `stride` bytes) with `color` and a lighter bar that
/// moves with `frame`, so consecutive frames differ.
fn paint(pixels: &mut [u8], width: u32, height: u32, stride: u32, color: u32, frame: u64) {
    let bar_w = (width / 8).max(1);
    let bar_x = ((frame * 4) % u64::from(width)) as u32;
    let light = color | 0x00_40_40_40;
    for y in 0..height {
        let row = (y * stride) as usize;
        for x in 0..width {
            let in_bar = x >= bar_x && x < bar_x + bar_w;
            let px = if in_bar { light } else { color };
            let at = row + (x * 4) as usize;
            if let Some(dst) = pixels.get_mut(at..at + 4) {
                dst.copy_from_slice(&(px | 0xff00_0000).to_le_bytes());
            }
        }
    }
}

/// Paints into a dma-buf through a shared mapping.
fn paint_dmabuf(buf: &DmaBuffer, color: u32, frame: u64) -> Result<(), String> {
    let len = (buf.stride * buf.height) as usize;
    // SAFETY: mapping a dma-buf fd we own, shared and writable, for `len` bytes (its
    // allocation is stride*height); the mapping is unmapped below before returning and
    // nothing else in this process aliases it.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            buf.fd.as_fd(),
            0,
        )
    }
    .map_err(|e| format!("mmap dma-buf: {e}"))?;
    // SAFETY: `ptr` is a valid mapping of `len` bytes created above.
    let pixels = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) };
    paint(pixels, buf.width, buf.height, buf.stride, color, frame);
    // SAFETY: unmapping exactly the mapping created above; `pixels` is not used after.
    unsafe { rustix::mm::munmap(ptr, len) }.map_err(|e| format!("munmap: {e}"))?;
    Ok(())
}

struct Demo {
    client: TestClient,
    surface: SurfaceId,
    args: Args,
    presented: u64,
    discarded: u64,
    commits: Vec<u64>,
    started: Instant,
}

impl Demo {
    /// Waits for the frame callback of the last commit (bounded), counting feedback.
    fn wait_frame(&mut self) -> Result<(), String> {
        let s = self.surface;
        let before = self
            .client
            .rec
            .surfaces
            .get(s)
            .map_or(0, |r| r.frames.len());
        let ok = self
            .client
            .blocking_dispatch_until(Duration::from_secs(5), |rec| {
                rec.surfaces.get(s).map_or(0, |r| r.frames.len()) > before
            });
        if let Some(err) = self.client.protocol_error() {
            return Err(format!("protocol error: {err:?}"));
        }
        if !ok {
            return Err("no frame callback within 5 s".into());
        }
        self.count_feedback();
        Ok(())
    }

    fn count_feedback(&mut self) {
        self.presented = self
            .commits
            .iter()
            .filter(|c| self.client.rec.presented(**c).is_some())
            .count() as u64;
        self.discarded = self
            .commits
            .iter()
            .filter(|c| self.client.rec.outcome(**c).is_some())
            .count() as u64
            - self.presented;
    }

    /// Waits until `buffer` was released as often as it was committed (bounded).
    fn wait_released(&mut self, buffer: BufferId, uses: usize) -> Result<(), String> {
        let ok = self
            .client
            .blocking_dispatch_until(Duration::from_secs(5), |rec| {
                rec.buffers.get(buffer).map_or(0, |b| b.releases.len()) >= uses
            });
        if ok {
            Ok(())
        } else {
            Err(format!("buffer {buffer} not released within 5 s"))
        }
    }

    fn commit(&mut self, buffer: BufferId) {
        self.client.attach(self.surface, Some(buffer));
        let opts = Commit {
            frame: true,
            feedback: true,
            ..Commit::default()
        };
        let c = self.client.commit(self.surface, opts);
        self.commits.push(c);
        self.client.flush();
    }

    fn progress(&self, frame: u64, last_print: &mut Instant) {
        if last_print.elapsed() >= Duration::from_secs(1) {
            *last_print = Instant::now();
            println!(
                "demo-client[{:?}]: {} frames committed, {} presented, {:.1} s",
                self.args.mode,
                frame,
                self.presented,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

const BUFFERS: usize = 3;

fn run_implicit(demo: &mut Demo) -> Result<(), String> {
    let alloc = Allocator::vgem();
    let (w, h) = demo.args.size;
    let mut bufs = Vec::new();
    for _ in 0..BUFFERS {
        let b = alloc
            .allocate(w, h)
            .map_err(|e| format!("vgem buffer: {e}"))?;
        let id = demo.client.create_dmabuf_buffer(&b);
        bufs.push((b, id, 0usize));
    }
    let mut last_print = Instant::now();
    let mut frame = 0;
    while frame < demo.args.frames {
        let i = (frame % BUFFERS as u64) as usize;
        let (id, uses) = (bufs[i].1, bufs[i].2);
        demo.wait_released(id, uses)?;
        // Honour the compositor's read fence left in the buffer at release.
        export_sync_file(bufs[i].0.fd.as_fd(), Access::Write)
            .and_then(|f| f.wait(Duration::from_secs(2)).map_err(Into::into))
            .map_err(|e| format!("waiting for the compositor's read fence: {e}"))?;
        paint_dmabuf(&bufs[i].0, demo.args.color, frame)?;
        let fence = alloc
            .attach_write_fence(&bufs[i].0)
            .map_err(|e| format!("vgem fence: {e}"))?;
        demo.commit(id);
        bufs[i].2 += 1;
        // The "GPU" finishes late: the compositor must keep showing the previous frame.
        std::thread::sleep(demo.args.fence_delay);
        alloc
            .signal(fence)
            .map_err(|e| format!("vgem signal: {e}"))?;
        demo.wait_frame()?;
        frame += 1;
        demo.progress(frame, &mut last_print);
    }
    Ok(())
}

fn run_syncobj(demo: &mut Demo) -> Result<(), String> {
    let node = virtio_render_node();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node)
        .map_err(|e| format!("{}: {e}", node.display()))?;
    let device = SyncobjDevice::new(std::os::fd::OwnedFd::from(file))
        .map_err(|e| format!("syncobj device: {e}"))?;
    let timeline: Timeline = device
        .create_timeline()
        .map_err(|e| format!("timeline: {e}"))?;
    let fd = timeline
        .export_fd()
        .map_err(|e| format!("timeline fd: {e}"))?;
    let wl_timeline = demo.client.import_timeline(fd.as_fd());
    demo.client.syncobj_surface(demo.surface);
    let alloc = Allocator::virtio_dumb();
    let (w, h) = demo.args.size;
    let mut bufs = Vec::new();
    for _ in 0..BUFFERS {
        let b = alloc
            .allocate(w, h)
            .map_err(|e| format!("dumb buffer: {e}"))?;
        let id = demo.client.create_dmabuf_buffer(&b);
        bufs.push((b, id, 0u64));
    }
    let mut last_print = Instant::now();
    let mut frame = 0u64;
    while frame < demo.args.frames {
        let i = (frame % BUFFERS as u64) as usize;
        let release_of_last_use = bufs[i].2;
        if release_of_last_use > 0 {
            timeline
                .wait(
                    release_of_last_use,
                    WaitMode::Signaled,
                    Duration::from_secs(5),
                )
                .map_err(|e| format!("release point {release_of_last_use}: {e}"))?;
        }
        paint_dmabuf(&bufs[i].0, demo.args.color, frame)?;
        let acquire = 2 * frame + 1;
        let release = 2 * frame + 2;
        demo.client
            .set_acquire_point(demo.surface, &wl_timeline, acquire);
        demo.client
            .set_release_point(demo.surface, &wl_timeline, release);
        demo.commit(bufs[i].1);
        bufs[i].2 = release;
        std::thread::sleep(demo.args.fence_delay);
        timeline
            .signal(acquire)
            .map_err(|e| format!("signal acquire point {acquire}: {e}"))?;
        demo.wait_frame()?;
        frame += 1;
        demo.progress(frame, &mut last_print);
    }
    Ok(())
}

fn run_shm(demo: &mut Demo) -> Result<(), String> {
    let (w, h) = demo.args.size;
    let mut bufs = Vec::new();
    for _ in 0..BUFFERS {
        bufs.push((demo.client.create_shm_buffer(w as i32, h as i32), 0usize));
    }
    let mut last_print = Instant::now();
    let mut frame = 0;
    while frame < demo.args.frames {
        let i = (frame % BUFFERS as u64) as usize;
        demo.wait_released(bufs[i].0, bufs[i].1)?;
        demo.commit(bufs[i].0);
        bufs[i].1 += 1;
        demo.wait_frame()?;
        frame += 1;
        demo.progress(frame, &mut last_print);
    }
    Ok(())
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let path = match socket_path() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("demo-client: {e}");
            std::process::exit(2);
        }
    };
    let mut client = match TestClient::connect(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo-client: connecting to {}: {e}", path.display());
            std::process::exit(1);
        }
    };
    let surface = client.create_toplevel();
    client.blocking_roundtrip();
    let mut demo = Demo {
        client,
        surface,
        args,
        presented: 0,
        discarded: 0,
        commits: Vec::new(),
        started: Instant::now(),
    };
    let result = match demo.args.mode {
        Mode::Implicit => run_implicit(&mut demo),
        Mode::Syncobj => run_syncobj(&mut demo),
        Mode::Shm => run_shm(&mut demo),
    };
    // Collect the feedback still in flight.
    let _ = demo
        .client
        .blocking_dispatch_until(Duration::from_millis(200), |_| false);
    demo.count_feedback();
    println!(
        "demo-client[{:?}]: done: {} commits, {} presented, {} discarded, {:.1} s",
        demo.args.mode,
        demo.commits.len(),
        demo.presented,
        demo.discarded,
        demo.started.elapsed().as_secs_f64()
    );
    let code = match result {
        // A bounded demo ends with the compositor going away under a running client.
        Err(e) if demo.presented > 0 => {
            println!("demo-client[{:?}]: stopped: {e}", demo.args.mode);
            0
        }
        Err(e) => {
            eprintln!("demo-client[{:?}]: {e}", demo.args.mode);
            1
        }
        Ok(()) if demo.presented == 0 => 1,
        Ok(()) => 0,
    };
    std::process::exit(code);
}
