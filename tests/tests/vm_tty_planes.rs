//! Overlay planes and the cursor plane on the tty (KMS) backend. Runs inside the VM on
//! VKMS (loaded with `enable_overlay=1 enable_cursor=1`):
//! `cargo xtask test --vm-only --vm-filter vm_tty_planes`.
//!
//! Each test starts `syncbridge --backend tty --drm-device <vkms card>` and reads back
//! the kernel's plane state of the output's CRTC ([`syncbridge_tests::tty::planes`]):
//! which framebuffer each plane shows, where, and its pixels (GETFB2 + PRIME + mmap; the
//! test runs as root, so the kernel hands out the framebuffers' GEM handles).
//!
//! - A window whose dma-buf a plane can show as is, and which no window above it
//!   overlaps, goes on an overlay plane at its place instead of being composited: the
//!   primary plane's composition leaves it out, its presentation feedback says
//!   `zero_copy`, and the buffer it replaces is released early with the out-fence.
//! - An overlapped window is composited below; `--overlay-planes off` composites all.
//! - The pointer is drawn on the cursor plane from the compositor's own ARGB8888
//!   buffers: a built-in arrow, the client's `wl_pointer.set_cursor` image (copied from
//!   its shm buffer, placed by its hotspot), or nothing once the client hides it.

use std::os::fd::AsFd;
use std::time::Duration;

use syncbridge_bridge::dmabuf::{export_sync_file, Access};
use syncbridge_tests::client::buffers::{Allocator, DmaBuffer};
use syncbridge_tests::client::{BufferId, Commit, SurfaceId, TestClient};
use syncbridge_tests::kernel::card::Card;
use syncbridge_tests::kernel::uinput::VirtualPointer;
use syncbridge_tests::tty::*;
use wayland_client::protocol::wl_shm;

/// wp_presentation_feedback kinds.
const VSYNC: u32 = 0x1;
const HW_CLOCK: u32 = 0x2;
const HW_COMPLETION: u32 = 0x4;
const ZERO_COPY: u32 = 0x8;
/// What every tty `presented` carries: the kernel's page flip.
const HW: u32 = VSYNC | HW_CLOCK | HW_COMPLETION;

/// The window buffers' size: smaller than any mode, so never the primary plane's.
const W: u32 = 200;
const H: u32 = 100;
/// Where the second window cascades to (the compositor's `CASCADE_STEP`).
const CASCADE: u32 = 32;

fn rgb(pixel: u32) -> u32 {
    pixel & 0x00ff_ffff
}

/// A distinct colour per frame.
fn colour(frame: u32) -> u32 {
    (frame.wrapping_mul(0x0049_2f13).wrapping_add(0x0030_6090)) & 0x00ff_ffff
}

/// A `W`x`H` vgem buffer of `colour`.
fn window_buffer(alloc: &Allocator, colour: u32) -> DmaBuffer {
    let b = alloc.allocate(W, H).expect("a window-sized vgem buffer");
    fill(&b, colour);
    b
}

/// Attach `buffer` to `s`, commit with presentation feedback and wait for it; the flags of
/// `presented` (panics when discarded).
fn present(
    comp: &Compositor,
    c: &mut TestClient,
    s: SurfaceId,
    buffer: BufferId,
    what: &str,
) -> u32 {
    c.attach(s, Some(buffer));
    let commit = c.commit(s, Commit::feedback());
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some()),
        "{what}: presentation feedback; log:\n{}",
        comp.log_text()
    );
    presented_flags(c, commit).unwrap_or_else(|| panic!("{what}: presented, not discarded"))
}

/// Points inside a `w`x`h` framebuffer: its corners and its centre.
fn inside(w: u32, h: u32) -> Vec<(u32, u32)> {
    vec![
        (1, 1),
        (w / 2, h / 2),
        (w - 2, 1),
        (1, h - 2),
        (w - 2, h - 2),
    ]
}

