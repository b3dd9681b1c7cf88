//! The compositor's CPU renderer on a real kernel (run in the VM by `cargo xtask test`;
//! test name `vm_compositor`). The acquire side (fences at commit time) is covered by
//! `vm_compositor_sync`; this covers a client that fences a buffer *after* the
//! compositor applied it, which would make pixman's `DMA_BUF_IOCTL_SYNC` block.

use std::{
    os::fd::AsFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use syncbridge_compositor::{backend::Backend, config::RenderDeviceSelection, CompositorConfig};
use syncbridge_tests::{
    fixture::{FeedbackEvent, Fixture, FOURCC_XRGB8888},
    kernel::{
        card::find_nodes,
        require_vm,
        vgem::{FenceAccess, Vgem},
        NodeKind,
    },
};

/// A frame that waited for the vgem fence would take up to its 10 s kernel timeout.
const FRAME_LIMIT: Duration = Duration::from_millis(500);

fn node(driver: &str, kind: NodeKind) -> PathBuf {
    find_nodes(driver, kind)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {kind:?} node of {driver} in the VM"))
}

fn presented(events: &[FeedbackEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, FeedbackEvent::Presented { .. }))
        .count()
}

fn held_back_frames(f: &mut Fixture) -> u64 {
    match &f.state().backend {
        Backend::Headless(headless) => headless.held_back_frames(0),
        #[allow(unreachable_patterns)]
        _ => panic!("the fixture runs the headless backend"),
    }
}

#[test]
fn a_fence_added_after_commit_holds_back_only_that_window_and_never_blocks_a_frame() {
    require_vm();
    let mut config = CompositorConfig::for_tests();
    config.render_device = RenderDeviceSelection::Path(node("virtio_gpu", NodeKind::Render));
    let mut f = Fixture::with_config(config);
    let vgem = Vgem::open();

    // The hostile client shows a vgem buffer with no fence: committed, presented.
    let hostile = f.add_client();
    let wh = f.create_toplevel(hostile);
    let buf = vgem.create_buffer(64, 64).expect("vgem buffer");
    let wl = f.client(hostile).create_dmabuf_buffer(
        buf.dmabuf.as_fd(),
        64,
        64,
        buf.pitch,
        FOURCC_XRGB8888,
    );
    f.client(hostile).attach_and_commit(wh, Some(&wl), true);
    f.roundtrip(hostile);
    f.frame(0);
    f.roundtrip(hostile);
    assert_eq!(presented(&f.client(hostile).state.windows[wh].feedback), 1);

    // A second client whose window overlaps it redraws every frame, so the hostile
    // window's pixels are read again each frame.
    let good = f.add_client();
    let wg = f.create_toplevel(good);

    // Now the hostile client draws into the buffer the compositor shows.
    let fence = vgem.attach(&buf, FenceAccess::Write).expect("vgem fence");
    for i in 0..10u32 {
        let shm = f
            .client(good)
            .create_shm_buffer(256, 256, 0xff00_0000 | (i * 20));
        f.client(good).attach_and_commit(wg, Some(&shm), true);
        f.roundtrip(good);
        let start = Instant::now();
        f.frame(0);
        let took = start.elapsed();
        assert!(
            took < FRAME_LIMIT,
            "frame {i} took {took:?}: the renderer blocked on the fence"
        );
    }
    f.roundtrip(good);
    assert_eq!(
        presented(&f.client(good).state.windows[wg].feedback),
        10,
        "the other client presented every frame"
    );
    let held = held_back_frames(&mut f);
    assert!(
        held >= 10,
        "the fenced window sat those frames out ({held})"
    );

    // Once the fence signals, the window is drawn again.
    vgem.signal(fence).expect("signal");
    f.dispatch_until(Duration::from_millis(50), |_| false);
    f.frame(0);
    let after = held_back_frames(&mut f);
    f.frame(0);
    assert_eq!(
        held_back_frames(&mut f),
        after,
        "no window held back after the signal"
    );
}
