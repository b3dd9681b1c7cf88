//! The tty (KMS) backend on a real kernel (issue 5). Runs inside the VM under
//! `seatd-launch`: `cargo xtask test --vm-filter vm_tty`, or by hand
//! `cargo test -p syncbridge-tests --features vm --test vm_tty --no-run` and in the VM
//! `SYNCBRIDGE_BIN=target/debug/syncbridge <test binary> --test-threads=1 --nocapture`.
//!
//! Each test starts `syncbridge --backend tty --drm-device <card>` on VKMS (60 Hz vblank
//! timer, PRIME import of vgem buffers) or on virtio-gpu, connects a recording
//! wayland-client ([`syncbridge_tests::client::TestClient`]), and reads back what the
//! display shows through GETFB2 of the primary plane's framebuffer (the test runs as
//! root, so the kernel hands out the framebuffer's GEM handles).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use syncbridge_bridge::dmabuf::{export_sync_file, Access};
use syncbridge_bridge::sync_file::monotonic_now_ns;
use syncbridge_tests::client::buffers::{Allocator, DmaBuffer};
use syncbridge_tests::client::Commit;
use syncbridge_tests::kernel::card::Card;
use syncbridge_tests::kernel::require_vm;
use syncbridge_tests::tty::*;

/// wp_presentation_feedback kind: zero_copy.
const ZERO_COPY: u32 = 0x8;

// ------------------------------------------------------------------------------------
// Direct scanout + early release
// ------------------------------------------------------------------------------------

/// What a client saw when its scanned-out buffer was replaced.
struct ReleaseObservation {
    /// export(Write) on the old buffer was unsignalled when the release arrived.
    pending_at_release: bool,
    /// ns from receiving the release to that fence signalling (negative: it had
    /// signalled before).
    fence_after_release_ns: i64,
}

/// Show A (full screen) directly, then B; observe A's release.
fn replace_scanned_out_buffer(
    comp: &Compositor,
    alloc: &Allocator,
    card: &Card,
) -> ReleaseObservation {
    let size = mode_size(card);
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let a = alloc.allocate(size.0, size.1).expect("buffer A");
    let b = alloc.allocate(size.0, size.1).expect("buffer B");
    fill(&a, 0x00ff_0000);
    fill(&b, 0x0000_00ff);
    let wa = c.create_dmabuf_buffer(&a);
    let wb = c.create_dmabuf_buffer(&b);
    c.attach(s, Some(wa));
    let ca = c.commit(s, Commit::feedback());
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.outcome(ca).is_some()),
        "A presented; log:\n{}",
        comp.log_text()
    );
    let flags = presented_flags(&c, ca).expect("A presented, not discarded");
    assert_ne!(
        flags & ZERO_COPY,
        0,
        "A was scanned out directly (flags {flags:#x})"
    );
    assert!(
        wait_shows(card, &centre(size), 0x00ff_0000, LONG),
        "the display shows A's red"
    );

    c.attach(s, Some(wb));
    let cb = c.commit(s, Commit::feedback());
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.releases(wa) > 0),
        "A released; log:\n{}",
        comp.log_text()
    );
    let released_at = monotonic_now_ns();
    let fence = export_sync_file(a.fd.as_fd(), Access::Write).expect("export(Write) of A");
    let pending_at_release = !fence.is_signaled().expect("poll");
    fence
        .wait(Duration::from_secs(2))
        .expect("A's fences signal");
    let signalled = fence
        .info()
        .expect("info")
        .signaled_at_ns()
        .unwrap_or(released_at);
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.outcome(cb).is_some()),
        "B presented"
    );
    let flags = presented_flags(&c, cb).expect("B presented");
    assert_ne!(flags & ZERO_COPY, 0, "B scanned out directly");
    assert!(
        wait_shows(card, &centre(size), 0x0000_00ff, LONG),
        "the display shows B's blue"
    );
    ReleaseObservation {
        pending_at_release,
        fence_after_release_ns: i64::try_from(i128::from(signalled) - i128::from(released_at))
            .unwrap_or(0),
    }
}

