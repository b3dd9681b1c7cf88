//! Hostile clients on a real kernel (run inside the test VM by `cargo xtask test`,
//! `--vm-filter vm_hostile`): one client must not be able to make the compositor hold
//! unbounded fds, fences or timelines, nor take it down by exhausting its fds, and the
//! other clients keep their frames meanwhile.
//!
//! Figures are printed as `VM-HOSTILE-FIGURES {json}` lines.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use syncbridge_bridge::{SyncobjDevice, Timeline};
use syncbridge_protocols::{Limits, SyncStats};
use syncbridge_tests::client::buffers::{Allocator, DmaBuffer};
use syncbridge_tests::client::harness::{
    virtio_render_node, virtio_syncobj_device, ClientId, Harness,
};
use syncbridge_tests::client::{BufferId, Commit, Presentation, SurfaceId, TestClient};
use syncbridge_tests::compositor_bin::{eventually, start_syncbridge, Options, Running};
use syncbridge_tests::kernel::require_vm;
use syncbridge_tests::kernel::vgem::FenceAccess;
use wayland_client::backend::WaylandError;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1;

const W: u32 = 64;
const H: u32 = 64;

/// Counts the bytes allocated by the current thread while [`counting`] runs.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

fn note(size: usize) {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATED.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting only reads a
// const-initialized thread-local and bumps an atomic (no allocation, no panic).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` and returns what it returned and the bytes this thread allocated meanwhile.
fn counting<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATED.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATED.load(Ordering::Relaxed) - before)
}

fn figures(test: &str, value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "VM-HOSTILE-FIGURES {}",
        serde_json::json!({ "test": test, "figures": value })
    );
    let _ = out.flush();
}

fn sync_stats(h: &mut Harness) -> SyncStats {
    h.state().sync_bridge.stats()
}

fn set_limits(h: &mut Harness, f: impl FnOnce(&mut Limits)) {
    let mut limits = h.state().sync_bridge.config().limits.clone();
    f(&mut limits);
    h.state().sync_bridge.set_limits(limits);
}

/// A mapped toplevel of client `c` showing an unfenced vgem buffer.
fn mapped_surface(h: &mut Harness, c: ClientId, vgem: &Allocator) -> SurfaceId {
    let s = h.create_toplevel(c);
    let buf = vgem.allocate(W, H).expect("buffer");
    let b = h.client(c).create_dmabuf_buffer(&buf);
    h.client(c).attach(s, Some(b));
    let k = h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    let tick = h.frame();
    assert_eq!(h.client(c).rec.presented(k), Some(tick.seq));
    s
}

/// The bystander commits a fresh frame and it is presented at the next refresh cycle.
fn bystander_still_presents(h: &mut Harness, c: ClientId, s: SurfaceId) {
    let b = h.client(c).create_shm_buffer(W as i32, H as i32);
    h.client(c).attach(s, Some(b));
    let k = h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    let tick = h.frame();
    assert_eq!(h.client(c).rec.presented(k), Some(tick.seq));
}

fn assert_no_memory(err: Option<WaylandError>) {
    match err {
        Some(WaylandError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOMEM), "{e:?}"),
        other => panic!("expected wl_display.error(no_memory), got {other:?}"),
    }
}

// ------------------------------------------------------------- in-process, small limits

