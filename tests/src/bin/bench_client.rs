//! `bench-client`: the benchmark client of `cargo xtask bench`.
//!
//! One process drives any number of Wayland connections (one xdg toplevel each) from one
//! thread and prints one JSON object of what it measured (to `--out` or stdout). The same
//! binary runs against syncbridge and Weston, so both see identical traffic.
//!
//! Modes:
//! - `frames`: every client redraws on each frame callback (shm or vgem dma-bufs) and asks
//!   for presentation feedback on every commit, for `--warmup-secs` then `--secs`. Reports commit -> presented in frames,
//!   missed refresh cycles, the compositor's CPU time (from `/proc/PID/stat`) per
//!   distinct presentation time seen in the measurement window, and how often each set of
//!   `wp_presentation_feedback` flags came. With `--fullscreen` each toplevel asks to be
//!   fullscreen first and its buffers take the size that configure gives.
//! - `latch`: one client commits a vgem buffer carrying an unsignalled write fence, waits
//!   until the compositor has the commit (a roundtrip), sleeps a known time and signals the
//!   fence. The compositor's `--stats-json` holds the latch latency; the client reports
//!   signal -> presented as a cross-check.
//! - `bounds`: one client commits the same buffer (`--buffers 1`) or rotates buffers as fast
//!   as the compositor takes them (a roundtrip every 256 commits, no frame callbacks), and
//!   samples the compositor's open fds and RSS before, half-way and after.
//! - `stall`: `--clients` clients each commit vgem buffers whose write fences are never
//!   signalled; samples fds/RSS while they are stalled, measures the frame rate of one
//!   healthy shm client meanwhile, then disconnects the stalled clients and samples again.
//!
//! The compositor's pid is `--compositor-pid`, default the parent (syncbridge runs this
//! client as its `-- COMMAND`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use syncbridge_bridge::percentile::nearest_rank;
use syncbridge_tests::bench_scene;
use syncbridge_tests::client::{
    buffers::{Allocator, DmaBuffer},
    BufferId, Commit, CommitId, Presentation, SurfaceId, TestClient,
};
use wayland_client::{protocol::wl_shm, Connection};

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------
// Command line

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "bench-client",
    about = "The benchmark client of `cargo xtask bench`"
)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Frames)]
    mode: Mode,
    /// The compositor's socket (default: $WAYLAND_DISPLAY).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Wayland connections to drive.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Measured seconds (0..=3600).
    #[arg(long, default_value_t = 4.0, value_parser = secs)]
    secs: f64,
    /// Seconds before measuring (0..=3600).
    #[arg(long, default_value_t = 1.0, value_parser = secs)]
    warmup_secs: f64,
    /// Buffers per client (at least 1).
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    buffers: usize,
    /// Buffer size: N (square) or WxH, each clamped to 8..=4096.
    #[arg(long, default_value = "128x128", value_parser = size)]
    size: (i32, i32),
    /// Commits of the `bounds` mode.
    #[arg(long, default_value_t = 1000)]
    commits: u64,
    /// Rounds of the `latch` mode.
    #[arg(long, default_value_t = 50)]
    iterations: u64,
    /// Unsignalled fences per stalled client (at least 1).
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    queue: usize,
    /// What the buffers are.
    #[arg(long = "buffer-kind", value_enum, default_value_t = BufKind::Shm)]
    kind: BufKind,
    /// `frames` mode: ask for fullscreen after the first configure and draw buffers of the
    /// size the fullscreen configure gives (overrides `--size`).
    #[arg(long)]
    fullscreen: bool,
    /// The compositor's pid (default: the parent process).
    #[arg(long)]
    compositor_pid: Option<i32>,
    /// Where the JSON goes (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Frames,
    Latch,
    Bounds,
    Stall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BufKind {
    Shm,
    Vgem,
}

fn secs(v: &str) -> Res<f64> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("seconds in 0..=3600, got {v}")),
    }
}

/// A count where 0 means 1 (as before clap: `--buffers 0` still gives one buffer).
fn at_least_one(v: &str) -> Res<usize> {
    v.parse::<usize>()
        .map(|n| n.max(1))
        .map_err(|e| e.to_string())
}

/// N (square) or WxH, each clamped to 8..=4096.
fn size(v: &str) -> Res<(i32, i32)> {
    let (w, h) = v.split_once('x').unwrap_or((v, v));
    let dim = |d: &str| {
        d.parse::<i32>()
            .map(|d| d.clamp(8, 4096))
            .map_err(|e| e.to_string())
    };
    Ok((dim(w)?, dim(h)?))
}

impl Args {
    /// `--compositor-pid`, else the parent (syncbridge runs this client as its `-- COMMAND`).
    fn compositor_pid(&self) -> i32 {
        self.compositor_pid
            .unwrap_or_else(|| rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get()))
    }
}

