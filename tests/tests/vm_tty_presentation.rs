//! Presentation feedback on the tty backend comes from the page flip (issue 14, part 1).
//! Runs inside the VM on VKMS: `cargo xtask test --vm-only --vm-filter vm_tty_presentation`.
//!
//! What a client is told is checked against what the kernel said: the compositor lists
//! the page-flip events it received (sequence and kernel timestamp) in its stats, and
//! every `presented` a client gets must be one of them, with the flags of a hardware
//! flip (`vsync | hw_clock | hw_completion`), `zero_copy` exactly when the buffer was
//! scanned out, and the refresh of the mode the CRTC runs. Frame callbacks carry the
//! time of a flip that already happened.

use std::collections::HashSet;

use drm::control::Device as _;
use syncbridge_tests::client::buffers::{Allocator, DmaBuffer};
use syncbridge_tests::client::{Commit, Presentation, TestClient};
use syncbridge_tests::kernel::card::Card;
use syncbridge_tests::tty::*;

/// wp_presentation_feedback kinds.
const VSYNC: u32 = 0x1;
const HW_CLOCK: u32 = 0x2;
const HW_COMPLETION: u32 = 0x4;
const ZERO_COPY: u32 = 0x8;

/// What a client was told about one of its frames.
#[derive(Debug, Clone, Copy)]
struct Presented {
    seq: u64,
    time_ns: u64,
    refresh_ns: u32,
    flags: u32,
}

/// The kernel's frame duration of the mode the first active CRTC of `card` runs
/// (`drm_calc_timestamping_constants`: pixels per frame / pixel clock).
fn active_frame_duration_ns(card: &Card) -> u64 {
    let res = card.resource_handles().expect("resources");
    for crtc in res.crtcs() {
        let Ok(info) = card.get_crtc(*crtc) else {
            continue;
        };
        if let Some(mode) = info.mode() {
            let pixels = u64::from(mode.hsync().2) * u64::from(mode.vsync().2);
            return pixels * 1_000_000 / u64::from(mode.clock());
        }
    }
    panic!("no active CRTC on {}", card.path.display());
}

/// Show each of `bufs` once (attach, commit with a frame callback and feedback, wait for
/// both); return what the client was told about each.
fn show_each(
    comp: &Compositor,
    c: &mut TestClient,
    s: usize,
    bufs: &[DmaBuffer],
    what: &str,
) -> Vec<Presented> {
    let mut told = Vec::new();
    for (k, buf) in bufs.iter().enumerate() {
        let id = c.create_dmabuf_buffer(buf);
        c.attach(s, Some(id));
        let callbacks = c.rec.surfaces[s].frames.len();
        let commit = c.commit(s, Commit::frame_and_feedback());
        assert!(
            c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some()
                && r.surfaces[s].frames.len() > callbacks),
            "{what} frame {k}: feedback and frame callback; log:\n{}",
            comp.log_text()
        );
        match c.rec.outcome(commit) {
            Some(Presentation::Presented {
                time,
                refresh_ns,
                seq,
                flags,
            }) => told.push(Presented {
                seq,
                time_ns: u64::try_from(time.as_nanos()).unwrap_or(u64::MAX),
                refresh_ns,
                flags,
            }),
            other => panic!("{what} frame {k}: {other:?}, not presented"),
        }
    }
    told
}