#[test]
fn vkms_direct_scanout_releases_before_the_flip_with_the_out_fence() {
    let path = card_of("vkms");
    let comp = Compositor::start("early", &path, &["--release-mode", "early"]);
    let card = open_display(&path);
    let alloc = Allocator::vgem();
    // Several rounds. Whether the client reads the release before the out-fence signals
    // depends on where in the refresh cycle the commit landed: when the client's commit
    // comes late in the cycle, the vblank (TCG's timer jitters by milliseconds) can beat
    // the client's read. At least 8 rounds, and up to 32 until one is seen pending.
    let mut pending = 0;
    let mut rounds = 0;
    while rounds < 8 || (pending == 0 && rounds < 32) {
        rounds += 1;
        let obs = replace_scanned_out_buffer(&comp, &alloc, &card);
        if obs.pending_at_release {
            pending += 1;
        }
        // The out-fence's timestamp is the vblank time the kernel computed, which may
        // precede the moment the fence was actually signalled (and seen) in this VM.
        println!(
            "release -> export(Write) of the old buffer signalled {} us later (pending at release: {})",
            obs.fence_after_release_ns / 1000,
            obs.pending_at_release
        );
    }
    let stats = comp.stop();
    let k = kms(&stats);
    println!("sync: {}", stats["sync"]["release"]);
    // The release is sent right after the commit, before the flip. In this emulated VM
    // the vblank timer and wake-ups jitter by milliseconds (see flip_event_latency), so a
    // client may read the release only after the flip; it must see it before in some.
    assert!(
        pending >= 1,
        "export(Write) of the replaced buffer was pending at release in only {pending}/{rounds} rounds"
    );
    assert_eq!(k["release_mode"], "early (out-fence)");
    assert!(k["direct_scanout_frames"].as_u64().unwrap_or(0) >= 2 * rounds as u64);
    assert!(k["early_releases"].as_u64().unwrap_or(0) >= rounds as u64);
    assert!(
        k["release_lead_time"]["min_us"].as_f64().unwrap_or(0.0) > 0.0,
        "every early release went out before its page-flip event"
    );
    assert!(
        stats["sync"]["release"]["implicit_fences_imported"]
            .as_u64()
            .unwrap_or(0)
            >= pending as u64,
        "the out-fence went into the released buffers"
    );
    assert!(k["out_fences"].as_u64().unwrap_or(0) >= k["commits"].as_u64().unwrap_or(1));
    assert_eq!(stats["protocol_errors_sent"], 0);
}

#[test]
fn vkms_flip_fallback_releases_at_the_flip() {
    let path = card_of("vkms");
    let comp = Compositor::start("flip", &path, &["--release-mode", "flip"]);
    let card = open_display(&path);
    let alloc = Allocator::vgem();
    for _ in 0..3 {
        let obs = replace_scanned_out_buffer(&comp, &alloc, &card);
        assert!(
            !obs.pending_at_release,
            "at-flip release: the display is done with the buffer when it arrives"
        );
    }
    let stats = comp.stop();
    let k = kms(&stats);
    assert_eq!(k["release_mode"], "at page flip");
    assert!(k["flip_releases"].as_u64().unwrap_or(0) >= 3);
    assert_eq!(k["early_releases"], 0);
    assert!(k["release_lead_time"]["p50_us"].as_f64().unwrap_or(1.0) <= 0.0);
}

#[test]
fn virtio_gpu_direct_scanout_releases_before_the_flip() {
    let path = virtio_card();
    let comp = Compositor::start("virtio", &path, &[]);
    // Opened after the compositor: the first opener of a card becomes its DRM master.
    let card = open_display(&path);
    let alloc = Allocator::virtio_dumb();
    for _ in 0..3 {
        let obs = replace_scanned_out_buffer(&comp, &alloc, &card);
        println!(
            "virtio-gpu: release -> old buffer's fence signalled {} us later (pending at release: {})",
            obs.fence_after_release_ns / 1000,
            obs.pending_at_release
        );
    }
    let stats = comp.stop();
    let k = kms(&stats);
    assert_eq!(k["driver"], "virtio_gpu");
    assert_eq!(k["release_mode"], "early (out-fence)");
    assert!(k["early_releases"].as_u64().unwrap_or(0) >= 3);
    assert!(k["direct_scanout_frames"].as_u64().unwrap_or(0) >= 6);
}

// ------------------------------------------------------------------------------------
// Acquire fences: a buffer whose fence has not signalled is never on a plane
// ------------------------------------------------------------------------------------