/// Explicit-sync-v1 acquire fences on many surfaces (one per surface, far below the
/// per-surface wait bound) add up on the client's budget; the request that would go over
/// it disconnects the client, and everything it held is given back.
#[test]
fn acquire_fences_spread_over_surfaces_hit_the_client_fd_budget() {
    require_vm();
    let mut h = Harness::vm();
    set_limits(&mut h, |l| l.max_fds_per_client = 8);
    let vgem = Allocator::vgem();
    let bystander = h.add_client();
    let bs = mapped_surface(&mut h, bystander, &vgem);

    let c = h.add_client();
    let fence_buf = vgem.allocate(16, 16).expect("scratch buffer");
    let fence = vgem.attach_write_fence(&fence_buf).expect("vgem fence");
    let sf = fence_buf.export_write_fences().expect("export");
    let buf = vgem.allocate(W, H).expect("buffer");
    let b = h.client(c).create_dmabuf_buffer(&buf);
    let mut surfaces = 0;
    for _ in 0..12 {
        let s = h.create_toplevel(c);
        h.client(c).explicit_surface(s);
        h.client(c).attach(s, Some(b));
        h.client(c).set_acquire_fence(s, sf.as_fd());
        h.client(c).commit(s, Commit::default());
        h.client(c).flush();
        h.pump();
        if sync_stats(&mut h).clients_killed_for_budget > 0 {
            break;
        }
        surfaces += 1;
    }
    assert_no_memory(h.until_dead(c));
    assert_eq!(
        surfaces, 8,
        "the 9th held fence is one over the budget of 8"
    );
    for _ in 0..5 {
        h.pump();
    }
    let st = sync_stats(&mut h);
    assert_eq!(st.clients_killed_for_budget, 1, "{st:?}");
    assert_eq!(st.pending_waits, 0, "{st:?}");
    assert_eq!(st.fds_held, 0, "{st:?}");
    assert_eq!(st.client_fds_held_peak, 8, "{st:?}");
    bystander_still_presents(&mut h, bystander, bs);
    vgem.signal(fence).expect("signal");
}

/// Item 9 of issue 12: the timeline cap counts every imported timeline that is still
/// referenced, including ones whose protocol object was destroyed while a queued commit
/// still waits on (or will release) a point on them.
#[test]
fn destroyed_timelines_held_by_a_queued_commit_count_against_the_timeline_cap() {
    require_vm();
    let mut h = Harness::vm();
    set_limits(&mut h, |l| l.max_timelines_per_client = 2);
    let dev = virtio_syncobj_device();
    let vgem = Allocator::vgem();
    let c = h.add_client();
    let s = h.create_toplevel(c);
    h.client(c).syncobj_surface(s);
    let a = dev.create_timeline().expect("timeline");
    let b = dev.create_timeline().expect("timeline");
    let ta = h
        .client(c)
        .import_timeline(a.export_fd().expect("fd").as_fd());
    let tb = h
        .client(c)
        .import_timeline(b.export_fd().expect("fd").as_fd());
    let buf = vgem.allocate(W, H).expect("buffer");
    let bb = h.client(c).create_dmabuf_buffer(&buf);
    h.client(c).attach(s, Some(bb));
    h.client(c).set_acquire_point(s, &ta, 1);
    h.client(c).set_release_point(s, &tb, 1);
    h.client(c).commit(s, Commit::default());
    h.roundtrip(c);
    assert_eq!(sync_stats(&mut h).pending_waits, 1, "the commit waits on a");
    ta.destroy();
    tb.destroy();
    h.roundtrip(c);
    // Both timelines are still held (the wait on a, the queued release point on b).
    let other = dev.create_timeline().expect("timeline");
    h.client(c)
        .import_timeline(other.export_fd().expect("fd").as_fd());
    let err = h
        .until_protocol_error(c)
        .expect("a third timeline is over the cap of 2");
    assert_eq!(
        err.object_interface, "wp_linux_drm_syncobj_manager_v1",
        "{err:?}"
    );
    assert_eq!(err.code, 1, "invalid_timeline: {err:?}");

    // Once nothing holds them, a new client can import up to the cap again.
    let c2 = h.add_client();
    for _ in 0..2 {
        let t = dev.create_timeline().expect("timeline");
        h.client(c2)
            .import_timeline(t.export_fd().expect("fd").as_fd());
    }
    h.roundtrip(c2);
    assert!(h.client(c2).protocol_error().is_none());
}

