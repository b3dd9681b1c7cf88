//! An shm toplevel gets frame callbacks and presentation feedback from the headless
//! frame clock, and its buffers are released.

use std::time::Duration;

use syncbridge_tests::client::{harness::Harness, Commit, Presentation};
use wayland_client::protocol::wl_shm::Format::Argb8888;

#[test]
fn shm_toplevel_gets_frame_callbacks_and_presentation_feedback() {
    let mut f = Harness::new();
    let id = f.add_client();
    let window = f.create_toplevel(id);

    let buffer = f
        .client(id)
        .create_shm_buffer_filled(64, 48, Argb8888, 0xff20_80c0);
    f.client(id).attach(window, Some(buffer));
    f.client(id).commit(window, Commit::frame_and_feedback());
    f.roundtrip(id);
    assert!(
        f.client(id).rec.surfaces[window].frames.is_empty(),
        "no frame before the clock ticks"
    );

    let tick = f.frame();
    f.roundtrip(id);

    let frames = f.client(id).rec.surfaces[window].frames.len();
    let feedback: Vec<Presentation> = f
        .client(id)
        .rec
        .feedback
        .iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(frames, 1, "one frame callback after one refresh cycle");
    let [Presentation::Presented {
        time,
        refresh_ns,
        seq,
        flags,
    }] = feedback[..]
    else {
        panic!("expected exactly one presented feedback, got {feedback:?}");
    };
    assert_eq!(time, tick.time, "presented at the frame clock's timestamp");
    assert_eq!(seq, tick.seq);
    assert_eq!(refresh_ns, 16_666_666, "60 Hz refresh");
    assert_eq!(flags & 0x1, 0x1, "vsync flag");
    // A frame clock, no display: neither the time nor the completion is the hardware's.
    assert_eq!(
        flags & (0x2 | 0x4),
        0,
        "headless feedback claims no hw_clock / hw_completion (flags {flags:#x})"
    );
    assert_eq!(
        f.client(id).rec.presentation_clock,
        Some(libc::CLOCK_MONOTONIC as u32)
    );

    // Compositor side: one frame presented, the window mapped.
    let stats = &f.state().stats;
    assert_eq!(stats.outputs[0].frames_presented, 1);
    assert!(stats.commits >= 2);
}

#[test]
fn frames_follow_the_clock_and_idle_cycles_present_nothing() {
    let mut f = Harness::new();
    let id = f.add_client();
    let window = f.create_toplevel(id);
    let mut previous = None;

    for i in 0..5u32 {
        let buffer =
            f.client(id)
                .create_shm_buffer_filled(32, 32, Argb8888, 0xff00_0000 | (i * 40));
        f.client(id).attach(window, Some(buffer));
        f.client(id).commit(window, Commit::frame_and_feedback());
        f.roundtrip(id);
        let tick = f.frame();
        f.roundtrip(id);
        if let Some(prev) = previous.replace(buffer) {
            assert_eq!(
                f.client(id).rec.releases(prev),
                1,
                "replaced buffer released once"
            );
        }
        assert_eq!(tick.seq, u64::from(i) + 1);
    }
    let client = f.client(id);
    assert_eq!(client.rec.surfaces[window].frames.len(), 5);
    let times: Vec<Duration> = client
        .rec
        .feedback
        .iter()
        .map(|r| match r.outcome {
            Presentation::Presented { time, .. } => time,
            Presentation::Discarded => panic!("discarded"),
        })
        .collect();
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_nanos(16_666_666));
    }

    // The bridge saw every commit, got a reader report per rendered frame, and released
    // the four replaced buffers (CPU release: pixman has no render fence).
    let sync = f.state().sync_bridge.stats();
    assert_eq!(sync.buffers_released, 4, "{sync:?}");
    assert_eq!(sync.tracked_buffers, 1, "the current buffer");
    assert!(sync.reader_reports >= 5);
    assert_eq!(
        sync.commits_waited_implicit + sync.commits_waited_explicit,
        0,
        "shm never waits"
    );

    // Nothing committed: the cycle runs, no new frame is presented, no callback is due.
    let presented_before = f.state().stats.outputs[0].frames_presented;
    f.frame();
    assert_eq!(
        f.state().stats.outputs[0].frames_presented,
        presented_before
    );
    assert_eq!(f.state().stats.outputs[0].refresh_cycles, 6);
}

#[test]
fn frame_limit_requests_exit() {
    let mut config = syncbridge_compositor::CompositorConfig::for_tests();
    config.exit_after_frames = Some(2);
    let mut f = Harness::with_config(config);
    let id = f.add_client();
    let window = f.create_toplevel(id);
    for color in [0xffff_0000, 0xff00_ff00] {
        let buffer = f
            .client(id)
            .create_shm_buffer_filled(16, 16, Argb8888, color);
        f.client(id).attach(window, Some(buffer));
        f.client(id).commit(window, Commit::default());
        f.roundtrip(id);
        f.frame();
    }
    assert_eq!(
        f.state().exit_reason,
        Some(syncbridge_compositor::state::ExitReason::FrameLimit)
    );
}