#[test]
fn vkms_unsignalled_acquire_fence_keeps_the_previous_frame() {
    let path = card_of("vkms");
    let comp = Compositor::start("acquire", &path, &[]);
    let card = open_display(&path);
    let size = mode_size(&card);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let a = alloc.allocate(size.0, size.1).expect("A");
    let b = alloc.allocate(size.0, size.1).expect("B");
    fill(&a, 0x0000_ff00);
    fill(&b, 0x00ff_00ff);
    let wa = c.create_dmabuf_buffer(&a);
    let wb = c.create_dmabuf_buffer(&b);
    c.attach(s, Some(wa));
    let ca = c.commit(s, Commit::feedback());
    assert!(c.blocking_dispatch_until(LONG, |r| r.outcome(ca).is_some()));
    assert!(wait_shows(&card, &centre(size), 0x0000_ff00, LONG));

    let fence = alloc.attach_write_fence(&b).expect("vgem fence on B");
    c.attach(s, Some(wb));
    let cb = c.commit(s, Commit::feedback());
    // Half a second of frames: B must not be shown, A stays and is not released.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        c.blocking_dispatch_until(Duration::from_millis(50), |_| false);
        assert!(c.rec.outcome(cb).is_none(), "B presented before its fence");
        assert_eq!(c.rec.releases(wa), 0, "A released while still on screen");
        let fb = primary_fb(&card).expect("a framebuffer on the primary plane");
        let px = read_pixels(&card, fb, &centre(size)).expect("readback");
        assert!(
            px.iter().all(|p| p & 0x00ff_ffff == 0x0000_ff00),
            "the display keeps showing A: {px:x?}"
        );
    }
    alloc.signal(fence).expect("signal");
    assert!(c.blocking_dispatch_until(LONG, |r| r.outcome(cb).is_some() && r.releases(wa) > 0));
    assert_ne!(presented_flags(&c, cb).unwrap_or(0) & ZERO_COPY, 0);
    assert!(wait_shows(&card, &centre(size), 0x00ff_00ff, LONG));
    let stats = comp.stop();
    let k = kms(&stats);
    // The blocked commit made no atomic commit of its own: the first frame, and the
    // one after the signal (the output idles in between).
    assert!(
        k["commits"].as_u64().unwrap_or(0) >= 2,
        "the frame after the signal was committed"
    );
    assert!(
        stats["sync"]["commits_waited"]["implicit"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
}

// ------------------------------------------------------------------------------------
// Composition: what the display shows is what the client drew
// ------------------------------------------------------------------------------------

#[test]
fn vkms_composited_window_shows_the_client_colours() {
    let path = card_of("vkms");
    // Composition is the subject: the window would otherwise go on an overlay plane.
    let comp = Compositor::start("composite", &path, &["--overlay-planes", "off"]);
    let card = open_display(&path);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    // Smaller than the output: composited by pixman into our own buffer.
    let a = alloc.allocate(200, 100).expect("A");
    fill(&a, 0x0012_3456);
    let wa = c.create_dmabuf_buffer(&a);
    c.attach(s, Some(wa));
    let ca = c.commit(s, Commit::feedback());
    assert!(c.blocking_dispatch_until(LONG, |r| r.outcome(ca).is_some()));
    assert_eq!(presented_flags(&c, ca).unwrap_or(0) & ZERO_COPY, 0);
    assert!(
        wait_shows(&card, &[(10, 10), (150, 80)], 0x0012_3456, LONG),
        "the window's pixels are on screen"
    );
    let fb = primary_fb(&card).expect("fb");
    let bg = read_pixels(&card, fb, &[(600, 600)]).expect("readback");
    assert_ne!(
        bg[0] & 0x00ff_ffff,
        0x0012_3456,
        "background outside the window"
    );
    let stats = comp.stop();
    let k = kms(&stats);
    assert!(k["composited_frames"].as_u64().unwrap_or(0) >= 1);
}

// ------------------------------------------------------------------------------------
// No tearing through early release
// ------------------------------------------------------------------------------------

#[test]
fn vkms_redraw_on_release_never_shows_a_half_drawn_frame() {
    redraw_on_release("tearing", &card_of("vkms"), Allocator::vgem, &[]);
}

/// The same on virtio-gpu (its own dumb buffers, scanned out directly): also the
/// release lead time / out-fence delay measurement on that driver.
#[test]
fn virtio_gpu_redraw_on_release_never_shows_a_half_drawn_frame() {
    redraw_on_release(
        "tearing-virtio",
        &virtio_card(),
        Allocator::virtio_dumb,
        &[],
    );
}

/// EBUSY from the kernel: before every 5th frame commit the compositor is made to submit
/// an extra flip (`--kms-inject-ebusy-every`), so the kernel refuses the frame's real
/// commit with EBUSY. The compositor must keep presenting: the same redraw-on-release client
/// gets every buffer back, never sees a torn frame, and its last frame reaches the
/// display.
#[test]
fn vkms_ebusy_from_the_kernel_is_survived() {
    let driver = "vkms";
    let k = redraw_on_release(
        "ebusy",
        &card_of(driver),
        Allocator::vgem,
        &["--kms-inject-ebusy-every", "5"],
    );
    let injected = k["injected_busy_flips"].as_u64().unwrap_or(0);
    let ebusy = k["commit_ebusy"].as_u64().unwrap_or(0);
    let errors = k["commit_errors"].as_u64().unwrap_or(0);
    println!("{driver}: {injected} injected flips, {ebusy} commits refused with EBUSY, {errors} errors in all");
    assert!(ebusy >= 5, "the kernel refused commits with EBUSY: {k}");
    // The extra flip goes in right before the frame's commit; VKMS completes it only at
    // its next vblank, so the commit meets it busy unless a vblank fell in between (the
    // emulated CPU can be descheduled there). virtio-gpu completes such a flip before
    // the next ioctl, so it cannot be provoked there this way.
    assert!(
        ebusy * 2 >= injected,
        "most injected flips led to an EBUSY: {k}"
    );
    assert_eq!(errors, ebusy, "EBUSY was the only error: {k}");
}

/// A client with two full-screen buffers redraws each one as soon as it is released,
/// after waiting for its implicit fences (export(Write)); the display must never show
/// a half-drawn buffer.
fn redraw_on_release(
    name: &str,
    path: &Path,
    allocator: fn() -> Allocator,
    extra: &[&str],
) -> serde_json::Value {
    let comp = Compositor::start(name, path, extra);
    let card = open_display(path);
    let size = mode_size(&card);
    // After the compositor: the allocator may open the display card too.
    let alloc = allocator();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let bufs: Vec<DmaBuffer> = (0..2)
        .map(|_| alloc.allocate(size.0, size.1).expect("buffer"))
        .collect();
    let ids: Vec<usize> = bufs.iter().map(|b| c.create_dmabuf_buffer(b)).collect();
    // Sample points spread over the whole buffer (rows far apart: a CPU fill in progress
    // would show two colours).
    let points: Vec<(u32, u32)> = (0..16)
        .map(|i| ((i * 61) % size.0, (i * size.1) / 16))
        .chain([(size.0 - 1, size.1 - 1)])
        .collect();
    let frames = 240u32;
    let mut released_seen = [0usize; 2];
    let mut samples = 0;
    let mut next = 0usize;
    let mut colour = 1u32;
    let start = Instant::now();
    for frame in 0..frames {
        let i = next;
        // Redraw as soon as the buffer is ours again, honouring its implicit fences.
        if frame >= 2 {
            assert!(
                c.blocking_dispatch_until(LONG, |r| r.releases(ids[i]) > released_seen[i]),
                "buffer {i} released (frame {frame}); log:\n{}",
                comp.log_text()
            );
            released_seen[i] = c.rec.releases(ids[i]);
            let fence = export_sync_file(bufs[i].fd.as_fd(), Access::Write).expect("export");
            fence.wait(Duration::from_secs(2)).expect("fences signal");
        }
        colour = colour.wrapping_mul(1_103_515_245).wrapping_add(12345) & 0x00ff_ffff;
        fill(&bufs[i], colour);
        c.attach(s, Some(ids[i]));
        c.commit(s, Commit::default());
        c.flush();
        next = 1 - next;
        // Sample what the display shows: one colour everywhere, or a tear. The sample
        // counts only if the same framebuffer stayed on the plane while reading.
        if let Some(fb) = primary_fb(&card) {
            if let Some(px) = read_pixels(&card, fb, &points) {
                if primary_fb(&card) == Some(fb) {
                    samples += 1;
                    let first = px[0] & 0x00ff_ffff;
                    assert!(
                        px.iter().all(|p| p & 0x00ff_ffff == first),
                        "torn frame on screen at frame {frame}: {px:x?}"
                    );
                }
            }
        }
    }
    let took = start.elapsed();
    println!("{frames} frames in {took:?}, {samples} readbacks, none torn");
    assert!(samples >= frames / 2);
    // The last frame reaches the display, and both buffers come back.
    assert!(
        wait_shows(&card, &points, colour, LONG),
        "the last frame ({colour:06x}) is on screen; log:\n{}",
        comp.log_text()
    );
    let last = 1 - next;
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.releases(ids[next]) > released_seen[next]),
        "the buffer before the last one was released"
    );
    assert_eq!(
        c.rec.releases(ids[last]),
        released_seen[last],
        "the shown buffer is held"
    );
    let stats = comp.stop();
    let k = kms(&stats).clone();
    assert!(k["early_releases"].as_u64().unwrap_or(0) >= u64::from(frames) / 2);
    assert!(k["direct_scanout_frames"].as_u64().unwrap_or(0) >= u64::from(frames) / 2);
    // One commit per client frame plus the first modeset: nothing while idle (the run
    // lasts seconds, so a per-vblank commit would be hundreds more).
    let commits = k["commits"].as_u64().unwrap_or(0);
    assert!(
        commits <= u64::from(frames) + 2,
        "{commits} commits for {frames} client frames: idle outputs commit nothing"
    );
    k
}