/// Item 9 of issue 12: a client can merge thousands of fences into one acquire sync_file;
/// when the wait fires, reading its signal time must not allocate per fence (it did:
/// `SyncFile::info` for every fired wait, ~170 KiB for 1024 fences, megabytes for more).
#[test]
fn a_many_fence_acquire_sync_file_costs_no_per_fence_allocation_when_it_fires() {
    require_vm();
    const FENCES: usize = 1024;
    let mut h = Harness::vm();
    let vgem = Allocator::vgem();
    let c = h.add_client();
    let s = h.create_toplevel(c);
    h.client(c).explicit_surface(s);
    // One vgem buffer with 1024 read fences, each on its own fence context, exported as
    // one sync_file of 1024 fences.
    let fence_buf = vgem.allocate(16, 16).expect("scratch buffer");
    let vb = fence_buf.vgem.as_ref().expect("a vgem buffer");
    let fences: Vec<_> = (0..FENCES)
        .map(|_| {
            vgem.as_vgem()
                .attach(vb, FenceAccess::Read)
                .expect("read fence")
        })
        .collect();
    let sf = syncbridge_bridge::dmabuf::export_sync_file(
        fence_buf.fd.as_fd(),
        syncbridge_bridge::dmabuf::Access::Write,
    )
    .expect("export every fence");
    assert_eq!(sf.fence_count().expect("FILE_INFO"), FENCES as u32);
    let buf = vgem.allocate(W, H).expect("buffer");
    let b = h.client(c).create_dmabuf_buffer(&buf);
    h.client(c).attach(s, Some(b));
    h.client(c).set_acquire_fence(s, sf.as_fd());
    let k = h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    assert_eq!(sync_stats(&mut h).pending_waits, 1);
    for f in fences {
        vgem.signal(f).expect("signal");
    }
    // The wait fires in one of these dispatches; nothing else of size happens in them.
    let (fired, bytes) =
        counting(|| h.pump_until(500, |h| h.state().sync_bridge.stats().pending_waits == 0));
    assert!(fired, "the wait never fired");
    let tick = h.frame();
    assert_eq!(h.client(c).rec.presented(k), Some(tick.seq));
    figures(
        "many_fence_sync_file",
        serde_json::json!({ "fences": FENCES, "bytes_allocated_while_firing": bytes }),
    );
    assert!(
        bytes < 32 * 1024,
        "{bytes} bytes allocated while a {FENCES}-fence wait fired"
    );
}

// ------------------------------------------------------------- the real binary, stressed

/// A client on its own thread that commits a shm frame, waits for its presentation, and
/// repeats until told to stop; returns when each frame was presented.
struct Bystander {
    stop: Arc<AtomicBool>,
    frames: Arc<AtomicU64>,
    thread: JoinHandle<Result<Vec<Instant>, String>>,
}

impl Bystander {
    fn start(socket: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let frames = Arc::new(AtomicU64::new(0));
        let count = frames.clone();
        let thread = std::thread::spawn(move || {
            let mut c = TestClient::connect(&socket).map_err(|e| e.to_string())?;
            let s = c.create_toplevel();
            c.blocking_roundtrip();
            let bufs = [
                c.create_shm_buffer(W as i32, H as i32),
                c.create_shm_buffer(W as i32, H as i32),
            ];
            let mut presented = Vec::new();
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                c.attach(s, Some(bufs[i % 2]));
                let k = c.commit(s, Commit::frame_and_feedback());
                i += 1;
                if !c.blocking_dispatch_until(Duration::from_secs(5), |r| r.outcome(k).is_some()) {
                    return Err(format!(
                        "frame {i} got no presentation feedback in 5 s (error: {:?})",
                        c.protocol_error()
                    ));
                }
                if let Some(Presentation::Presented { .. }) = c.rec.outcome(k) {
                    presented.push(Instant::now());
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(presented)
        });
        Self {
            stop,
            frames,
            thread,
        }
    }

    /// Waits until it presented `n` frames (it is connected and has all its buffers).
    fn wait_for_frames(&self, n: u64) {
        assert!(
            eventually(Duration::from_secs(60), || self
                .frames
                .load(Ordering::Relaxed)
                >= n),
            "the bystander never presented {n} frames"
        );
    }

    fn finish(self) -> Vec<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(Ok(presented)) => presented,
            Ok(Err(e)) => panic!("the bystander failed: {e}"),
            Err(_) => panic!("the bystander thread panicked"),
        }
    }
}