/// Waits until an overlay plane shows a `W`x`H` framebuffer at `pos` whose pixels read
/// back as `colour`; returns that plane.
fn expect_overlay(
    comp: &Compositor,
    card: &Card,
    pos: (i64, i64),
    colour: u32,
    what: &str,
) -> PlaneState {
    let points = inside(W, H);
    let size = (u64::from(W), u64::from(H));
    let there = |p: &PlaneState| p.kind == PlaneKind::Overlay && p.shows_at(pos, size);
    let mut last_pixels = Vec::new();
    let found = wait_planes(card, LONG, |planes| {
        planes.iter().filter(|p| there(p)).any(|p| {
            let Some(px) = p.fb.and_then(|fb| read_pixels(card, fb, &points)) else {
                return false;
            };
            let ok = px.iter().all(|v| rgb(*v) == colour);
            last_pixels = px;
            ok
        })
    });
    match found {
        Ok(planes) => planes
            .into_iter()
            .find(there)
            .expect("the overlay plane just seen"),
        Err(last) => panic!(
            "{what}: no overlay plane shows {W}x{H} of {colour:06x} at {pos:?}; planes {last:#?}; \
             pixels of the overlay there {last_pixels:06x?}; log:\n{}",
            comp.log_text()
        ),
    }
}

/// Pixels of the primary plane's framebuffer (the composition) at `points`.
fn primary_pixels(card: &Card, points: &[(u32, u32)]) -> Vec<u32> {
    let fb = primary_fb(card).expect("a framebuffer on the primary plane");
    read_pixels(card, fb, points).expect("readback of the primary plane")
}

fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

// ------------------------------------------------------------------------------------
// Overlay planes
// ------------------------------------------------------------------------------------

/// One `W`x`H` vgem window at the output's origin goes on an overlay plane: presented
/// with `zero_copy`, the plane shows its buffer at (0, 0) in its size and the composition
/// on the primary plane leaves it out. Then the client alternates two buffers, redrawing
/// each once it is released: every replaced buffer comes back with the commit's
/// out-fence in it (export(Write) signals), and the overlay shows the new frame.
#[test]
fn vkms_window_on_an_overlay_plane_is_released_early_and_reads_back() {
    let path = card_of("vkms");
    let comp = Compositor::start("planes-overlay", &path, &["--release-mode", "early"]);
    let card = open_display(&path);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let bufs = [
        window_buffer(&alloc, colour(0)),
        window_buffer(&alloc, colour(1)),
    ];
    let ids: Vec<BufferId> = bufs.iter().map(|b| c.create_dmabuf_buffer(b)).collect();

    let flags = present(&comp, &mut c, s, ids[0], "A");
    assert_eq!(
        flags,
        HW | ZERO_COPY,
        "A is on a plane: vsync|hw_clock|hw_completion|zero_copy (flags {flags:#x})"
    );
    let plane = expect_overlay(&comp, &card, (0, 0), colour(0), "A");
    println!("A on overlay plane {:?}", plane.handle);
    let below = primary_pixels(&card, &[(10, 10), (W / 2, H / 2), (W - 10, H - 10)]);
    assert!(
        below.iter().all(|p| rgb(*p) != colour(0)),
        "the composition on the primary plane leaves the overlay's window out: {below:06x?}"
    );

    let rounds = 6u32;
    let mut shown = 0usize;
    let mut pending_at_release = 0;
    for round in 1..=rounds {
        let next = 1 - shown;
        // `next` is free: it was released (and its fences waited for) in the last round.
        fill(&bufs[next], colour(round));
        let released = c.rec.releases(ids[shown]);
        let held = c.rec.releases(ids[next]);
        c.attach(s, Some(ids[next]));
        let commit = c.commit(s, Commit::feedback());
        assert!(
            c.blocking_dispatch_until(LONG, |r| r.releases(ids[shown]) > released),
            "round {round}: the buffer the overlay stopped showing was released; log:\n{}",
            comp.log_text()
        );
        let fence = export_sync_file(bufs[shown].fd.as_fd(), Access::Write)
            .expect("export(Write) of the released buffer");
        if !fence.is_signaled().expect("poll the exported fence") {
            pending_at_release += 1;
        }
        fence
            .wait(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("round {round}: the released buffer's fences signal: {e}"));
        assert!(
            c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some()),
            "round {round}: presented; log:\n{}",
            comp.log_text()
        );
        let flags = presented_flags(&c, commit)
            .unwrap_or_else(|| panic!("round {round}: presented, not discarded"));
        assert_eq!(
            flags,
            HW | ZERO_COPY,
            "round {round}: on a plane (flags {flags:#x})"
        );
        expect_overlay(
            &comp,
            &card,
            (0, 0),
            colour(round),
            &format!("round {round}"),
        );
        assert_eq!(
            c.rec.releases(ids[next]),
            held,
            "round {round}: the buffer on the overlay plane is held"
        );
        shown = next;
    }
    // The buffer on the plane stays held while nothing replaces it.
    let held = c.rec.releases(ids[shown]);
    c.blocking_dispatch_until(Duration::from_millis(200), |_| false);
    assert_eq!(
        c.rec.releases(ids[shown]),
        held,
        "the buffer the overlay shows is not released"
    );
    println!(
        "overlay: export(Write) of the replaced buffer was pending at release in {pending_at_release}/{rounds} rounds"
    );

    let stats = comp.stop();
    let k = kms(&stats);
    let rounds = u64::from(rounds);
    assert!(
        count(&k["overlay_planes"]) >= 1,
        "the output claimed an overlay plane: {k}"
    );
    // A and each round's buffer were shown on the overlay, each by a commit of its own.
    assert!(
        count(&k["overlay_frames"]) > rounds,
        "every frame of the window was on an overlay: {k}"
    );
    assert!(
        count(&k["overlay_assignments"]) > rounds,
        "each new buffer was put on the overlay: {k}"
    );
    assert!(
        count(&k["early_releases"]) >= rounds,
        "each replaced buffer went back early, with the out-fence: {k}"
    );
    assert!(
        k["overlay_test_failures"].is_u64(),
        "the stats count refused overlays: {k}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0);
}