// ------------------------------------------------------------------------------------
// Real clients
// ------------------------------------------------------------------------------------

fn run_client_on(name: &str, card: &Path, client: &[&str]) -> serde_json::Value {
    require_vm();
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/xdg-runtime"));
    let _ = std::fs::create_dir_all(&runtime);
    let stats = scratch().join(format!("tty-{name}.json"));
    let log = scratch().join(format!("tty-{name}.log"));
    let _ = std::fs::remove_file(&stats);
    let log_file = std::fs::File::create(&log).expect("log");
    remove_stale_seatd_socket();
    let status = Command::new("timeout")
        .args(["--kill-after=10", "90", "seatd-launch", "--"])
        .arg(syncbridge_bin())
        .args(["--backend", "tty", "--drm-device"])
        .arg(card)
        .args(["--stats-interval", "0", "--stats-json"])
        .arg(&stats)
        .arg("--")
        .args(client)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("dup"))
        .stderr(log_file)
        .status()
        .expect("run");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let text = std::fs::read_to_string(&stats)
        .unwrap_or_else(|e| panic!("no stats ({e}), status {status}; log:\n{log_text}"));
    let stats: serde_json::Value = serde_json::from_str(&text).expect("json");
    // The client ran until `timeout` stopped it (124), not an error of its own.
    assert_eq!(
        stats["child"]["exit_code"], 124,
        "client exit; log:\n{log_text}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0, "log:\n{log_text}");
    stats
}