fn frames_in(frames: &[Instant], from: Instant, to: Instant) -> usize {
    frames.iter().filter(|&&t| t >= from && t < to).count()
}

fn rate(frames: &[Instant], from: Instant, to: Instant) -> f64 {
    frames_in(frames, from, to) as f64 / to.duration_since(from).as_secs_f64().max(1e-3)
}

/// Frames the bystander must get in a window for it to count as "still presenting". A
/// count, not a rate: the rate is a figure (printed), and on a loaded machine it halves;
/// a compositor that froze or exited presents none.
const MIN_BYSTANDER_FRAMES: usize = 3;

/// A client whose commits wait on a syncobj acquire point that never materializes.
struct HostileClient {
    c: TestClient,
    acq: WpLinuxDrmSyncobjTimelineV1,
    rel: WpLinuxDrmSyncobjTimelineV1,
    buffer: BufferId,
    point: u64,
    /// The kernel objects behind the protocol objects, kept until the client is dropped.
    _kernel: (Timeline, Timeline, DmaBuffer),
}

impl HostileClient {
    fn connect(rb: &Running, dev: &SyncobjDevice, vgem: &Allocator) -> Self {
        let mut c = TestClient::connect(&rb.socket).expect("hostile client connects");
        let acquire = dev.create_timeline().expect("timeline");
        let release = dev.create_timeline().expect("timeline");
        let acq = c.import_timeline(acquire.export_fd().expect("fd").as_fd());
        let rel = c.import_timeline(release.export_fd().expect("fd").as_fd());
        let buf = vgem.allocate(16, 16).expect("buffer");
        let buffer = c.create_dmabuf_buffer(&buf);
        Self {
            c,
            acq,
            rel,
            buffer,
            point: 0,
            _kernel: (acquire, release, buf),
        }
    }

    fn sync(&mut self) {
        let t = self.c.send_sync();
        self.c
            .blocking_dispatch_until(Duration::from_secs(5), |r| r.syncs_done.contains(&t));
    }

    /// A new syncobj surface with `waits` commits parked on the acquire point (each holds
    /// an eventfd in the compositor). Returns the commits sent, 0 once disconnected.
    fn park_surface(&mut self, waits: usize) -> usize {
        let s = self.syncobj_surface();
        if !self.c.is_alive() {
            return 0;
        }
        for _ in 0..waits {
            self.park(s);
        }
        self.sync();
        waits
    }

    /// A new syncobj surface (no commit yet).
    fn syncobj_surface(&mut self) -> SurfaceId {
        let s = self.c.create_toplevel();
        self.c.syncobj_surface(s);
        self.sync();
        s
    }

    /// One commit on `s` parked on the acquire point (not flushed).
    fn park(&mut self, s: SurfaceId) {
        self.point += 1;
        self.c.attach(s, Some(self.buffer));
        self.c.set_acquire_point(s, &self.acq, 1);
        self.c.set_release_point(s, &self.rel, self.point);
        self.c.commit(s, Commit::default());
    }

    /// One parked commit on `s`, confirmed by a roundtrip: false if it was not confirmed
    /// (the client was disconnected).
    fn park_confirmed(&mut self, s: SurfaceId) -> bool {
        self.park(s);
        let t = self.c.send_sync();
        self.c
            .blocking_dispatch_until(Duration::from_secs(5), |r| r.syncs_done.contains(&t))
    }
}

/// One hostile connection: syncobj surfaces, 15 commits each (below the per-surface bound
/// of 16) whose acquire point never materializes, until the compositor disconnects it or
/// `max_surfaces` are used. Returns (commits sent, compositor fd peak, connection error).
fn hostile_round(
    rb: &Running,
    dev: &SyncobjDevice,
    vgem: &Allocator,
    max_surfaces: usize,
) -> (usize, usize, Option<WaylandError>) {
    let mut h = HostileClient::connect(rb, dev, vgem);
    let mut commits = 0;
    let mut peak = rb.fd_count();
    for _ in 0..max_surfaces {
        commits += h.park_surface(15);
        peak = peak.max(rb.fd_count());
        if !h.c.is_alive() {
            break;
        }
    }
    let err = h.c.conn.backend().last_error();
    (commits, peak, err)
}

