//! The tty backend when the kernel refuses a real commit, and without the bridge's private
//! dma-buf (issue 12, items 5 and 7). Runs inside the VM on VKMS:
//! `cargo xtask test --vm-only --vm-filter vm_tty_kms_faults`.
//!
//! Refused commits are provoked for real: `--kms-inject-client-commit-failure` and
//! `--kms-inject-composited-commit-failure-every N` give the selected real commits a
//! read-only `OUT_FENCE_PTR`, which TEST_ONLY never writes; the kernel refuses the real
//! commit with EFAULT and nothing changes on screen.

use std::os::fd::AsFd;
use std::time::Duration;

use syncbridge_bridge::dmabuf::{export_sync_file, Access};
use syncbridge_tests::client::buffers::{Allocator, DmaBuffer};
use syncbridge_tests::client::harness::virtio_syncobj_device;
use syncbridge_tests::client::Commit;
use syncbridge_tests::tty::without_private_dmabuf;
use syncbridge_tests::tty::*;

/// wp_presentation_feedback kind: zero_copy.
const ZERO_COPY: u32 = 0x8;

fn colour(frame: u32) -> u32 {
    // Distinct, far-apart colours per frame.
    (frame.wrapping_mul(0x0049_2f13).wrapping_add(0x0030_6090)) & 0x00ff_ffff
}

// ------------------------------------------------------------------------------------
// Item 5: a client buffer that passes TEST_ONLY but fails the real commit
// ------------------------------------------------------------------------------------

/// Every real commit that puts a client buffer on the plane is refused by the kernel.
/// Each buffer must be composited after its first refusal: the client's frames keep
/// reaching the display instead of the output retrying the same commit forever.
#[test]
fn vkms_client_buffer_refused_by_the_real_commit_is_composited() {
    let path = card_of("vkms");
    let comp = Compositor::start(
        "client-commit-refused",
        &path,
        &["--kms-inject-client-commit-failure"],
    );
    let card = open_display(&path);
    let size = mode_size(&card);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let bufs: Vec<DmaBuffer> = (0..2)
        .map(|_| alloc.allocate(size.0, size.1).expect("buffer"))
        .collect();
    let ids: Vec<usize> = bufs.iter().map(|b| c.create_dmabuf_buffer(b)).collect();
    let mut released_seen = [0usize; 2];
    let frames = 6u32;
    for frame in 0..frames {
        let i = (frame % 2) as usize;
        if frame >= 2 {
            assert!(
                c.blocking_dispatch_until(LONG, |r| r.releases(ids[i]) > released_seen[i]),
                "buffer {i} released (frame {frame}); log:\n{}",
                comp.log_text()
            );
            released_seen[i] = c.rec.releases(ids[i]);
            export_sync_file(bufs[i].fd.as_fd(), Access::Write)
                .expect("export")
                .wait(Duration::from_secs(2))
                .expect("fences signal");
        }
        fill(&bufs[i], colour(frame));
        c.attach(s, Some(ids[i]));
        let commit = c.commit(s, Commit::feedback());
        assert!(
            c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some()),
            "frame {frame} presented: the output froze on a client buffer whose real commit the kernel refuses; log:\n{}",
            comp.log_text()
        );
        let flags = presented_flags(&c, commit).expect("presented, not discarded");
        assert_eq!(
            flags & ZERO_COPY,
            0,
            "frame {frame} composited, not scanned out"
        );
        assert!(
            wait_shows(&card, &centre(size), colour(frame), LONG),
            "the display shows frame {frame} ({:06x})",
            colour(frame)
        );
    }
    let stats = comp.stop();
    let k = kms(&stats);
    let injected = k["injected_commit_failures"].as_u64().unwrap_or(0);
    let refused = k["failed_commits"]["client_buffers_refused"]
        .as_u64()
        .unwrap_or(0);
    println!("client-buffer commits refused by the kernel: {injected}; buffers refused for scanout: {refused}");
    assert_eq!(injected, 2, "one refused real commit per buffer: {k}");
    assert_eq!(refused, 2, "each buffer refused for scanout once: {k}");
    assert_eq!(k["commit_errors"].as_u64(), Some(injected), "{k}");
    assert_eq!(k["direct_scanout_frames"], 0, "{k}");
    // Never on the plane: no scanout release, early or at a flip.
    assert_eq!(k["early_releases"], 0, "{k}");
    assert_eq!(k["flip_releases"], 0, "{k}");
    assert_eq!(stats["protocol_errors_sent"], 0);
}