#[test]
fn vkms_weston_simple_shm_presents_frames() {
    let card = card_of("vkms");
    let stats = run_client_on("simple-shm", &card, &["timeout", "6", "weston-simple-shm"]);
    let k = kms(&stats);
    // Several seconds of the client's animation; the emulated VM runs well below 60 Hz
    // when other VMs share the host.
    let frames = stats["frames_presented_total"].as_u64().unwrap_or(0);
    assert!(frames >= 30, "{frames} frames presented");
    assert!(k["composited_frames"].as_u64().unwrap_or(0) >= 30);
    assert_eq!(k["commit_errors"], 0);
}

#[test]
fn vkms_weston_simple_dmabuf_egl_presents_frames() {
    // The display is VKMS; Mesa (kms_swrast) allocates the client's dumb buffers on
    // virtio_gpu's primary node, which the compositor does not hold.
    let card = card_of("vkms");
    let alloc_card = virtio_card().display().to_string();
    let stats = run_client_on(
        "simple-dmabuf-egl",
        &card,
        &[
            "timeout",
            "25",
            "weston-simple-dmabuf-egl",
            "-d",
            &alloc_card,
        ],
    );
    let frames = stats["frames_presented_total"].as_u64().unwrap_or(0);
    assert!(frames >= 30, "{frames} frames presented");
    assert!(stats["dmabuf_imports"].as_u64().unwrap_or(0) >= 1);
    kms(&stats);
}

// ------------------------------------------------------------------------------------
// linux-drm-syncobj-v1: the release point carries the out-fence
// ------------------------------------------------------------------------------------

