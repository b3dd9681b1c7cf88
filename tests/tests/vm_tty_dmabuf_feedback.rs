//! Per-surface dma-buf feedback on the tty backend (issue 14, part 2). Runs inside the
//! VM on VKMS: `cargo xtask test --vm-only --vm-filter vm_tty_dmabuf_feedback`.
//!
//! A wayland-client binds `zwp_linux_dmabuf_v1` (v4), asks `get_surface_feedback` for
//! its toplevel and decodes every batch (format table mapped from its fd).
//! - The primary plane (overlay planes off): a windowed surface has no scanout tranche;
//!   once fullscreen with a buffer committed it gets one first, aimed at the VKMS card
//!   (its `dev_t`, from stat), with formats the card's primary plane lists in IN_FORMATS
//!   (read here from the kernel); unfullscreened, the plain feedback again. Nothing is
//!   re-sent while nothing changes, and the main device is the one the compositor logs
//!   and reports.
//! - The overlay planes: a window that nothing overlaps gets a scanout tranche with what
//!   every overlay plane lists in IN_FORMATS; a second window cascading onto it takes
//!   that over (the lower window gets the plain feedback, the upper one the tranche),
//!   and the lower window gets it back when the upper one goes.

use std::time::Duration;

use syncbridge_tests::client::buffers::Allocator;
use syncbridge_tests::client::dmabuf_feedback::{Feedback, FeedbackQueue};
use syncbridge_tests::client::{Commit, TestClient, MOD_LINEAR, XRGB8888};
use syncbridge_tests::kernel::kms::{active_primary_in_formats, overlay_in_formats};
use syncbridge_tests::tty::*;

/// Show `buffer` on `s` and wait until it is presented.
fn show(comp: &Compositor, c: &mut TestClient, s: usize, buffer: usize, what: &str) {
    c.attach(s, Some(buffer));
    let commit = c.commit(s, Commit::feedback());
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some()),
        "{what}: the commit was presented; log:\n{}",
        comp.log_text()
    );
}