// ---------------------------------------------------------------------------------------
// Clocks, /proc and small statistics

/// `clock_gettime(clk)` in ns (the presentation clock, CLOCK_MONOTONIC by default).
fn now_ns(clk: u32) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it, and an
    // unknown clock id makes it fail with EINVAL (then we fall back to 0 below).
    let rc = unsafe { libc::clock_gettime(clk as libc::clockid_t, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// utime + stime of `pid`, in seconds.
fn cpu_s(pid: i32) -> Option<f64> {
    let (user, system) = user_system_s(&format!("/proc/{pid}/stat"))?;
    Some(user + system)
}

/// utime and stime, in seconds, from a `stat` file of procfs (a process's: all its
/// threads; or one thread's, under `task/`).
fn user_system_s(path: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = rustix::param::clock_ticks_per_second() as f64;
    let user = f.get(11)?.parse::<u64>().ok()? as f64 / tick;
    let system = f.get(12)?.parse::<u64>().ok()? as f64 / tick;
    Some((user, system))
}

/// The compositor's CPU time at one instant: user and system, and each thread's total by
/// thread name (threads of one name summed).
struct CpuSample {
    user: f64,
    system: f64,
    threads: BTreeMap<String, f64>,
}

impl CpuSample {
    /// No reading: every figure from it is NaN.
    fn unknown() -> CpuSample {
        CpuSample {
            user: f64::NAN,
            system: f64::NAN,
            threads: BTreeMap::new(),
        }
    }

    /// utime + stime, seconds.
    fn total(&self) -> f64 {
        self.user + self.system
    }

    fn take(pid: i32) -> CpuSample {
        let (user, system) =
            user_system_s(&format!("/proc/{pid}/stat")).unwrap_or((f64::NAN, f64::NAN));
        let mut threads = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in dir.flatten() {
                let path = task.path();
                // A thread name is the program's to choose: keep it a plain JSON key.
                let name: String = std::fs::read_to_string(path.join("comm"))
                    .unwrap_or_default()
                    .trim()
                    .chars()
                    .map(|c| {
                        if c == '"' || c == '\\' || c.is_control() {
                            '_'
                        } else {
                            c
                        }
                    })
                    .collect();
                if let Some((u, s)) = user_system_s(&path.join("stat").to_string_lossy()) {
                    *threads.entry(name).or_default() += u + s;
                }
            }
        }
        CpuSample {
            user,
            system,
            threads,
        }
    }

    /// `{"user_ms": .., "system_ms": .., "threads_ms": {name: ..}}` per output frame over
    /// the window from `self` to `end`. A thread that ended in between is left out; one
    /// started in between counts from zero.
    fn per_frame_json(&self, end: &CpuSample, frames: u64) -> String {
        let per = |d: f64| num(d * 1000.0 / frames.max(1) as f64);
        let threads: Vec<(&str, String)> = end
            .threads
            .iter()
            .map(|(name, t1)| {
                let t0 = self.threads.get(name).copied().unwrap_or(0.0);
                (name.as_str(), per(t1 - t0))
            })
            .collect();
        obj(&[
            ("user_ms", per(end.user - self.user)),
            ("system_ms", per(end.system - self.system)),
            ("threads_ms", obj(&threads)),
        ])
    }
}

fn fds(pid: i32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn proc_sample(pid: i32) -> String {
    obj(&[
        ("fds", opt(fds(pid))),
        ("rss_kib", opt(rss_kib(pid))),
        ("cpu_s", opt(cpu_s(pid))),
    ])
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    let mean = if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    obj(&[
        ("count", v.len().to_string()),
        ("p50", num(nearest_rank(&v, 50).unwrap_or(f64::NAN))),
        ("p99", num(nearest_rank(&v, 99).unwrap_or(f64::NAN))),
        ("mean", num(mean)),
        ("max", num(v.last().copied().unwrap_or(f64::NAN))),
    ])
}

// Hand-written JSON: the tests crate has no serde in its normal dependencies.
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.6}")
    } else {
        "null".into()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

fn obj(pairs: &[(&str, String)]) -> String {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

fn s(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

// ---------------------------------------------------------------------------------------
// One Wayland connection: a `TestClient` (the test suite's recording client) plus what the
// benchmark adds: buffer bookkeeping, commit timestamps, shm content touched per commit.

#[derive(Debug)]
struct Buf {
    /// The `TestClient` buffer.
    id: BufferId,
    /// How often it was attached and committed (busy while more than its releases).
    attached: usize,
    shm_file: Option<(std::fs::File, u64)>,
    dma: Option<DmaBuffer>,
}

#[derive(Debug, Clone, Copy)]
struct Feedback {
    commit: CommitId,
    committed_ns: u64,
    signalled_ns: u64,
}

/// What a `presented` event said about one commit.
#[derive(Debug, Clone, Copy)]
struct Shown {
    /// Presentation time, ns.
    time_ns: u64,
    /// Refresh interval, ns (0: unknown).
    refresh_ns: u64,
    /// `wp_presentation_feedback.kind` bits.
    flags: u32,
}

/// `Some(shown)`, or None when discarded; None while pending.
type Outcome = Option<Option<Shown>>;

/// `wp_presentation_feedback.kind` bits and their names, in protocol order.
const PRESENTATION_KINDS: [(u32, &str); 4] = [
    (0x1, "vsync"),
    (0x2, "hw_clock"),
    (0x4, "hw_completion"),
    (0x8, "zero_copy"),
];

/// The name of a flag set: the kind names joined with `|` ("vsync|hw_clock"), "none" for
/// 0, and any bits the protocol does not define as one hex entry.
fn flags_name(flags: u32) -> String {
    let mut names: Vec<String> = PRESENTATION_KINDS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| (*name).to_string())
        .collect();
    let known = PRESENTATION_KINDS.iter().fold(0, |m, (bit, _)| m | bit);
    if flags & !known != 0 {
        names.push(format!("{:#x}", flags & !known));
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

/// `{"flag set name": count, ...}`, names sorted.
fn flags_json(counts: &BTreeMap<String, u64>) -> String {
    let body: Vec<String> = counts
        .iter()
        .map(|(name, n)| format!("{}:{n}", s(name)))
        .collect();
    format!("{{{}}}", body.join(","))
}

#[derive(Debug)]
struct Client {
    tc: TestClient,
    surface: Option<SurfaceId>,
    buffers: Vec<Buf>,
    /// Frame callbacks asked for (done once the surface has recorded as many).
    frames_wanted: usize,
    feedback: Vec<Feedback>,
    commits: u64,
    /// The current frame callback found no free buffer (frames mode).
    starved: bool,
}

impl Client {
    fn connect(socket: Option<&PathBuf>) -> Res<Client> {
        let conn = match socket {
            Some(path) => {
                let stream = std::os::unix::net::UnixStream::connect(path)
                    .map_err(|e| format!("connect {}: {e}", path.display()))?;
                Connection::from_socket(stream).map_err(|e| format!("connect: {e}"))?
            }
            None => Connection::connect_to_env().map_err(|e| format!("connect: {e}"))?,
        };
        let mut c = Client {
            tc: TestClient::from_connection(conn),
            surface: None,
            buffers: Vec::new(),
            frames_wanted: 0,
            feedback: Vec::new(),
            commits: 0,
            starved: false,
        };
        c.roundtrip()?;
        // The same versions whatever the compositor offers, so syncbridge and Weston see
        // identical traffic.
        let tc = &mut c.tc;
        tc.compositor = tc.bind(4);
        tc.shm = tc.bind(1);
        tc.wm_base = tc.bind(1);
        tc.presentation = tc.bind(1);
        if tc
            .global("zwp_linux_dmabuf_v1")
            .is_some_and(|g| g.version >= 3)
        {
            tc.dmabuf = tc.bind(3);
        }
        c.roundtrip()?;
        Ok(c)
    }

    fn has_global(&self, name: &str) -> bool {
        self.tc.global(name).is_some()
    }

    /// The presentation clock (CLOCK_MONOTONIC until the compositor says otherwise).
    fn clock(&self) -> u32 {
        self.tc
            .rec
            .presentation_clock
            .unwrap_or(libc::CLOCK_MONOTONIC as u32)
    }

    /// Whether the last frame callback asked for has arrived.
    fn frame_done(&self) -> bool {
        self.surface
            .is_none_or(|s| self.tc.rec.surfaces[s].frames.len() >= self.frames_wanted)
    }

    /// Feedback asked for whose outcome has not arrived yet.
    fn feedback_pending(&self) -> bool {
        self.tc.rec.feedback.len() < self.feedback.len()
    }

    /// Every feedback asked for, with its outcome.
    fn outcomes(&self) -> Vec<(Feedback, Outcome)> {
        let arrived: HashMap<CommitId, Presentation> = self
            .tc
            .rec
            .feedback
            .iter()
            .map(|r| (r.commit, r.outcome))
            .collect();
        self.feedback
            .iter()
            .map(|f| {
                let outcome = arrived.get(&f.commit).map(|o| match *o {
                    Presentation::Presented {
                        time,
                        refresh_ns,
                        flags,
                        ..
                    } => Some(Shown {
                        time_ns: time.as_nanos() as u64,
                        refresh_ns: u64::from(refresh_ns),
                        flags,
                    }),
                    Presentation::Discarded => None,
                });
                (*f, outcome)
            })
            .collect()
    }

    fn failed_buffers(&self) -> usize {
        self.tc.rec.buffers.iter().filter(|b| b.failed).count()
    }

    /// A configured xdg toplevel, the `index`-th of the run: its app_id says which, so a
    /// peer compositor can place it where syncbridge does (`bench_scene`).
    fn toplevel(&mut self, index: usize) -> Res<()> {
        self.tc.compositor.as_ref().ok_or("no wl_compositor")?;
        self.tc.wm_base.as_ref().ok_or("no xdg_wm_base")?;
        let surface = self.tc.create_toplevel();
        self.surface = Some(surface);
        // Current from the next commit, before the first buffer maps the window.
        self.tc.surfaces[surface]
            .toplevel
            .set_app_id(bench_scene::app_id(index));
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.tc.rec.surfaces[surface].configures.is_empty() {
            if Instant::now() > deadline {
                return Err("no xdg_surface.configure within 20 s".into());
            }
            self.tc
                .queue
                .blocking_dispatch(&mut self.tc.rec)
                .map_err(|e| format!("dispatch: {e}"))?;
        }
        Ok(())
    }

    /// Asks the configured toplevel to be fullscreen and waits (20 s at most) for an
    /// acked configure with a non-zero size; returns that size.
    fn fullscreen(&mut self) -> Res<(i32, i32)> {
        let surface = self.surface.ok_or("no surface")?;
        let rec = &self.tc.rec.surfaces[surface];
        let (sizes_before, acks_before) = (rec.sizes.len(), rec.configures.len());
        self.tc.surfaces[surface].toplevel.set_fullscreen(None);
        self.flush()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rec = &self.tc.rec.surfaces[surface];
            let since = rec.sizes.get(sizes_before..).unwrap_or_default();
            let acked = rec.configures.len().saturating_sub(acks_before);
            // Each xdg_toplevel.configure ends with an xdg_surface.configure, acked as it
            // arrives: the size counts once its own ack went out.
            let fullscreen = since
                .iter()
                .enumerate()
                .rev()
                .find(|(_, (w, h))| *w > 0 && *h > 0);
            if let Some((_, &size)) = fullscreen.filter(|(i, _)| *i < acked) {
                return Ok(size);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "--fullscreen: no xdg_toplevel.configure with a non-zero size within 20 s of set_fullscreen (sizes configured since: {since:?})"
                ));
            }
            pump(&mut [&mut *self], Duration::from_millis(50))?;
        }
    }

    fn add_shm_buffer(&mut self, (w, h): (i32, i32)) -> Res<usize> {
        self.tc.shm.as_ref().ok_or("no wl_shm")?;
        let len = (w * 4 * h) as u64;
        let fd = rustix::fs::memfd_create("bench-shm", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| format!("memfd_create: {e}"))?;
        let file = std::fs::File::from(fd);
        file.set_len(len).map_err(|e| format!("ftruncate: {e}"))?;
        let id = self
            .tc
            .create_shm_buffer_in(file.as_fd(), w, h, wl_shm::Format::Xrgb8888);
        self.buffers.push(Buf {
            id,
            attached: 0,
            shm_file: Some((file, len)),
            dma: None,
        });
        Ok(self.buffers.len() - 1)
    }

    fn add_vgem_buffer(&mut self, vgem: &Allocator, (w, h): (i32, i32)) -> Res<usize> {
        self.tc.dmabuf.as_ref().ok_or("no zwp_linux_dmabuf_v1")?;
        let buf = vgem
            .allocate(w as u32, h as u32)
            .map_err(|e| format!("vgem buffer: {e}"))?;
        let id = self.tc.create_dmabuf_buffer(&buf);
        self.buffers.push(Buf {
            id,
            attached: 0,
            shm_file: None,
            dma: Some(buf),
        });
        Ok(self.buffers.len() - 1)
    }

    /// The vgem dma-buf of buffer `buf`.
    fn vgem_buffer(&self, buf: usize) -> Res<&DmaBuffer> {
        Ok(self
            .buffers
            .get(buf)
            .and_then(|b| b.dma.as_ref())
            .ok_or("not a vgem buffer")?)
    }

    fn free_buffer(&self) -> Option<usize> {
        self.buffers
            .iter()
            .position(|b| b.attached <= self.tc.rec.releases(b.id))
    }

    /// attach + damage (+ frame callback, + feedback) + commit. Returns the feedback index.
    fn commit(&mut self, buf: usize, frame: bool, feedback: bool) -> Res<Option<usize>> {
        let surface = self.surface.ok_or("no surface")?;
        if feedback {
            self.tc.presentation.as_ref().ok_or("no wp_presentation")?;
        }
        let b = self.buffers.get_mut(buf).ok_or("no such buffer")?;
        if let Some((file, len)) = &b.shm_file {
            // Touch the content so every frame really changes.
            let v = (self.commits as u8).wrapping_mul(37);
            let _ = file.write_at(
                &[v; 64],
                (self.commits * 64) % len.saturating_sub(64).max(1),
            );
        }
        b.attached += 1;
        self.tc.attach(surface, Some(b.id));
        if frame {
            self.frames_wanted += 1;
        }
        let t = now_ns(self.clock());
        let commit = self.tc.commit(
            surface,
            Commit {
                frame,
                feedback,
                explicit_release: false,
            },
        );
        let idx = feedback.then(|| {
            self.feedback.push(Feedback {
                commit,
                committed_ns: t,
                signalled_ns: 0,
            });
            self.feedback.len() - 1
        });
        self.commits += 1;
        self.flush()?;
        Ok(idx)
    }

    fn flush(&self) -> Res<()> {
        self.tc.conn.flush().map_err(|e| format!("flush: {e}"))
    }

    fn roundtrip(&mut self) -> Res<()> {
        self.tc
            .queue
            .roundtrip(&mut self.tc.rec)
            .map(|_| ())
            .map_err(|e| format!("roundtrip: {e}"))
    }
}

/// Reads and dispatches whatever arrives on any of `clients` within `timeout`.
fn pump(clients: &mut [&mut Client], timeout: Duration) -> Res<()> {
    let mut any_pending = false;
    for c in clients.iter_mut() {
        c.flush()?;
        if c.tc
            .queue
            .dispatch_pending(&mut c.tc.rec)
            .map_err(|e| e.to_string())?
            > 0
        {
            any_pending = true;
        }
    }
    let guards: Vec<_> = clients.iter().map(|c| c.tc.queue.prepare_read()).collect();
    if guards.iter().any(Option::is_none) {
        any_pending = true;
    }
    let ready: Vec<bool> = {
        let mut pfds: Vec<PollFd<'_>> = guards
            .iter()
            .flatten()
            .map(|g| PollFd::from_borrowed_fd(g.connection_fd(), PollFlags::IN))
            .collect();
        let ts = if any_pending {
            rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }
        } else {
            rustix::time::Timespec {
                tv_sec: timeout.as_secs() as i64,
                tv_nsec: i64::from(timeout.subsec_nanos()),
            }
        };
        match rustix::event::poll(&mut pfds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        pfds.iter().map(|p| !p.revents().is_empty()).collect()
    };
    let mut r = ready.into_iter();
    for g in guards.into_iter().flatten() {
        if r.next().unwrap_or(false) {
            g.read().map_err(|e| format!("read: {e}"))?;
        }
    }
    for c in clients.iter_mut() {
        c.tc.queue
            .dispatch_pending(&mut c.tc.rec)
            .map_err(|e| format!("dispatch: {e}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Modes

fn connect_clients(a: &Args, n: usize) -> Res<Vec<Client>> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::connect(a.socket.as_ref())?;
        c.toplevel(i)?;
        v.push(c);
    }
    Ok(v)
}

/// `n` buffers of `size` (vgem dma-bufs or shm, as `--buffer-kind` says).
fn add_buffers(
    c: &mut Client,
    a: &Args,
    vgem: Option<&Allocator>,
    n: usize,
    size: (i32, i32),
) -> Res<()> {
    for _ in 0..n {
        match (a.kind, vgem) {
            (BufKind::Vgem, Some(v)) => c.add_vgem_buffer(v, size)?,
            _ => c.add_shm_buffer(size)?,
        };
    }
    c.roundtrip()?;
    if c.failed_buffers() > 0 {
        return Err(format!(
            "{} dma-buf imports failed in the compositor",
            c.failed_buffers()
        ));
    }
    Ok(())
}

fn globals_json(c: &Client) -> String {
    obj(&[
        (
            "linux_drm_syncobj_v1",
            c.has_global("wp_linux_drm_syncobj_manager_v1").to_string(),
        ),
        (
            "explicit_sync_v1",
            c.has_global("zwp_linux_explicit_synchronization_v1")
                .to_string(),
        ),
        ("linux_dmabuf", c.tc.dmabuf.is_some().to_string()),
        ("presentation", c.tc.presentation.is_some().to_string()),
    ])
}

fn mode_frames(a: &Args) -> Res<String> {
    let vgem = (a.kind == BufKind::Vgem).then(Allocator::vgem);
    let mut clients = connect_clients(a, a.clients)?;
    // The buffer sizes used, once each ("WxH").
    let mut sizes_used = BTreeSet::new();
    for c in clients.iter_mut() {
        let size = if a.fullscreen {
            c.fullscreen()?
        } else {
            a.size
        };
        sizes_used.insert(format!("{}x{}", size.0, size.1));
        add_buffers(c, a, vgem.as_ref(), a.buffers, size)?;
    }
    // A fixed time window, not a frame count: every client draws on each frame callback
    // for the whole window, however often the compositor calls it back (an occluded
    // window may be throttled), so the output's load is the same from start to end.
    let pid = a.compositor_pid();
    let clock = clients[0].clock();
    let start = now_ns(clock);
    let t0 = start + (a.warmup_secs * 1e9) as u64;
    let t1 = t0 + (a.secs * 1e9) as u64;
    // The compositor's CPU at the window's start (taken once).
    let mut cpu0: Option<CpuSample> = None;
    let mut starved = 0u64;
    loop {
        let now = now_ns(clock);
        if cpu0.is_none() && now >= t0 {
            cpu0 = Some(CpuSample::take(pid));
        }
        if now >= t1 {
            break;
        }
        for c in clients.iter_mut() {
            if !c.frame_done() {
                continue;
            }
            match c.free_buffer() {
                Some(b) => {
                    c.starved = false;
                    c.commit(b, true, true)?;
                }
                None if !c.starved => {
                    // Counted once per frame callback that found no buffer to draw into.
                    c.starved = true;
                    starved += u64::from(now >= t0);
                }
                None => {}
            }
        }
        let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
        pump(&mut refs, Duration::from_millis(10))?;
    }
    let cpu1 = CpuSample::take(pid);
    let cpu0 = cpu0.unwrap_or_else(CpuSample::unknown);
    // Let the last feedback arrive.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle && clients.iter().any(|c| c.feedback_pending()) {
        let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
        pump(&mut refs, Duration::from_millis(50))?;
    }
    let mut lat_frames = Vec::new();
    let mut lat_ms = Vec::new();
    // Present-to-present of one client's consecutive presented commits.
    let mut p2p_ms = Vec::new();
    let mut presented_times = BTreeSet::new();
    let (mut presented, mut discarded, mut pending) = (0u64, 0u64, 0u64);
    let mut missed = 0u64;
    let mut refresh_ns = 0u64;
    let mut commits_measured = 0u64;
    // Flag-set name -> presented commits in the window that carried it.
    let mut flags_seen: BTreeMap<String, u64> = BTreeMap::new();
    for c in &clients {
        let mut last: Option<u64> = None;
        for (f, outcome) in c.outcomes() {
            let measured = f.committed_ns >= t0 && f.committed_ns < t1;
            commits_measured += u64::from(measured);
            match outcome {
                Some(Some(Shown {
                    time_ns: t,
                    refresh_ns: refresh,
                    flags,
                })) => {
                    if refresh > 0 {
                        refresh_ns = refresh;
                    }
                    if t >= t0 && t <= t1 {
                        presented_times.insert(t);
                    }
                    if measured {
                        presented += 1;
                        *flags_seen.entry(flags_name(flags)).or_default() += 1;
                        let d = t.saturating_sub(f.committed_ns) as f64;
                        lat_ms.push(d / 1e6);
                        if refresh > 0 {
                            lat_frames.push(d / refresh as f64);
                        }
                        if let Some(prev) = last {
                            p2p_ms.push(t.saturating_sub(prev) as f64 / 1e6);
                        }
                        if let (Some(prev), true) = (last, refresh > 0) {
                            let cycles = ((t.saturating_sub(prev)) as f64 / refresh as f64).round();
                            missed += (cycles as u64).saturating_sub(1);
                        }
                    }
                    last = Some(t);
                }
                Some(None) => discarded += u64::from(measured),
                None => pending += u64::from(measured),
            }
        }
    }
    let frames_in_window = presented_times.len() as u64;
    let cpu = cpu1.total() - cpu0.total();
    Ok(obj(&[
        ("mode", s("frames")),
        ("clients", a.clients.to_string()),
        ("buffers", a.buffers.to_string()),
        (
            "buffer_kind",
            s(if a.kind == BufKind::Vgem {
                "vgem"
            } else {
                "shm"
            }),
        ),
        (
            "size",
            s(&sizes_used.into_iter().collect::<Vec<_>>().join(",")),
        ),
        ("fullscreen", a.fullscreen.to_string()),
        ("commits_measured", commits_measured.to_string()),
        ("secs", num(a.secs)),
        ("presented", presented.to_string()),
        ("discarded", discarded.to_string()),
        ("no_feedback", pending.to_string()),
        ("missed_refreshes", missed.to_string()),
        ("frames_without_free_buffer", starved.to_string()),
        ("refresh_ns", refresh_ns.to_string()),
        ("commit_to_present_frames", summary(lat_frames)),
        ("commit_to_present_ms", summary(lat_ms)),
        ("present_to_present_ms", summary(p2p_ms)),
        ("presentation_flags", flags_json(&flags_seen)),
        ("window_s", num((t1.saturating_sub(t0)) as f64 / 1e9)),
        // The window on the presentation clock (`clock`, CLOCK_MONOTONIC on every
        // compositor the bench runs): what `cargo xtask bench --perf` cuts perf's samples
        // (recorded with `-k CLOCK_MONOTONIC`) to.
        ("window_clock", clock.to_string()),
        ("window_start_ns", t0.to_string()),
        ("window_end_ns", t1.to_string()),
        ("output_frames_in_window", frames_in_window.to_string()),
        ("compositor_cpu_s", num(cpu)),
        (
            "cpu_ms_per_frame",
            num(if frames_in_window > 0 {
                cpu * 1000.0 / frames_in_window as f64
            } else {
                f64::NAN
            }),
        ),
        (
            "cpu_split_per_frame",
            cpu0.per_frame_json(&cpu1, frames_in_window),
        ),
        ("globals", globals_json(&clients[0])),
    ]))
}

fn wait_until(c: &mut Client, what: &str, f: impl Fn(&Client) -> bool) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f(c) {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        pump(&mut [&mut *c], Duration::from_millis(50))?;
    }
    Ok(())
}

fn mode_latch(a: &Args) -> Res<String> {
    let vgem = Allocator::vgem();
    let mut clients = connect_clients(a, 1)?;
    let c = &mut clients[0];
    if c.tc.dmabuf.is_none() {
        return Err("latch: the compositor offers no linux-dmabuf".into());
    }
    for _ in 0..3 {
        c.add_vgem_buffer(&vgem, a.size)?;
    }
    c.roundtrip()?;
    c.commit(0, true, false)?;
    let mut sig_to_present_ms = Vec::new();
    let mut delays_us = Vec::new();
    for i in 0..a.iterations {
        wait_until(c, "a frame callback and a free buffer", |c| {
            c.frame_done() && c.free_buffer().is_some()
        })?;
        let Some(b) = c.free_buffer() else {
            continue;
        };
        let fence = vgem
            .attach_write_fence(c.vgem_buffer(b)?)
            .map_err(|e| format!("vgem fence attach: {e}"))?;
        // Presentation feedback where the compositor offers it (the library's minimal
        // compositor does not): only signal -> present needs it.
        let feedback = c.tc.presentation.is_some();
        let fb = c.commit(b, true, feedback)?;
        // The compositor has the commit (and has started its wait) after this.
        c.roundtrip()?;
        let delay = Duration::from_micros(500 + (i * 617) % 2500);
        std::thread::sleep(delay);
        delays_us.push(delay.as_micros() as f64);
        vgem.signal(fence)
            .map_err(|e| format!("vgem fence signal: {e}"))?;
        let t = now_ns(c.clock());
        if let Some(idx) = fb {
            c.feedback[idx].signalled_ns = t;
        }
    }
    wait_until(c, "the last frame", |c| c.frame_done())?;
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle && c.feedback_pending() {
        pump(&mut [&mut *c], Duration::from_millis(20))?;
    }
    let mut refresh = 0;
    for (f, outcome) in c.outcomes() {
        if let Some(Some(shown)) = outcome {
            refresh = shown.refresh_ns;
            sig_to_present_ms.push(shown.time_ns.saturating_sub(f.signalled_ns) as f64 / 1e6);
        }
    }
    Ok(obj(&[
        ("mode", s("latch")),
        ("iterations", a.iterations.to_string()),
        ("refresh_ns", refresh.to_string()),
        ("signal_to_present_ms", summary(sig_to_present_ms)),
        ("signal_delay_us", summary(delays_us)),
    ]))
}

fn mode_bounds(a: &Args) -> Res<String> {
    let vgem = (a.kind == BufKind::Vgem).then(Allocator::vgem);
    let pid = a.compositor_pid();
    let mut clients = connect_clients(a, 1)?;
    let c = &mut clients[0];
    add_buffers(c, a, vgem.as_ref(), a.buffers, a.size)?;
    c.commit(0, false, false)?;
    c.roundtrip()?;
    std::thread::sleep(Duration::from_millis(300));
    let before = proc_sample(pid);
    let start = Instant::now();
    let mut mid = String::from("null");
    for i in 1..=a.commits {
        c.commit((i as usize) % a.buffers, false, false)?;
        if i % 256 == 0 {
            // Bounds the queue: at most 256 commits in flight.
            c.roundtrip()?;
            // Keep releases flowing (no frame callbacks in this mode).
            pump(&mut [&mut *c], Duration::ZERO)?;
        }
        if i == a.commits / 2 {
            c.roundtrip()?;
            mid = proc_sample(pid);
        }
    }
    c.roundtrip()?;
    let secs = start.elapsed().as_secs_f64();
    // Let a frame render and the stats line (`--stats-interval 1`) log with us connected.
    let settle = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < settle {
        pump(&mut [&mut *c], Duration::from_millis(50))?;
    }
    let after = proc_sample(pid);
    Ok(obj(&[
        ("mode", s("bounds")),
        ("commits", a.commits.to_string()),
        ("buffers", a.buffers.to_string()),
        (
            "buffer_kind",
            s(if a.kind == BufKind::Vgem {
                "vgem"
            } else {
                "shm"
            }),
        ),
        ("secs", num(secs)),
        ("commits_per_s", num(a.commits as f64 / secs.max(1e-9))),
        ("before", before),
        ("mid", mid),
        ("after", after),
    ]))
}

fn mode_stall(a: &Args) -> Res<String> {
    let vgem = Allocator::vgem();
    let pid = a.compositor_pid();
    let mut stalled = connect_clients(a, a.clients)?;
    for c in stalled.iter_mut() {
        for _ in 0..a.queue + 1 {
            c.add_vgem_buffer(&vgem, a.size)?;
        }
        c.roundtrip()?;
        // A first, unfenced frame so the surface shows something.
        c.commit(0, false, false)?;
        c.roundtrip()?;
    }
    // The healthy client maps last, so its window is on top of the stalled ones.
    let mut healthy = connect_clients(a, 1)?;
    let h = &mut healthy[0];
    for _ in 0..3 {
        h.add_shm_buffer(a.size)?;
    }
    h.roundtrip()?;
    std::thread::sleep(Duration::from_millis(300));
    let before = proc_sample(pid);
    // Now stall them: each queued commit's buffer carries a write fence nobody signals
    // (vgem signals it after 10 s on its own: everything below happens before that).
    let stall_start = Instant::now();
    let mut fences = 0u64;
    for c in stalled.iter_mut() {
        for q in 1..=a.queue {
            vgem.attach_write_fence(c.vgem_buffer(q)?)
                .map_err(|e| format!("vgem fence attach: {e}"))?;
            fences += 1;
            c.commit(q, false, false)?;
        }
    }
    for c in stalled.iter_mut() {
        c.roundtrip()?;
    }
    let stalled_after_s = stall_start.elapsed().as_secs_f64();
    // The healthy client draws for 2 s meanwhile.
    let t_start = now_ns(h.clock());
    let run = Instant::now();
    let first_fb = h.feedback.len();
    while run.elapsed() < Duration::from_secs(2) {
        if h.frame_done() {
            if let Some(b) = h.free_buffer() {
                h.commit(b, true, true)?;
            }
        }
        pump(&mut [&mut *h], Duration::from_millis(20))?;
    }
    let t_end = now_ns(h.clock());
    let during = proc_sample(pid);
    let outcomes = h.outcomes();
    let presented = outcomes[first_fb..]
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Some(Some(_))))
        .count();
    let mut refresh = 0;
    for (_, outcome) in &outcomes {
        if let Some(Some(shown)) = outcome {
            refresh = shown.refresh_ns;
        }
    }
    let stall_s = stall_start.elapsed().as_secs_f64();
    // The stalled clients go away with their waits pending.
    drop(stalled);
    let settle = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < settle {
        pump(&mut [&mut *h], Duration::from_millis(50))?;
    }
    let after = proc_sample(pid);
    let secs = t_end.saturating_sub(t_start) as f64 / 1e9;
    Ok(obj(&[
        ("mode", s("stall")),
        ("stalled_clients", a.clients.to_string()),
        ("fences_per_client", a.queue.to_string()),
        ("unsignalled_fences", fences.to_string()),
        ("stalled_within_s", num(stalled_after_s)),
        ("stall_measured_until_s", num(stall_s)),
        ("before", before),
        ("during", during),
        ("after_disconnect", after),
        ("healthy_presented", presented.to_string()),
        ("healthy_secs", num(secs)),
        ("healthy_fps", num(presented as f64 / secs.max(1e-9))),
        ("refresh_ns", refresh.to_string()),
    ]))
}

fn main() -> std::process::ExitCode {
    let a = <Args as clap::Parser>::parse();
    let result = (|| {
        let json = match a.mode {
            Mode::Frames => mode_frames(&a),
            Mode::Latch => mode_latch(&a),
            Mode::Bounds => mode_bounds(&a),
            Mode::Stall => mode_stall(&a),
        }?;
        match &a.out {
            Some(path) => std::fs::write(path, format!("{json}\n"))
                .map_err(|e| format!("writing {}: {e}", path.display())),
            None => {
                println!("{json}");
                Ok(())
            }
        }
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-client: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_sets_are_named_by_their_kinds() {
        assert_eq!(flags_name(0), "none");
        assert_eq!(flags_name(0x7), "vsync|hw_clock|hw_completion");
        assert_eq!(flags_name(0xf), "vsync|hw_clock|hw_completion|zero_copy");
        assert_eq!(flags_name(0x8 | 0x30), "zero_copy|0x30");
        let counts = BTreeMap::from([("none".to_string(), 2), ("vsync".to_string(), 5)]);
        assert_eq!(flags_json(&counts), r#"{"none":2,"vsync":5}"#);
    }
}