#[test]
fn vkms_syncobj_release_point_signals_with_the_out_fence() {
    use syncbridge_bridge::WaitMode;
    let path = card_of("vkms");
    let comp = Compositor::start("syncobj", &path, &[]);
    let card = open_display(&path);
    let size = mode_size(&card);
    // Timelines live on virtio_gpu's render node (VKMS has no syncobjs); the compositor
    // imports them on its timeline device, the out-fence comes from VKMS.
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let (acq, rel, acq_obj, rel_obj) =
        c.new_timelines(&syncbridge_tests::client::harness::virtio_syncobj_device());
    let s = configured_surface(&mut c);
    c.syncobj_surface(s);
    c.blocking_roundtrip();
    let bufs: Vec<DmaBuffer> = (0..2)
        .map(|_| alloc.allocate(size.0, size.1).expect("buffer"))
        .collect();
    fill(&bufs[0], 0x0040_8000);
    fill(&bufs[1], 0x0000_4080);
    let ids: Vec<usize> = bufs.iter().map(|b| c.create_dmabuf_buffer(b)).collect();

    let commits = 8u64;
    let mut pending_when_available = 0;
    for k in 1..=commits {
        let i = (k % 2) as usize;
        acq.signal(k).expect("acquire point");
        c.attach(s, Some(ids[i]));
        c.set_acquire_point(s, &acq_obj, k);
        c.set_release_point(s, &rel_obj, k);
        let commit = c.commit(s, Commit::feedback());
        c.flush();
        let presented = |c: &mut syncbridge_tests::client::TestClient| {
            assert!(
                c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some()),
                "commit {k} presented; log:\n{}",
                comp.log_text()
            );
            assert_ne!(
                presented_flags(c, commit).unwrap_or(0) & ZERO_COPY,
                0,
                "commit {k} scanned out"
            );
        };
        if k == 1 {
            presented(&mut c);
            // Shown: its release point stays unsignalled for a few frames.
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                rel.query().expect("query") < 1,
                "point 1 signalled while shown"
            );
            continue;
        }
        // Commit k replaced commit k-1's buffer: its release point materializes with
        // the out-fence when the compositor commits to KMS, and signals with it. Watched
        // from the commit on: `presented` comes only at the page flip, when the
        // out-fence has signalled.
        let prev = k - 1;
        let start = Instant::now();
        while rel
            .wait(prev, WaitMode::Available, Duration::from_millis(1))
            .is_err()
        {
            assert!(
                start.elapsed() < LONG,
                "release point {prev} never materialized"
            );
        }
        if rel.wait(prev, WaitMode::Signaled, Duration::ZERO).is_err() {
            pending_when_available += 1;
        }
        rel.wait(prev, WaitMode::Signaled, Duration::from_secs(2))
            .expect("release point signals");
        presented(&mut c);
    }
    println!("syncobj: release point pending when it materialized in {pending_when_available}/{} commits", commits - 1);
    let stats = comp.stop();
    let k = kms(&stats);
    let release = &stats["sync"]["release"];
    println!("sync release: {release}");
    assert!(k["early_releases"].as_u64().unwrap_or(0) >= commits - 1);
    assert!(
        release["syncobj_points_fenced"].as_u64().unwrap_or(0) >= pending_when_available,
        "points got the out-fence by transfer, not a CPU signal"
    );
    assert!(
        pending_when_available >= 1,
        "a release point was seen pending on the out-fence"
    );
}

// ------------------------------------------------------------------------------------
// VT switch: pause and resume (kernel errors from losing DRM master are survived)
// ------------------------------------------------------------------------------------

fn active_vt() -> u32 {
    std::fs::read_to_string("/sys/class/tty/tty0/active")
        .ok()
        .and_then(|s| s.trim().strip_prefix("tty").and_then(|n| n.parse().ok()))
        .expect("active VT")
}

fn chvt(n: u32) {
    let status = Command::new("busybox")
        .args(["chvt", &n.to_string()])
        .status()
        .expect("busybox chvt");
    assert!(status.success(), "chvt {n}");
}