/// A full-screen client scanned out directly, then a window that is composited: every
/// `presented` is a page flip the kernel reported to the compositor, with its sequence
/// and timestamp, the mode's refresh, `vsync | hw_clock | hw_completion`, and
/// `zero_copy` only while scanned out. Frame callbacks carry a time that was already
/// past when they arrived (a flip's, not a predicted one).
#[test]
fn vkms_presentation_feedback_is_the_page_flip() {
    let path = card_of("vkms");
    // The small window must be composited (no zero_copy): not on an overlay plane.
    let comp = Compositor::start("presentation-feedback", &path, &["--overlay-planes", "off"]);
    let card = open_display(&path);
    let size = mode_size(&card);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let frames = 6u32;
    let full: Vec<DmaBuffer> = (0..frames)
        .map(|k| {
            let b = alloc.allocate(size.0, size.1).expect("full-screen buffer");
            fill(&b, 0x0010_2030 + k * 0x0011_0000);
            b
        })
        .collect();
    let small: Vec<DmaBuffer> = (0..frames)
        .map(|k| {
            let b = alloc.allocate(200, 100).expect("window buffer");
            fill(&b, 0x0030_2010 + k * 0x0000_0011);
            b
        })
        .collect();
    let scanned_out = show_each(&comp, &mut c, s, &full, "scanned-out");
    let composited = show_each(&comp, &mut c, s, &small, "composited");
    let frame_ns = active_frame_duration_ns(&card);
    let frame_times = c.rec.surfaces[s].frame_times.clone();
    let stats = comp.stop();
    let k = kms(&stats);
    let flips: HashSet<(u64, u64)> = k["presentation"]["recent_flips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|f| f["output"] == 0)
                .filter_map(|f| Some((f["seq"].as_u64()?, f["time_ns"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    println!("scanned out: {scanned_out:?}");
    println!("composited: {composited:?}");
    println!(
        "kernel frame duration {frame_ns} ns; page flips the compositor recorded: {}",
        flips.len()
    );

    let hw = VSYNC | HW_CLOCK | HW_COMPLETION;
    for p in &scanned_out {
        assert_eq!(
            p.flags,
            hw | ZERO_COPY,
            "scanned out: vsync|hw_clock|hw_completion|zero_copy ({p:?})"
        );
    }
    for p in &composited {
        assert_eq!(
            p.flags, hw,
            "composited: vsync|hw_clock|hw_completion, no zero_copy ({p:?})"
        );
    }
    let all: Vec<Presented> = scanned_out.iter().chain(&composited).copied().collect();
    // Each presented is a page flip the kernel reported: its sequence and its timestamp.
    let not_flips: Vec<_> = all
        .iter()
        .filter(|p| !flips.contains(&(p.seq, p.time_ns)))
        .collect();
    assert!(
        not_flips.is_empty(),
        "presented (seq, time) that no page-flip event carried: {not_flips:?}; flips: {:?}",
        k["presentation"]["recent_flips"]
    );
    for p in &all {
        assert_eq!(
            u64::from(p.refresh_ns),
            frame_ns,
            "the refresh is the mode's frame duration ({p:?})"
        );
    }
    // One frame per commit, in commit order: later flips, and the kernel's vblank count
    // and timestamps agree (the count is derived from the timestamps, rounded).
    for w in all.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(b.seq > a.seq, "sequence increases: {a:?} then {b:?}");
        let expected = (b.seq - a.seq) * frame_ns;
        let dt = b.time_ns - a.time_ns;
        assert!(
            dt.abs_diff(expected) <= frame_ns / 2 + 2_000,
            "time between flips {dt} ns for {} vblanks of {frame_ns} ns: {a:?} then {b:?}",
            b.seq - a.seq
        );
    }
    // Frame callbacks: the time of a flip that already happened when they arrived.
    let future: Vec<_> = frame_times
        .iter()
        .filter(|(ms, received_ns)| u64::from(*ms) * 1_000_000 > *received_ns)
        .collect();
    assert!(
        future.is_empty(),
        "frame callbacks with a time later than their arrival (ms, received ns): {future:?}"
    );
    let p = &k["presentation"];
    assert!(
        p["presented_frames"].as_u64().unwrap_or(0) >= u64::from(2 * frames),
        "{p}"
    );
    assert_eq!(p["presented_without_timestamp"], 0, "{p}");
    assert_eq!(stats["protocol_errors_sent"], 0);
}

/// The CRTC handle of the first active CRTC of `card`.
fn active_crtc(card: &Card) -> u32 {
    let res = card.resource_handles().expect("resources");
    res.crtcs()
        .iter()
        .find(|c| card.get_crtc(**c).is_ok_and(|i| i.mode().is_some()))
        .map(|c| u32::from(*c))
        .expect("an active CRTC")
}

/// Issue 14, part 4 (the measurement): every commit's out-fence is measured against its
/// page flip, per CRTC, over a sliding window, and the stats say so for the CRTC the
/// display really runs.
#[test]
fn vkms_out_fence_delay_is_measured_per_crtc() {
    let path = card_of("vkms");
    let comp = Compositor::start("out-fence-delay", &path, &[]);
    let card = open_display(&path);
    let size = mode_size(&card);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let frames = 8u64;
    let bufs: Vec<DmaBuffer> = (0..frames)
        .map(|k| {
            let b = alloc.allocate(size.0, size.1).expect("full-screen buffer");
            fill(&b, 0x0020_1000 + k as u32 * 0x0000_1100);
            b
        })
        .collect();
    show_each(&comp, &mut c, s, &bufs, "scanned-out");
    let crtc = active_crtc(&card);
    let stats = comp.stop();
    let k = kms(&stats);
    let per = k["out_fence_delay_per_crtc"]
        .as_array()
        .expect("kms.out_fence_delay_per_crtc");
    println!("out-fence delay per CRTC: {per:?}");
    assert_eq!(per.len(), 1, "VKMS has one output: {per:?}");
    let d = &per[0];
    assert_eq!(d["crtc"].as_u64(), Some(u64::from(crtc)), "{d}");
    let total = d["samples_total"].as_u64().unwrap_or(0);
    // Each frame's commit asked for an out-fence and its flip came: measured at its flip
    // event, or at a later one when it signalled after it (the last one maybe never).
    assert!(
        total + 1 >= frames,
        "{total} samples for {frames} frames: {d}"
    );
    assert!(
        total <= k["out_fences"].as_u64().unwrap_or(0),
        "no more samples than out-fences: {k}"
    );
    let window = d["window"]["count"].as_u64().unwrap_or(0);
    let size = d["window"]["size"].as_u64().unwrap_or(0);
    assert_eq!(
        window,
        total.min(size),
        "the window holds the last samples: {d}"
    );
    // VKMS signals the out-fence from the vblank handler, after the vblank's timestamp.
    assert!(
        d["window"]["min_us"].as_f64().unwrap_or(-1.0) >= 0.0,
        "the fence signals after the flip's timestamp: {d}"
    );
    assert_eq!(
        k["out_fence_signal_delay"]["count"].as_u64(),
        Some(total),
        "the backend-wide figure counts the same samples: {k}"
    );
}

/// Issue 14, part 4 (the switch): under `--release-mode auto`, a CRTC whose out-fence
/// lags the flip by more than a quarter of the refresh releases at the flip instead,
/// and goes back to early release once the fence keeps up again.
///
/// VKMS signals its out-fences at the flip, so the lag is injected: the out-fences of
/// the first [`LAGGED`] commits are merged with a vgem fence the compositor signals 12 ms
/// after their flip event (`--kms-inject-out-fence-lag-ms`); clients get that merged
/// fence, as they would a lagging driver's. The frames after them carry VKMS's own.
#[test]
fn vkms_auto_release_switches_to_the_flip_while_the_out_fence_lags_and_back() {
    const LAGGED: u64 = 60;
    const LAG_MS: f64 = 12.0;
    let path = card_of("vkms");
    let comp = Compositor::start(
        "out-fence-lag",
        &path,
        &[
            "--release-mode",
            "auto",
            "--kms-inject-out-fence-lag-ms",
            "12",
            "--kms-inject-out-fence-lag-commits",
            &LAGGED.to_string(),
        ],
    );
    let card = open_display(&path);
    let size = mode_size(&card);
    let alloc = Allocator::vgem();
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let bufs: Vec<DmaBuffer> = (0..4u32)
        .map(|k| {
            let b = alloc.allocate(size.0, size.1).expect("full-screen buffer");
            fill(&b, 0x0040_2000 + k * 0x0000_2211);
            b
        })
        .collect();
    // The lagged commits, then as many again with VKMS's own fences: each phase is
    // longer than the policy's 30-flip decision window.
    for round in 0..(2 * LAGGED as usize / bufs.len() + 1) {
        show_each(&comp, &mut c, s, &bufs, &format!("round {round}"));
    }
    let log = comp.log_text();
    let stats = comp.stop();
    let k = kms(&stats);
    let per = &k["out_fence_delay_per_crtc"][0];
    println!(
        "VM-RELEASE-SWITCH-FIGURES per-CRTC {per} early_releases={} flip_releases={} \
         switches={} injected={} delay={}",
        k["early_releases"],
        k["flip_releases"],
        k["release_mode_switches"],
        k["injected_out_fence_lags"],
        k["out_fence_signal_delay"]
    );
    assert_eq!(
        k["injected_out_fence_lags"].as_u64(),
        Some(LAGGED),
        "the first {LAGGED} commits were lagged: {k}"
    );
    assert!(
        k["out_fence_signal_delay"]["max_us"]
            .as_f64()
            .unwrap_or(0.0)
            >= LAG_MS * 1000.0,
        "the lagged fences were measured as lagging: {k}"
    );
    let release = &per["release"];
    assert_eq!(release["adaptive"], true, "{per}");
    assert_eq!(
        (
            release["switches_to_flip"].as_u64(),
            release["switches_to_early"].as_u64()
        ),
        (Some(1), Some(1)),
        "one switch to the flip while lagging, one back after: {per}"
    );
    assert_eq!(release["release_mode"], "early (out-fence)", "{per}");
    // Both modes released buffers: early before and after the lag, at the flip during it.
    assert!(k["flip_releases"].as_u64().unwrap_or(0) >= 5, "{k}");
    assert!(k["early_releases"].as_u64().unwrap_or(0) >= 5, "{k}");
    // The log says so, in this order.
    let to_flip = log
        .find("release mode switched")
        .expect("a switch was logged");
    let first = &log[to_flip..log[to_flip..].find('\n').map_or(log.len(), |e| to_flip + e)];
    assert!(
        first.contains("at page flip"),
        "the first switch goes to the flip: {first}"
    );
    assert!(
        log[to_flip + 1..].contains("release mode switched"),
        "and a second one back: {log}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0);
}