/// Two `W`x`H` vgem windows, the second one on top at (32, 32) overlapping the first: the
/// top one goes on an overlay plane at its place; the one below it is composited on the
/// primary plane (its colour there where it alone is, and its feedback has no
/// `zero_copy`), while the overlay's window is not in the composition.
#[test]
fn vkms_overlapped_window_is_composited_below_the_overlay() {
    let path = card_of("vkms");
    let comp = Compositor::start("planes-overlapped", &path, &[]);
    let card = open_display(&path);
    let alloc = Allocator::vgem();
    let (low, top) = (0x00a0_5010u32, 0x0010_60b0u32);
    let mut c = comp.client();

    let s1 = configured_surface(&mut c);
    let a = window_buffer(&alloc, low);
    let wa = c.create_dmabuf_buffer(&a);
    let flags = present(&comp, &mut c, s1, wa, "the lower window alone");
    assert_eq!(
        flags,
        HW | ZERO_COPY,
        "alone, it is on a plane (flags {flags:#x})"
    );

    let s2 = configured_surface(&mut c);
    let b = window_buffer(&alloc, top);
    let wb = c.create_dmabuf_buffer(&b);
    let flags = present(&comp, &mut c, s2, wb, "the top window");
    assert_eq!(
        flags,
        HW | ZERO_COPY,
        "the top window is on a plane (flags {flags:#x})"
    );
    // A new frame of the lower window: overlapped, so composited.
    let a2 = window_buffer(&alloc, low);
    let wa2 = c.create_dmabuf_buffer(&a2);
    let flags = present(&comp, &mut c, s1, wa2, "the lower window, overlapped");
    assert_eq!(
        flags, HW,
        "the overlapped window is composited: vsync|hw_clock|hw_completion, no zero_copy (flags {flags:#x})"
    );

    let at = i64::from(CASCADE);
    expect_overlay(&comp, &card, (at, at), top, "the top window");
    let on_origin: Vec<PlaneState> = shown_overlays(&card)
        .into_iter()
        .filter(|p| p.crtc_pos == (0, 0))
        .collect();
    assert!(
        on_origin.is_empty(),
        "the overlapped window is on no overlay plane: {on_origin:#?}"
    );
    // Where only the lower window is: its colour, composited.
    let alone = [(10, 10), (W - 10, 10), (10, H - 10)];
    assert!(
        wait_shows(&card, &alone, low, LONG),
        "the primary plane shows the lower window where it alone is; log:\n{}",
        comp.log_text()
    );
    // Where only the top window is: not composited (the overlay shows it).
    let only_top = [(W, H + 10), (W + CASCADE - 10, H + CASCADE - 10)];
    let px = primary_pixels(&card, &only_top);
    assert!(
        px.iter().all(|p| rgb(*p) != top),
        "the overlay's window is not in the composition: {px:06x?}"
    );

    let stats = comp.stop();
    let k = kms(&stats);
    assert!(count(&k["overlay_frames"]) >= 1, "{k}");
    assert!(count(&k["composited_frames"]) >= 1, "{k}");
    assert_eq!(stats["protocol_errors_sent"], 0);
}