/// Issue 12's stress test: hostile clients, one after the other for a few seconds, each
/// drive the compositor to their fd budget with never-materializing acquire points on
/// many surfaces, while a bystander keeps committing frames. The compositor never exits,
/// each hostile client is disconnected at its budget, the bystander keeps its frame rate,
/// and the compositor's fds return to where they were.
#[test]
fn hostile_clients_at_their_fd_budget_leave_another_clients_frames_alone() {
    require_vm();
    let mut rb = start_syncbridge("hostile", &Options::headless(Some(&virtio_render_node())));
    let dev = virtio_syncobj_device();
    let vgem = Allocator::vgem();
    let budget = Limits::default().max_fds_per_client;
    let soft_limit = rb.nofile_soft_limit();

    let bystander = Bystander::start(rb.socket.clone());
    // Calm phase: the bystander alone; the fd count settles.
    bystander.wait_for_frames(10);
    let calm_start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let mut baseline = rb.fd_count();
    assert!(
        eventually(Duration::from_secs(10), || {
            std::thread::sleep(Duration::from_millis(200));
            let now = rb.fd_count();
            std::mem::replace(&mut baseline, now) == now
        }),
        "the fd count never settled"
    );
    let rss_before = rb.rss_kib();
    let targets_before = rb.fd_targets();
    let calm_end = Instant::now();

    // Hostile phase: at least 3 hostile clients and 3 s.
    let mut rounds = 0;
    let mut peak = baseline;
    let mut commits_per_round = Vec::new();
    while rounds < 3 || calm_end.elapsed() < Duration::from_secs(3) {
        let (commits, round_peak, err) = hostile_round(&rb, &dev, &vgem, 64);
        assert_no_memory(err);
        assert!(rb.is_running(), "the compositor exited; log:\n{}", rb.log());
        rounds += 1;
        peak = peak.max(round_peak);
        commits_per_round.push(commits);
        assert!(
            commits < budget + 15,
            "round {rounds}: {commits} waiting commits accepted, budget {budget}"
        );
        assert!(
            eventually(Duration::from_secs(10), || rb.fd_count() <= baseline),
            "round {rounds}: {} fds held after the client left, {baseline} before: {:?} before, {:?} after",
            rb.fd_count(),
            targets_before,
            rb.fd_targets()
        );
    }
    let hostile_end = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let frames = bystander.finish();
    let fps_calm = rate(&frames, calm_start, calm_end);
    let fps_hostile = rate(&frames, calm_end, hostile_end);
    let fds_after = rb.fd_count();
    let rss_after = rb.rss_kib();
    assert!(rb.is_running());
    let (stats, log) = rb.stop();
    let sync = &stats["sync"];

    assert!(
        peak <= baseline + budget + 16,
        "fd peak {peak}: more than the budget {budget} over the baseline {baseline}"
    );
    assert!(
        peak >= baseline + budget - 16,
        "fd peak {peak}: the hostile client never reached its budget {budget} (baseline {baseline})"
    );
    assert_eq!(
        sync["clients_killed_for_budget"].as_u64(),
        Some(rounds as u64),
        "{sync:#}\n{log}"
    );
    assert_eq!(sync["fds_held"]["now"], 0, "{sync:#}");
    assert_eq!(sync["pending_waits"], 0, "{sync:#}");
    // A liveness floor, not a speed figure: under QEMU without KVM the hostile client, the
    // bystander and the compositor share two emulated CPUs, and every hostile request costs
    // the compositor CPU time. (The bystander also fails if one frame takes over 5 s.)
    assert!(
        frames_in(&frames, calm_end, hostile_end) >= MIN_BYSTANDER_FRAMES,
        "the bystander stopped presenting: {fps_calm:.1}/s calm, {fps_hostile:.1}/s with the hostile clients"
    );
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 8192,
        "RSS grew by {growth} KiB over {rounds} hostile clients ({rss_before} -> {rss_after})"
    );
    figures(
        "hostile_fd_budget",
        serde_json::json!({
            "rlimit_nofile_soft": soft_limit,
            "budget_fds_per_client": budget,
            "fd_baseline": baseline,
            "fd_peak": peak,
            "fd_after": fds_after,
            "hostile_rounds": rounds,
            "waiting_commits_per_round": commits_per_round,
            "client_fds_held_peak": sync["client_fds_held_peak"],
            "bystander_fps_calm": (fps_calm * 10.0).round() / 10.0,
            "bystander_fps_hostile": (fps_hostile * 10.0).round() / 10.0,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
        }),
    );
}