fn describe(f: &Feedback) -> String {
    f.tranches
        .iter()
        .map(|t| {
            format!(
                "[target {:#x} flags {} formats {}]",
                t.target_device,
                t.flags,
                t.formats.len()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn vkms_fullscreen_surface_gets_a_scanout_tranche_of_the_primary_plane() {
    let path = card_of("vkms");
    let card_dev = rustix::fs::stat(&path).expect("stat the VKMS card").st_rdev;
    // Overlays off: a window is composited, so only the primary plane has a tranche.
    let comp = Compositor::start("dmabuf-feedback", &path, &["--overlay-planes", "off"]);
    let card = open_display(&path);
    let size = mode_size(&card);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let version = c
        .global("zwp_linux_dmabuf_v1")
        .map(|g| g.version)
        .expect("linux-dmabuf advertised");
    assert!(version >= 4, "linux-dmabuf v{version}: no feedback");
    let s = configured_surface(&mut c);
    let mut fq = FeedbackQueue::for_surface(&c, s);

    // Windowed: a small buffer somewhere on the output.
    let small = alloc.allocate(64, 64).expect("small buffer");
    fill(&small, 0x0000_ff00);
    let w_small = c.create_dmabuf_buffer(&small);
    show(&comp, &mut c, s, w_small, "windowed");
    assert!(
        fq.pump_until(&mut c, LONG, |log| !log.batches.is_empty()),
        "the surface got its feedback"
    );
    // Let a few refresh cycles pass: nothing may change for a window.
    show(&comp, &mut c, s, w_small, "windowed again");
    fq.pump_until(&mut c, Duration::from_millis(300), |_| false);
    let windowed = fq.log.latest().expect("a feedback").clone();
    println!(
        "windowed: main device {:#x}, {}",
        windowed.main_device,
        describe(&windowed)
    );
    assert!(fq.log.errors.is_empty(), "decoding: {:?}", fq.log.errors);
    assert_eq!(
        windowed.scanout(),
        None,
        "a window among the composited content has no scanout tranche: {windowed:#?}"
    );
    assert_eq!(fq.log.batches.len(), 1, "sent once while nothing changed");

    // Fullscreen, with a buffer of the mode's size committed.
    c.surfaces[s].toplevel.set_fullscreen(None);
    let full = (
        i32::try_from(size.0).unwrap_or(0),
        i32::try_from(size.1).unwrap_or(0),
    );
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.surfaces[s].sizes.last() == Some(&full)),
        "configured fullscreen at {full:?}"
    );
    let a = alloc.allocate(size.0, size.1).expect("fullscreen buffer A");
    let b = alloc.allocate(size.0, size.1).expect("fullscreen buffer B");
    fill(&a, 0x00ff_0000);
    fill(&b, 0x0000_00ff);
    let wa = c.create_dmabuf_buffer(&a);
    let wb = c.create_dmabuf_buffer(&b);
    show(&comp, &mut c, s, wa, "fullscreen A");
    assert!(
        fq.pump_until(&mut c, LONG, |log| log
            .latest()
            .is_some_and(|f| f.scanout().is_some())),
        "a scanout tranche after going fullscreen; got {} batches: {:#?}",
        fq.log.batches.len(),
        fq.log.latest()
    );
    let fullscreen = fq.log.latest().expect("a feedback").clone();
    println!("fullscreen: {}", describe(&fullscreen));
    let scanout = fullscreen.scanout().expect("scanout tranche");
    assert_eq!(
        fullscreen.tranches.first(),
        Some(scanout),
        "the scanout tranche comes first"
    );
    assert_eq!(
        scanout.target_device, card_dev,
        "the scanout tranche targets the VKMS card ({card_dev:#x})"
    );
    let plane = active_primary_in_formats(&card);
    println!(
        "VKMS primary plane IN_FORMATS: {} pairs; scanout tranche: {} pairs: {:x?}",
        plane.len(),
        scanout.formats.len(),
        scanout.formats
    );
    assert!(
        scanout.formats.contains(&(XRGB8888, MOD_LINEAR)),
        "XRGB8888/LINEAR (what VKMS's plane takes) is offered: {:x?}",
        scanout.formats
    );
    for f in &scanout.formats {
        assert!(
            plane.contains(f),
            "{f:x?} is offered for scanout but the plane does not list it: {plane:x?}"
        );
    }
    let render = fullscreen
        .tranches
        .iter()
        .find(|t| !t.is_scanout())
        .expect("the render tranche follows");
    assert_eq!(render.target_device, fullscreen.main_device);
    assert_eq!(fullscreen.main_device, windowed.main_device);
    assert_eq!(
        render.formats, windowed.tranches[0].formats,
        "the render tranche is the windowed feedback's"
    );

    // Staying fullscreen: frames go on, no feedback is re-sent.
    let sent = fq.log.batches.len();
    show(&comp, &mut c, s, wb, "fullscreen B");
    show(&comp, &mut c, s, wa, "fullscreen A again");
    fq.pump_until(&mut c, Duration::from_millis(300), |_| false);
    assert_eq!(
        fq.log.batches.len(),
        sent,
        "no feedback re-sent while the surface stays a scanout candidate"
    );

    // Unfullscreen, back to the small buffer: the plain feedback again.
    c.surfaces[s].toplevel.unset_fullscreen();
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.surfaces[s].sizes.last() == Some(&(0, 0))),
        "configured windowed (0x0: the client chooses)"
    );
    show(&comp, &mut c, s, w_small, "windowed after fullscreen");
    assert!(
        fq.pump_until(&mut c, LONG, |log| log
            .latest()
            .is_some_and(|f| f.scanout().is_none())),
        "no scanout tranche after unset_fullscreen: {:#?}",
        fq.log.latest()
    );
    let after = fq.log.latest().expect("a feedback").clone();
    assert_eq!(after, windowed, "the plain feedback again");
    println!(
        "feedback batches: {} (windowed, fullscreen, windowed)",
        fq.log.batches.len()
    );
    assert_eq!(fq.log.batches.len(), 3, "one batch per change");
    assert!(fq.log.errors.is_empty(), "decoding: {:?}", fq.log.errors);

    // The main device is what the compositor logs and reports.
    let log = comp.log_text();
    assert!(
        log.contains(&format!("main_device_dev={}", windowed.main_device)),
        "the compositor logs main device {:#x}; log:\n{log}",
        windowed.main_device
    );
    let stats = comp.stop();
    let render_device = stats["render_device"]
        .as_str()
        .expect("a render device is reported");
    let rdev = rustix::fs::stat(render_device)
        .expect("stat the render device")
        .st_rdev;
    assert_eq!(
        rdev, windowed.main_device,
        "the feedback's main device is the reported render device {render_device}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0);
    println!(
        "main device: {render_device} ({rdev:#x}); scanout target: {} ({card_dev:#x})",
        path.display()
    );
}

/// Whether `f` has a scanout tranche first, aimed at `card_dev`, then the render tranche.
fn scanout_first(f: &Feedback, card_dev: u64) -> bool {
    f.tranches
        .first()
        .is_some_and(|t| t.is_scanout() && t.target_device == card_dev)
        && f.tranches.iter().any(|t| !t.is_scanout())
}

#[test]
fn vkms_window_nothing_overlaps_gets_a_scanout_tranche_of_the_overlay_planes() {
    let path = card_of("vkms");
    let card_dev = rustix::fs::stat(&path).expect("stat the VKMS card").st_rdev;
    let comp = Compositor::start("dmabuf-feedback-overlay", &path, &[]);
    let card = open_display(&path);
    let overlays = overlay_in_formats(&card);
    assert!(
        !overlays.is_empty(),
        "VKMS has overlay planes (enable_overlay=1)"
    );
    let alloc = Allocator::vgem();

    // The lower window: 64x64 at the first cascade place, nothing above it.
    let mut c1 = comp.client();
    let s1 = configured_surface(&mut c1);
    let mut fq1 = FeedbackQueue::for_surface(&c1, s1);
    let b1 = alloc.allocate(64, 64).expect("buffer 1");
    fill(&b1, 0x0000_ff00);
    let w1 = c1.create_dmabuf_buffer(&b1);
    show(&comp, &mut c1, s1, w1, "window 1");
    assert!(
        fq1.pump_until(&mut c1, LONG, |log| log
            .latest()
            .is_some_and(|f| scanout_first(f, card_dev))),
        "window 1, overlapped by nothing: a scanout tranche of the overlay planes first; got {} batches: {:#?}",
        fq1.log.batches.len(),
        fq1.log.latest()
    );
    let free = fq1.log.latest().expect("a feedback").clone();
    // Before its first buffer the window was no candidate: maybe a plain batch first.
    let batches_free = fq1.log.batches.len();
    println!("window 1 alone: {} (batch {batches_free})", describe(&free));
    let scanout = free.scanout().expect("scanout tranche");
    assert!(
        scanout.formats.contains(&(XRGB8888, MOD_LINEAR)),
        "XRGB8888/LINEAR (what VKMS's overlays take) is offered: {:x?}",
        scanout.formats
    );
    for (i, plane) in overlays.iter().enumerate() {
        for f in &scanout.formats {
            assert!(
                plane.contains(f),
                "{f:x?} is offered for the overlays but overlay plane {i} does not list it: {plane:x?}"
            );
        }
    }
    println!(
        "VKMS overlay planes: {}, IN_FORMATS {:?} pairs; offered: {} pairs",
        overlays.len(),
        overlays.iter().map(Vec::len).collect::<Vec<_>>(),
        scanout.formats.len()
    );

    // The upper window cascades onto it: the lower one is overlapped now.
    let mut c2 = comp.client();
    let s2 = configured_surface(&mut c2);
    let mut fq2 = FeedbackQueue::for_surface(&c2, s2);
    let b2 = alloc.allocate(64, 64).expect("buffer 2");
    fill(&b2, 0x00ff_0000);
    let w2 = c2.create_dmabuf_buffer(&b2);
    show(&comp, &mut c2, s2, w2, "window 2");
    assert!(
        fq2.pump_until(&mut c2, LONG, |log| log
            .latest()
            .is_some_and(|f| scanout_first(f, card_dev))),
        "window 2, on top: a scanout tranche; got {:#?}",
        fq2.log.latest()
    );
    show(&comp, &mut c1, s1, w1, "window 1 again, overlapped");
    assert!(
        fq1.pump_until(&mut c1, LONG, |log| log
            .latest()
            .is_some_and(|f| f.scanout().is_none())),
        "window 1, overlapped by window 2: the plain feedback; got {:#?}",
        fq1.log.latest()
    );
    let covered = fq1.log.latest().expect("a feedback").clone();
    println!("window 1 covered: {}", describe(&covered));
    assert_eq!(
        covered.tranches.len(),
        1,
        "only the render tranche: {covered:#?}"
    );
    assert_eq!(
        Some(&covered.tranches[0]),
        free.tranches.iter().find(|t| !t.is_scanout()),
        "the plain feedback is the render tranche of the free one"
    );
    assert_eq!(
        fq2.log.latest().and_then(Feedback::scanout),
        Some(scanout),
        "the same overlay tranche for window 2"
    );

    // The upper window goes: the lower one is free again.
    drop(fq2);
    drop(c2);
    assert!(
        fq1.pump_until(&mut c1, LONG, |log| log
            .latest()
            .is_some_and(|f| scanout_first(f, card_dev))),
        "window 1, free again: the scanout tranche back; got {:#?}",
        fq1.log.latest()
    );
    assert_eq!(fq1.log.latest(), Some(&free), "the same feedback as before");
    assert_eq!(
        fq1.log.batches.len(),
        batches_free + 2,
        "one batch per change (free, covered, free)"
    );
    assert!(fq1.log.errors.is_empty(), "decoding: {:?}", fq1.log.errors);

    // The tranche's promise: window 1's buffer did go on an overlay plane.
    show(&comp, &mut c1, s1, w1, "window 1 once more");
    let stats = comp.stop();
    let k = &stats["kms"];
    let overlay_frames = k["overlay_frames"].as_u64().unwrap_or(0);
    println!("overlay frames: {overlay_frames}");
    assert!(
        overlay_frames >= 1,
        "a free window's dma-buf was shown on an overlay plane: {k}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0);
}