/// Every 3rd composited commit is refused. A frame whose commit failed must not get its
/// presentation feedback or frame callback until a commit that shows it succeeded, and
/// that commit must show the whole current content (the damage tracker must not believe
/// the refused frame reached the screen). Checked at each `presented`: the frame the
/// display has committed shows the client's colour (a nonblocking commit sets the plane's
/// framebuffer when it returns, and feedback goes out after it).
#[test]
fn vkms_refused_composited_commit_is_redrawn_before_its_feedback() {
    let path = card_of("vkms");
    let comp = Compositor::start(
        "composited-commit-refused",
        &path,
        // Composited frames are the subject: the windows would otherwise go on an
        // overlay plane, leaving the primary plane without their pixels.
        &[
            "--kms-inject-composited-commit-failure-every",
            "3",
            "--overlay-planes",
            "off",
        ],
    );
    let card = open_display(&path);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    // Smaller than the output: composited.
    let frames = 9u32;
    let bufs: Vec<DmaBuffer> = (0..frames)
        .map(|_| alloc.allocate(200, 100).expect("buffer"))
        .collect();
    for (f, b) in bufs.iter().enumerate() {
        fill(b, colour(f as u32));
    }
    let ids: Vec<usize> = bufs.iter().map(|b| c.create_dmabuf_buffer(b)).collect();
    let inside = [(10u32, 10u32), (100, 50), (190, 90)];
    // The whole output: a grid, each point inside the window or on the background.
    let size = mode_size(&card);
    let grid: Vec<(u32, u32)> = (0..8)
        .flat_map(|gy| (0..8).map(move |gx| (gx * (size.0 - 1) / 7, gy * (size.1 - 1) / 7)))
        .collect();
    let in_window = |&(x, y): &(u32, u32)| x < 200 && y < 100;
    let mut background = None;
    // (frame, wanted, what the window showed) when its feedback and frame callback came.
    let mut not_shown = Vec::new();
    // (frame, grid points that differ from the frame's full content).
    let mut incomplete = Vec::new();
    for frame in 0..frames {
        c.attach(s, Some(ids[frame as usize]));
        let callbacks = c.rec.surfaces[s].frames.len();
        let commit = c.commit(s, Commit::frame_and_feedback());
        assert!(
            c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some()
                && r.surfaces[s].frames.len() > callbacks),
            "frame {frame}: presented and its frame callback; log:\n{}",
            comp.log_text()
        );
        assert!(
            presented_flags(&c, commit).is_some(),
            "frame {frame} presented"
        );
        // What the display has committed right now.
        let fb = primary_fb(&card).expect("a framebuffer on the primary plane");
        let px = read_pixels(&card, fb, &inside).expect("readback");
        let all = read_pixels(&card, fb, &grid).expect("readback");
        let want = colour(frame);
        let bg = *background.get_or_insert_with(|| {
            grid.iter()
                .zip(&all)
                .find(|(p, _)| !in_window(p))
                .map_or(0, |(_, v)| v & 0x00ff_ffff)
        });
        assert_ne!(bg, want, "background and window differ");
        if !px.iter().all(|p| p & 0x00ff_ffff == want) {
            not_shown.push((frame, want, px));
        }
        let wrong: Vec<_> = grid
            .iter()
            .zip(&all)
            .filter(|(p, v)| *v & 0x00ff_ffff != if in_window(p) { want } else { bg })
            .map(|(p, v)| (*p, v & 0x00ff_ffff))
            .collect();
        if !wrong.is_empty() {
            incomplete.push((frame, wrong));
        }
    }
    println!("feedback for a frame not on screen: {not_shown:06x?}");
    println!("frames not shown in full at their feedback: {incomplete:x?}");
    // (b) After a refused composited commit, the frame committed next holds the whole
    // current content.
    assert!(
        incomplete.is_empty(),
        "at its feedback, the display did not show the frame's full content (frame, [(point, shown)]): {incomplete:x?}; log:\n{}",
        comp.log_text()
    );
    // (c) No presentation feedback or frame callback for a frame that is not on screen.
    assert!(
        not_shown.is_empty(),
        "presentation feedback and frame callbacks went out while the display showed another frame: (frame, wanted, shown) {not_shown:06x?}"
    );
    // The last frame stays on screen.
    assert!(wait_shows(&card, &inside, colour(frames - 1), LONG));
    let stats = comp.stop();
    let k = kms(&stats);
    let injected = k["injected_commit_failures"].as_u64().unwrap_or(0);
    let lost = k["failed_commits"]["composited_frames_lost"]
        .as_u64()
        .unwrap_or(0);
    println!("composited commits refused: {injected}, frames redrawn in full after one: {lost}");
    assert!(injected >= 2, "the kernel refused composited commits: {k}");
    assert_eq!(lost, injected, "{k}");
    assert_eq!(k["commit_errors"].as_u64(), Some(injected), "{k}");
}