#[test]
fn vkms_vt_switch_pauses_and_resumes_presentation() {
    let path = card_of("vkms");
    let comp = Compositor::start("vt", &path, &[]);
    let card = open_display(&path);
    let size = mode_size(&card);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let a = alloc.allocate(size.0, size.1).expect("A");
    let b = alloc.allocate(size.0, size.1).expect("B");
    fill(&a, 0x0011_2233);
    fill(&b, 0x0044_5566);
    let wa = c.create_dmabuf_buffer(&a);
    let wb = c.create_dmabuf_buffer(&b);
    c.attach(s, Some(wa));
    let ca = c.commit(s, Commit::feedback());
    assert!(c.blocking_dispatch_until(LONG, |r| r.outcome(ca).is_some()));

    let home = active_vt();
    let away = if home == 2 { 3 } else { 2 };
    chvt(away);
    // Wait for the compositor to notice (seatd disables the seat, libseat tells us).
    let start = Instant::now();
    while !comp.log_text().contains("session paused") {
        assert!(
            start.elapsed() < LONG,
            "no pause; log:\n{}",
            comp.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.attach(s, Some(wb));
    let cb = c.commit(s, Commit::feedback());
    c.blocking_dispatch_until(Duration::from_millis(700), |_| false);
    assert!(
        c.rec.outcome(cb).is_none(),
        "nothing is presented while the session is paused"
    );
    assert_eq!(c.rec.releases(wa), 0, "A is still on the (paused) screen");

    chvt(home);
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.outcome(cb).is_some() && r.releases(wa) > 0),
        "B presented and A released after the VT came back; log:\n{}",
        comp.log_text()
    );
    assert!(wait_shows(&card, &centre(size), 0x0044_5566, LONG));
    let stats = comp.stop();
    let k = kms(&stats);
    assert_eq!(k["session_pauses"], 1);
    assert!(
        k["page_flips"].as_u64().unwrap_or(0) >= 2,
        "flips before the switch and after the return"
    );
}

// ------------------------------------------------------------------------------------
// The kernel refuses a client buffer: composited instead, presenting goes on
// ------------------------------------------------------------------------------------

#[test]
fn vkms_buffer_the_planes_refuse_is_composited() {
    use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_buffer_params_v1::Flags;
    let path = card_of("vkms");
    let comp = Compositor::start("refused", &path, &[]);
    let card = open_display(&path);
    let size = mode_size(&card);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    // Full screen, but XBGR8888: no VKMS plane has it, so ADDFB2 answers EINVAL. pixman
    // reads it; the display must show its colours through composition.
    let buf = alloc.allocate(size.0, size.1).expect("buffer");
    fill(&buf, 0x0056_3412); // XBGR: R=0x12 G=0x34 B=0x56
    let id = c.buffers.len();
    let params = c
        .dmabuf
        .as_ref()
        .expect("linux-dmabuf")
        .create_params(&c.qh, id);
    params.add(buf.fd.as_fd(), 0, 0, buf.stride, 0, 0);
    let wl = params.create_immed(
        size.0 as i32,
        size.1 as i32,
        u32::from_le_bytes(*b"XB24"),
        Flags::empty(),
        &c.qh,
        id,
    );
    params.destroy();
    c.buffers.push(wl);
    c.rec.buffers.push(Default::default());
    c.attach(s, Some(id));
    let commit = c.commit(s, Commit::feedback());
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some()),
        "presented; log:\n{}",
        comp.log_text()
    );
    assert_eq!(
        presented_flags(&c, commit).unwrap_or(0) & ZERO_COPY,
        0,
        "composited, not scanned out"
    );
    assert!(
        wait_shows(&card, &centre(size), 0x0012_3456, LONG),
        "the display shows the client's colours"
    );
    // Presenting goes on: frame callbacks keep coming.
    for _ in 0..5 {
        c.commit(
            s,
            Commit {
                frame: true,
                ..Commit::default()
            },
        );
        let frames = c.rec.surfaces[s].frames.len();
        assert!(c.blocking_dispatch_until(LONG, |r| r.surfaces[s].frames.len() > frames));
    }
    let stats = comp.stop();
    let k = kms(&stats);
    assert_eq!(k["direct_scanout_frames"], 0);
    assert!(
        k["composited_frames"].as_u64().unwrap_or(0) >= 1,
        "composited"
    );
    // The five commits with only a frame callback changed nothing on screen: their
    // refresh cycles sent the callbacks without an atomic commit.
    assert!(
        k["idle_cycles"].as_u64().unwrap_or(0) >= 5,
        "cycles without new content commit nothing: {k}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0);
}