/// `--overlay-planes off`: the window that would go on an overlay plane is composited.
#[test]
fn vkms_overlay_planes_off_composites_everything() {
    let path = card_of("vkms");
    let comp = Compositor::start("planes-off", &path, &["--overlay-planes", "off"]);
    let card = open_display(&path);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let window = 0x0012_3456;
    let a = window_buffer(&alloc, window);
    let wa = c.create_dmabuf_buffer(&a);
    let flags = present(&comp, &mut c, s, wa, "the window");
    assert_eq!(
        flags, HW,
        "composited: vsync|hw_clock|hw_completion, no zero_copy (flags {flags:#x})"
    );
    assert!(
        wait_shows(
            &card,
            &[(10, 10), (W / 2, H / 2), (W - 10, H - 10)],
            window,
            LONG
        ),
        "the primary plane shows the window; log:\n{}",
        comp.log_text()
    );
    let overlays = shown_overlays(&card);
    assert!(
        overlays.is_empty(),
        "no overlay plane shows anything: {overlays:#?}"
    );
    let stats = comp.stop();
    let k = kms(&stats);
    assert_eq!(count(&k["overlay_frames"]), 0, "{k}");
    assert_eq!(count(&k["overlay_assignments"]), 0, "{k}");
    assert!(count(&k["composited_frames"]) >= 1, "{k}");
    assert_eq!(stats["protocol_errors_sent"], 0);
}

// ------------------------------------------------------------------------------------
// The cursor plane
// ------------------------------------------------------------------------------------

/// Moves far up and left: the compositor clamps the pointer to the output's (0, 0).
fn pointer_to_origin(p: &mut VirtualPointer) {
    for _ in 0..3 {
        p.move_by(-2000, -2000).expect("uinput motion");
    }
}

/// Every pixel of a `size` image, row by row.
fn every_pixel(size: (u64, u64)) -> Vec<(u32, u32)> {
    let (w, h) = (
        u32::try_from(size.0).expect("cursor width"),
        u32::try_from(size.1).expect("cursor height"),
    );
    (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).collect()
}

/// Waits until the cursor plane shows a cursor-sized framebuffer at `pos` whose pixels at
/// `points` satisfy `check`; returns the plane and those pixels.
fn expect_cursor(
    comp: &Compositor,
    card: &Card,
    pos: (i64, i64),
    points: &[(u32, u32)],
    what: &str,
    mut check: impl FnMut(&[u32]) -> bool,
) -> (PlaneState, Vec<u32>) {
    let size = cursor_size(card);
    let mut seen = None;
    let found = wait_planes(card, LONG, |planes| {
        let Some(p) = planes
            .iter()
            .find(|p| p.kind == PlaneKind::Cursor && p.shows_at(pos, size))
        else {
            return false;
        };
        let Some(px) = p.fb.and_then(|fb| read_pixels(card, fb, points)) else {
            return false;
        };
        let ok = check(&px);
        seen = Some((p.clone(), px));
        ok
    });
    match (found, seen) {
        (Ok(_), Some(seen)) => seen,
        (last, seen) => panic!(
            "{what}: the cursor plane does not show the expected {size:?} image at {pos:?}; \
             planes {last:#?}; its pixels at {points:?}: {:08x?}; log:\n{}",
            seen.map(|(_, px)| px),
            comp.log_text()
        ),
    }
}