// ------------------------------------------------------------------------------------
// Item 7: IN_FENCE_FD without dma-heap/udmabuf access
// ------------------------------------------------------------------------------------

/// Unprivileged (no dma-heap, no udmabuf), the compositor still sets IN_FENCE_FD, with a
/// stub from its own KMS buffer. A linux-drm-syncobj-v1 client's buffer B carries an
/// unsignalled implicit (vgem) write fence, which the protocol says to ignore: B goes on
/// the plane once its acquire point signalled. Then C. The kernel must not wait for B's
/// implicit fence inside B's commit: C is presented (possible only after B's page flip)
/// while B's fence is still unsignalled (the test signals it afterwards; vgem answers
/// ETIMEDOUT had its 10 s timeout signalled it first).
#[test]
fn vkms_unprivileged_in_fence_stub_keeps_implicit_fences_out_of_the_commit() {
    let path = card_of("vkms");
    let comp = Compositor::start_wrapped(
        "in-fence-unprivileged",
        &path,
        &[],
        without_private_dmabuf::WRAPPER,
    );
    let card = open_display(&path);
    let size = mode_size(&card);
    let log = comp.log_text();
    assert!(
        log.contains(without_private_dmabuf::NO_ACCESS_LOG),
        "the compositor ran without dma-heap/udmabuf access; log:\n{log}"
    );
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let (acq, _rel, acq_obj, rel_obj) = c.new_timelines(&virtio_syncobj_device());
    let s = configured_surface(&mut c);
    c.syncobj_surface(s);
    c.blocking_roundtrip();
    let colours = [0x0020_a040u32, 0x00a0_2060, 0x0040_60a0];
    let bufs: Vec<DmaBuffer> = colours
        .iter()
        .map(|&col| {
            let b = alloc.allocate(size.0, size.1).expect("buffer");
            fill(&b, col);
            b
        })
        .collect();
    let ids: Vec<usize> = bufs.iter().map(|b| c.create_dmabuf_buffer(b)).collect();

    let present = |c: &mut syncbridge_tests::client::TestClient, k: u64, within| {
        let i = (k - 1) as usize;
        acq.signal(k).expect("acquire point");
        c.attach(s, Some(ids[i]));
        c.set_acquire_point(s, &acq_obj, k);
        c.set_release_point(s, &rel_obj, k);
        let commit = c.commit(s, Commit::feedback());
        let presented = c.blocking_dispatch_until(within, |r| r.outcome(commit).is_some());
        (commit, presented)
    };

    // A: on the plane.
    let (a, ok) = present(&mut c, 1, LONG);
    assert!(ok, "A presented; log:\n{}", comp.log_text());
    assert_ne!(
        presented_flags(&c, a).unwrap_or(0) & ZERO_COPY,
        0,
        "A scanned out"
    );
    // B, with an implicit write fence nobody has signalled yet.
    let fence = alloc.attach_write_fence(&bufs[1]).expect("vgem fence on B");
    let (b, ok) = present(&mut c, 2, LONG);
    assert!(ok, "B presented; log:\n{}", comp.log_text());
    assert_ne!(
        presented_flags(&c, b).unwrap_or(0) & ZERO_COPY,
        0,
        "B scanned out"
    );
    // C: committed only after B's page flip. Longer than vgem's 10 s fence timeout.
    let (_c3, ok) = present(&mut c, 3, Duration::from_secs(20));
    let still_unsignalled = alloc.signal(fence);
    assert!(ok, "C presented; log:\n{}", comp.log_text());
    assert!(
        still_unsignalled.is_ok(),
        "C was presented only after B's implicit fence had timed out ({still_unsignalled:?}): the kernel waited for it inside B's commit (no IN_FENCE_FD); log:\n{}",
        comp.log_text()
    );
    assert!(
        wait_shows(&card, &centre(size), colours[2], LONG),
        "C on screen"
    );
    let log = comp.log_text();
    assert!(
        log.contains("IN_FENCE_FD carries a signalled stub exported from our own KMS dumb buffer"),
        "the start-up log says where the stub comes from; log:\n{log}"
    );
    let stats = comp.stop();
    let k = kms(&stats);
    let f = &k["in_fence"];
    println!("in-fence: {f}");
    assert_eq!(f["stub"], "own KMS dumb buffer", "{k}");
    assert_eq!(f["plane_commits_without_in_fence"], 0, "{k}");
    assert!(
        f["plane_commits_with_in_fence"].as_u64().unwrap_or(0) >= 3,
        "A, B and C went on the plane with IN_FENCE_FD: {k}"
    );
}

