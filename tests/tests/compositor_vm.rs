//! The compositor's CPU renderer on a real kernel (run in the VM by `cargo xtask test`;
//! test name `vm_compositor`). The acquire side (fences at commit time) is covered by
//! `vm_compositor_sync`; this covers a client that fences a buffer *after* the
//! compositor applied it, which would make pixman's `DMA_BUF_IOCTL_SYNC` block.

use std::time::{Duration, Instant};

use syncbridge_compositor::{backend::Backend, config::RenderDeviceSelection, CompositorConfig};
use syncbridge_tests::{
    client::{buffers::Allocator, harness::Harness, Commit, Presentation, TestClient},
    kernel::{require_vm, virtio_gpu_node, NodeKind, VirtioGpu},
};
use wayland_client::protocol::wl_shm::Format::Argb8888;

/// A frame that waited for the vgem fence would take up to its 10 s kernel timeout.
const FRAME_LIMIT: Duration = Duration::from_millis(500);

fn presented(client: &TestClient) -> usize {
    client
        .rec
        .feedback
        .iter()
        .filter(|r| matches!(r.outcome, Presentation::Presented { .. }))
        .count()
}

fn held_back_frames(f: &mut Harness) -> u64 {
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
    config.render_device =
        RenderDeviceSelection::Path(virtio_gpu_node(VirtioGpu::Plain, NodeKind::Render));
    let mut f = Harness::with_config(config);
    let vgem = Allocator::vgem();

    // The hostile client shows a vgem buffer with no fence: committed, presented.
    let hostile = f.add_client();
    let wh = f.create_toplevel(hostile);
    let buf = vgem.allocate(64, 64).expect("vgem buffer");
    let wl = f.client(hostile).create_dmabuf_buffer(&buf);
    f.client(hostile).attach(wh, Some(wl));
    f.client(hostile).commit(wh, Commit::frame_and_feedback());
    f.roundtrip(hostile);
    f.frame();
    f.roundtrip(hostile);
    assert_eq!(presented(f.client(hostile)), 1);

    // A second client whose window overlaps it redraws every frame, so the hostile
    // window's pixels are read again each frame.
    let good = f.add_client();
    let wg = f.create_toplevel(good);

    // Now the hostile client draws into the buffer the compositor shows.
    let fence = vgem.attach_write_fence(&buf).expect("vgem fence");
    for i in 0..10u32 {
        let shm =
            f.client(good)
                .create_shm_buffer_filled(256, 256, Argb8888, 0xff00_0000 | (i * 20));
        f.client(good).attach(wg, Some(shm));
        f.client(good).commit(wg, Commit::frame_and_feedback());
        f.roundtrip(good);
        let start = Instant::now();
        f.frame();
        let took = start.elapsed();
        assert!(
            took < FRAME_LIMIT,
            "frame {i} took {took:?}: the renderer blocked on the fence"
        );
    }
    f.roundtrip(good);
    assert_eq!(
        presented(f.client(good)),
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
    // 5 rounds of up to 10 ms each, so the fence's wait source can fire.
    f.pump_until(5, |_| false);
    f.frame();
    let after = held_back_frames(&mut f);
    f.frame();
    assert_eq!(
        held_back_frames(&mut f),
        after,
        "no window held back after the signal"
    );
}