/// Several hostile clients, each within its budget, together exhaust a compositor started
/// with a low fd limit (hard limit 512, so it cannot raise it): connections that cannot be
/// accepted are logged and survived; a wait that then cannot get its eventfd cancels the
/// commit and disconnects that client with `no_memory` (issue 12 item 4); the bystander
/// keeps its frames; once fds are free, the waiting connection is served.
#[test]
fn exhausting_the_process_fd_limit_is_survived() {
    const LIMIT: usize = 512;
    require_vm();
    let mut opts = Options::headless(Some(&virtio_render_node()));
    opts.nofile = Some((LIMIT as u64, LIMIT as u64));
    let mut rb = start_syncbridge("emfile", &opts);
    let dev = virtio_syncobj_device();
    let vgem = Allocator::vgem();
    let bystander = Bystander::start(rb.socket.clone());
    bystander.wait_for_frames(10);
    let baseline = rb.fd_count();

    // Three clients of 13 surfaces (up to 15 waits each, 195 per client: under the budget
    // of 256), set up first; then single waits, each confirmed by a roundtrip, until the
    // compositor's fd table is full. Each wait takes one eventfd, so none fails here (a
    // client whose wait fails is disconnected, which would give its fds back).
    let mut hostile = Vec::new();
    for _ in 0..3 {
        let mut c = HostileClient::connect(&rb, &dev, &vgem);
        let surfaces: Vec<SurfaceId> = (0..13).map(|_| c.syncobj_surface()).collect();
        hostile.push((c, surfaces));
    }
    let mut waits = 0;
    'fill: for _ in 0..15 {
        for (h, surfaces) in hostile.iter_mut() {
            for &s in surfaces.iter() {
                if rb.fd_count() >= LIMIT {
                    break 'fill;
                }
                assert!(
                    h.park_confirmed(s),
                    "wait {waits} was not confirmed (error: {:?}); log:\n{}",
                    h.c.conn.backend().last_error(),
                    rb.log()
                );
                waits += 1;
            }
        }
    }
    let peak = rb.fd_count();
    let exhausted_at = Instant::now();
    assert!(rb.is_running(), "the compositor exited; log:\n{}", rb.log());
    assert!(
        peak >= LIMIT,
        "{peak} fds open after {waits} waits: the limit of {LIMIT} was not reached; log:\n{}",
        rb.log()
    );
    // A new client now waits in the backlog: accept() fails with EMFILE.
    let latecomer_socket = rb.socket.clone();
    let latecomer =
        std::thread::spawn(move || TestClient::connect(&latecomer_socket).map(|c| c.is_alive()));
    std::thread::sleep(Duration::from_secs(1));
    assert!(rb.is_running(), "the compositor exited; log:\n{}", rb.log());
    let log = rb.log();
    assert!(
        log.contains("accepting a client failed"),
        "EMFILE on accept is logged:\n{log}"
    );

    // One more wait: no fd for its eventfd. The commit is cancelled and that client
    // disconnected (never left connected with a commit smithay would apply unwaited).
    let (mut first, surfaces) = hostile.remove(0);
    first.park(surfaces[0]);
    first.c.flush();
    first
        .c
        .blocking_dispatch_until(Duration::from_secs(5), |_| false);
    assert_no_memory(first.c.conn.backend().last_error());
    assert!(rb.is_running(), "the compositor exited; log:\n{}", rb.log());
    let exhausted_end = Instant::now();

    for (mut h, _) in hostile.drain(..) {
        h.c.disconnect();
    }
    let connected = latecomer.join().expect("latecomer thread");
    assert!(
        matches!(connected, Ok(true)),
        "the waiting client was served: {connected:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || rb.fd_count() <= baseline + 2),
        "{} fds after the hostile clients left, {baseline} before",
        rb.fd_count()
    );
    let frames = bystander.finish();
    let fps_exhausted = rate(&frames, exhausted_at, exhausted_end);
    assert!(rb.is_running());
    let (stats, log) = rb.stop();
    assert!(
        stats["clients"]["accept_paused"].as_u64() >= Some(1),
        "{stats:#}"
    );
    assert_eq!(
        stats["sync"]["commits_rejected"].as_u64(),
        Some(1),
        "only the wait made with no fd left was refused: {stats:#}"
    );
    assert!(
        frames_in(&frames, exhausted_at, exhausted_end) >= MIN_BYSTANDER_FRAMES,
        "the bystander stopped presenting while fds were exhausted ({fps_exhausted:.1}/s)\n{log}"
    );
    figures(
        "emfile_survived",
        serde_json::json!({
            "rlimit_nofile": LIMIT,
            "fd_baseline": baseline,
            "fd_peak": peak,
            "accept_paused": stats["clients"]["accept_paused"],
            "commits_rejected": stats["sync"]["commits_rejected"],
            "bystander_fps_while_exhausted": (fps_exhausted * 10.0).round() / 10.0,
        }),
    );
}