// ------------------------------------------------------------------------------------
// Item 8: out of fds, the output keeps presenting
// ------------------------------------------------------------------------------------

/// fds the compositor may have (soft = hard, so its start-up raise changes nothing).
const FD_LIMIT: usize = 160;

/// With the compositor's fd table full (a client parks syncobj waits, each holding an
/// eventfd, one confirmed at a time until no fd is left), the kernel cannot install the
/// out-fence fd a commit asks for and refuses the whole commit with EMFILE. The output must
/// keep presenting: the compositor commits without OUT_FENCE_PTR (the replaced buffer goes
/// back at the flip) instead of retrying a commit that cannot pass until fds come back.
#[test]
fn vkms_out_of_fds_commits_without_the_out_fence_and_keeps_presenting() {
    let path = card_of("vkms");
    let limit = format!("--nofile={FD_LIMIT}:{FD_LIMIT}");
    let comp = Compositor::start_wrapped("out-of-fds", &path, &[], &["prlimit", &limit, "--"]);

    // The bystander: a mapped window and two shm buffers made before fds run out (a new
    // buffer would need an fd passed to the compositor).
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let bufs = [
        c.create_shm_buffer(256, 256),
        c.create_shm_buffer_filled(
            256,
            256,
            wayland_client::protocol::wl_shm::Format::Xrgb8888,
            0x0040_80c0,
        ),
    ];
    let present = |c: &mut syncbridge_tests::client::TestClient, frame: usize| {
        c.attach(s, Some(bufs[frame % 2]));
        let k = c.commit(s, Commit::feedback());
        c.blocking_dispatch_until(Duration::from_secs(5), |r| r.outcome(k).is_some())
            && c.rec.presented(k).is_some()
    };
    for frame in 0..3 {
        assert!(
            present(&mut c, frame),
            "frame {frame} presented before fds ran out"
        );
    }
    let baseline = comp.fd_count();
    assert!(
        baseline > 0 && baseline < FD_LIMIT - 40,
        "{baseline} fds at start"
    );

    // The hostile client: syncobj waits that never materialize, one at a time.
    let dev = virtio_syncobj_device();
    let acquire = dev.create_timeline().expect("timeline");
    let release = dev.create_timeline().expect("timeline");
    let vgem = Allocator::vgem();
    let hb = vgem.allocate(16, 16).expect("buffer");
    let mut h = comp.client();
    let acq = h.import_timeline(acquire.export_fd().expect("fd").as_fd());
    let rel = h.import_timeline(release.export_fd().expect("fd").as_fd());
    let hbuf = h.create_dmabuf_buffer(&hb);
    let mut point = 0u64;
    let mut surface = None;
    let mut on_surface = 0;
    while comp.fd_count() < FD_LIMIT {
        if surface.is_none() || on_surface == 15 {
            let hs = h.create_toplevel();
            h.syncobj_surface(hs);
            surface = Some(hs);
            on_surface = 0;
        }
        let hs = surface.expect("surface");
        point += 1;
        on_surface += 1;
        h.attach(hs, Some(hbuf));
        h.set_acquire_point(hs, &acq, 1);
        h.set_release_point(hs, &rel, point);
        h.commit(hs, Commit::default());
        let t = h.send_sync();
        assert!(
            h.blocking_dispatch_until(Duration::from_secs(5), |r| r.syncs_done.contains(&t)),
            "wait {point} confirmed ({} fds); log:\n{}",
            comp.fd_count(),
            comp.log_text()
        );
        assert!(
            point < 400,
            "the fd table never filled: {} fds",
            comp.fd_count()
        );
    }
    let full = comp.fd_count();

    // Fds exhausted: the bystander's frames still reach the display.
    let mut presented = 0;
    for frame in 3..13 {
        if present(&mut c, frame) {
            presented += 1;
        }
    }
    let during = comp.fd_count();
    drop(h);
    assert!(
        eventually_fds_below(&comp, FD_LIMIT - 20),
        "{} fds after the hostile client left",
        comp.fd_count()
    );
    assert!(present(&mut c, 13), "a frame after fds came back");
    let log = comp.log_text();
    let stats = comp.stop();
    let k = kms(&stats);
    println!(
        "out of fds: baseline {baseline}, full {full}, during {during}, limit {FD_LIMIT}, {presented}/10 frames presented, kms {k}"
    );
    assert_eq!(
        presented, 10,
        "the bystander's frames froze while fds were exhausted; log:\n{log}"
    );
    assert!(
        k["commits_without_out_fence"].as_u64() >= Some(1),
        "no commit went without the out-fence: {k}"
    );
}

fn eventually_fds_below(comp: &Compositor, n: usize) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if comp.fd_count() < n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