/// The pointer on the cursor plane, from a uinput mouse: at the output's origin over a
/// (composited) shm window, the built-in arrow (hotspot at its tip: opaque black and
/// white pixels, the rest transparent) at (0, 0), cursor-sized; then the client's
/// `set_cursor` image (16x16 shm, copied top-left into the compositor's cursor buffer)
/// with its hotspot (4, 4) at the pointer, so at (-4, -4); then `set_cursor(NULL)`
/// switches the plane off.
#[test]
fn vkms_cursor_plane_shows_the_default_and_the_client_cursor() {
    let path = card_of("vkms");
    // Created before the compositor: libinput finds it when it enumerates udev.
    let mut ptr = VirtualPointer::create("syncbridge-test-ptr-cursor").expect("uinput pointer");
    let comp = Compositor::start("planes-cursor", &path, &[]);
    comp.wait_device_added(ptr.name());
    let card = open_display(&path);
    let size = cursor_size(&card);
    println!("cursor size (DRM_CAP_CURSOR_WIDTH x HEIGHT): {size:?}");

    let mut c = comp.client();
    c.bind_seat();
    assert!(
        c.rec.input.pointer.is_some(),
        "the seat has a pointer (capabilities {:?})",
        c.rec.input.capabilities
    );
    // shm: composited, whatever is on the planes.
    let s = configured_surface(&mut c);
    let window = c.create_shm_buffer_filled(300, 300, wl_shm::Format::Xrgb8888, 0x0030_3030);
    present(&comp, &mut c, s, window, "the shm window");

    pointer_to_origin(&mut ptr);
    let wl = c.surfaces[s].wl.clone();
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.input.pointer_focus() == Some(&wl)),
        "the pointer enters the window at the origin; pointer events {:?}",
        c.rec.input.pointer_events
    );

    // The built-in arrow, its tip (the hotspot) at the pointer.
    let all = every_pixel(size);
    let (plane, px) = expect_cursor(&comp, &card, (0, 0), &all, "the default arrow", |px| {
        px.iter().any(|p| p >> 24 == 0xff)
    });
    assert_eq!(
        plane.src_size, size,
        "the plane reads the whole cursor buffer: {plane:?}"
    );
    let white = px.iter().filter(|p| **p == 0xffff_ffff).count();
    let black = px.iter().filter(|p| **p == 0xff00_0000).count();
    let clear = px.iter().filter(|p| *p >> 24 == 0).count();
    println!(
        "default arrow: {white} white, {black} black, {clear} transparent of {} pixels",
        px.len()
    );
    assert!(
        white > 0 && black > 0 && clear > 0,
        "the arrow has opaque white and black pixels on a transparent ground: {white} white, {black} black, {clear} transparent"
    );
    assert_eq!(
        white + black + clear,
        px.len(),
        "every other pixel of the arrow is transparent"
    );
    let tip: Vec<u32> = all
        .iter()
        .zip(&px)
        .filter(|((x, y), _)| *x < 3 && *y < 3)
        .map(|(_, p)| *p)
        .collect();
    assert!(
        tip.iter().any(|p| p >> 24 == 0xff),
        "the hotspot (0, 0) is the arrow's tip: top-left 3x3 {tip:08x?}"
    );

    // The client's cursor: set_cursor first, then its image (as weston's clients do).
    let green = 0xff00_ff00u32;
    let cursor = c.create_surface();
    let image = c.create_shm_buffer_filled(16, 16, wl_shm::Format::Argb8888, green);
    c.set_cursor(Some(&cursor), (4, 4));
    cursor.attach(Some(&c.buffers[image]), 0, 0);
    cursor.damage_buffer(0, 0, 16, 16);
    cursor.commit();
    c.flush();
    let inside = [(1, 1), (8, 8), (15, 15), (0, 15), (15, 0)];
    // The rest of the cursor buffer is cleared (the arrow drawn before is gone).
    let last = every_pixel(size).last().copied().expect("a cursor pixel");
    let outside = [(16, 16), (16, 0), (0, 16), last];
    let points: Vec<(u32, u32)> = inside.iter().chain(&outside).copied().collect();
    let (plane, px) = expect_cursor(&comp, &card, (-4, -4), &points, "the client cursor", |px| {
        px[..inside.len()].iter().all(|p| *p == green)
            && px[inside.len()..].iter().all(|p| p >> 24 == 0)
    });
    println!("client cursor on {:?}: {px:08x?}", plane.handle);

    // Hidden: the plane is switched off.
    c.set_cursor(None, (0, 0));
    if let Err(last) = wait_planes(&card, LONG, |planes| {
        planes
            .iter()
            .any(|p| p.kind == PlaneKind::Cursor && p.fb.is_none())
    }) {
        panic!(
            "set_cursor(NULL): the cursor plane still shows a framebuffer: {last:#?}; log:\n{}",
            comp.log_text()
        );
    }

    // The client stays: without its window the pointer would be over no surface, where
    // the arrow is shown again.
    let stats = comp.stop();
    drop(c);
    let k = kms(&stats);
    assert!(
        count(&k["cursor_planes"]) >= 1,
        "the output has a cursor plane: {k}"
    );
    assert!(
        count(&k["cursor_uploads"]) >= 2,
        "the arrow and the client's image were written: {k}"
    );
    // The arrow at (0, 0) and the client's image at (-4, -4): two commits showing one.
    assert!(count(&k["cursor_frames"]) >= 2, "{k}");
    assert_eq!(k["cursor_source"], "hidden", "the last image: {k}");
    assert_eq!(stats["protocol_errors_sent"], 0);
}