/// The dma-buf fds a client's `wl_buffer`s keep open count against its buffer fd budget:
/// buffers it destroys give theirs back, the import that would go over it is refused
/// (`create_immed`: the `invalid_wl_buffer` protocol error), and when the client is gone
/// every fd its buffers held is uncounted. The other client is untouched.
#[test]
fn wl_buffers_keep_their_dmabuf_fds_within_the_client_budget() {
    require_vm();
    let mut h = Harness::vm();
    set_limits(&mut h, |l| l.max_buffer_fds_per_client = 8);
    let vgem = Allocator::vgem();
    let bystander = h.add_client();
    let bs = mapped_surface(&mut h, bystander, &vgem);
    let base = sync_stats(&mut h).buffer_fds_held;
    assert_eq!(base, 1, "the bystander's one single-plane buffer");

    let c = h.add_client();
    let buf = vgem.allocate(W, H).expect("buffer");
    let mut buffers: Vec<_> = (0..8)
        .map(|_| h.client(c).create_dmabuf_buffer(&buf))
        .collect();
    h.roundtrip(c);
    assert!(
        h.client(c).is_alive(),
        "8 one-plane buffers fit a budget of 8"
    );
    assert_eq!(sync_stats(&mut h).buffer_fds_held, base + 8);

    // Destroyed buffers give their fds back: two more fit again.
    for b in buffers.drain(..2) {
        h.client(c).destroy_buffer(b);
    }
    h.roundtrip(c);
    assert_eq!(sync_stats(&mut h).buffer_fds_held, base + 6);
    for _ in 0..2 {
        buffers.push(h.client(c).create_dmabuf_buffer(&buf));
    }
    h.roundtrip(c);
    assert!(h.client(c).is_alive());
    assert_eq!(sync_stats(&mut h).buffer_fds_held, base + 8);

    // The ninth is refused.
    h.client(c).create_dmabuf_buffer(&buf);
    let err = h
        .until_protocol_error(c)
        .expect("the import over the budget is refused with a protocol error");
    // 7: zwp_linux_buffer_params_v1.error.invalid_wl_buffer (the params object is already
    // destroyed on the client side, so its interface is not known there).
    assert_eq!(err.code, 7, "{err:?}");
    for _ in 0..5 {
        h.pump();
    }
    let st = sync_stats(&mut h);
    assert_eq!(st.buffer_imports_refused_for_budget, 1, "{st:?}");
    assert_eq!(
        st.buffer_fds_held, base,
        "the dead client's buffers are uncounted: {st:?}"
    );
    assert_eq!(st.buffer_fds_held_peak, base + 8, "{st:?}");
    bystander_still_presents(&mut h, bystander, bs);
}
