//! Per-surface dma-buf feedback on the tty backend (issue 14, part 2). Runs inside the
//! VM on VKMS: `cargo xtask test --vm-only --vm-filter vm_tty_dmabuf_feedback`.
//!
//! A wayland-client binds `zwp_linux_dmabuf_v1` (v4), asks `get_surface_feedback` for
//! its toplevel and decodes every batch (format table mapped from its fd). A windowed
//! surface has no scanout tranche; once fullscreen with a buffer committed it gets one
//! first, aimed at the VKMS card (its `dev_t`, from stat), with formats the card's
//! primary plane lists in IN_FORMATS (read here from the kernel); unfullscreened, the
//! plain feedback again. Nothing is re-sent while nothing changes, and the main device
//! is the one the compositor logs and reports.

use std::time::Duration;

use syncbridge_tests::client::buffers::Allocator;
use syncbridge_tests::client::dmabuf_feedback::{Feedback, FeedbackQueue};
use syncbridge_tests::client::{Commit, TestClient, MOD_LINEAR, XRGB8888};
use syncbridge_tests::kernel::kms::active_primary_in_formats;
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
    let comp = Compositor::start("dmabuf-feedback", &path, &[]);
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
