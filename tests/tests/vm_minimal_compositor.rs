//! The adopters' example compositor (`protocols/examples/minimal_compositor.rs`) on a real
//! kernel (run in the VM by `cargo xtask test`): a recording client with real dma-bufs
//! (vgem), real fences (vgem fences) and virtio_gpu timeline syncobjs shows that the
//! example's few bridge calls gate commits on their acquire fences (syncobj points and
//! implicit dma-buf fences) and signal release points.
//!
//! The example runs its own frame clock, so "not presented while the fence is pending"
//! is checked against frames that demonstrably happened: a second surface of the same
//! client asks for a frame callback, and each one it gets is a render of the example that
//! came after the fenced commit.

use std::time::Duration;

use syncbridge_bridge::SyncFile;
use syncbridge_tests::client::buffers::{Allocator, DmaBuffer};
use syncbridge_tests::client::harness::{virtio_render_node, virtio_syncobj_device};
use syncbridge_tests::client::{Commit, SurfaceId, TestClient};
use syncbridge_tests::compositor_bin::eventually;
use syncbridge_tests::example_bin::{start_minimal, Minimal};
use syncbridge_tests::kernel::require_vm;
use syncbridge_tests::kernel::vgem::VgemFence;

/// Hang detector (TCG is slow), not a speed check.
const LIMIT: Duration = Duration::from_secs(60);
/// Renders of the example that must pass without the fenced commit being shown.
const WITNESS_FRAMES: usize = 3;

fn frame_only() -> Commit {
    Commit {
        frame: true,
        ..Commit::default()
    }
}

/// A connected client with two configured toplevels: `shown` (the one under test) and
/// `clock` (frame callbacks that prove the example rendered).
fn client_with_surfaces(mc: &Minimal) -> (TestClient, SurfaceId, SurfaceId) {
    let mut c = TestClient::connect(&mc.socket).expect("connect to minimal_compositor");
    let shown = c.create_toplevel();
    let clock = c.create_toplevel();
    assert!(
        c.blocking_dispatch_until(LIMIT, |r| {
            !r.surfaces[shown].configures.is_empty() && !r.surfaces[clock].configures.is_empty()
        }),
        "initial configures; {}",
        mc.output()
    );
    (c, shown, clock)
}

/// Waits for `WITNESS_FRAMES` more renders of the example (frame callbacks of `clock`).
fn witness_frames(c: &mut TestClient, clock: SurfaceId, mc: &Minimal) {
    for _ in 0..WITNESS_FRAMES {
        let before = c.rec.surfaces[clock].frames.len();
        c.commit(clock, frame_only());
        assert!(
            c.blocking_dispatch_until(LIMIT, |r| r.surfaces[clock].frames.len() > before),
            "the example renders; {}",
            mc.output()
        );
    }
}

/// A vgem fence (on a scratch vgem buffer) and its sync_file: a real fence the test signals.
fn vgem_fence(vgem: &Allocator) -> (DmaBuffer, VgemFence, SyncFile) {
    let buf = vgem.allocate(16, 16).expect("scratch vgem buffer");
    let fence = vgem.attach_write_fence(&buf).expect("attach a vgem fence");
    let sf = buf.export_write_fences().expect("export the fence");
    assert!(
        !sf.is_signaled().expect("poll"),
        "a fresh vgem fence is pending"
    );
    (buf, fence, sf)
}

#[test]
fn minimal_compositor_gates_syncobj_commits_on_acquire_points_and_signals_release_points() {
    require_vm();
    let mc = start_minimal("vm-syncobj", 3, Some(&virtio_render_node()));
    let (mut c, s, clock) = client_with_surfaces(&mc);
    assert!(
        c.global("wp_linux_drm_syncobj_manager_v1").is_some(),
        "linux-drm-syncobj-v1 advertised with --syncobj-device; {}",
        mc.output()
    );
    let vgem = Allocator::vgem();
    let (acq, rel, acq_obj, rel_obj) = c.new_timelines(&virtio_syncobj_device());
    c.syncobj_surface(s);

    // B1, acquire point 1 not signalled: not shown however many frames pass.
    let buf1 = vgem.allocate(64, 64).expect("vgem buffer");
    let b1 = c.create_dmabuf_buffer(&buf1);
    c.attach(s, Some(b1));
    c.set_acquire_point(s, &acq_obj, 1);
    c.set_release_point(s, &rel_obj, 1);
    c.commit(s, frame_only());
    witness_frames(&mut c, clock, &mc);
    assert!(
        c.rec.surfaces[s].frames.is_empty(),
        "B1 shown before its acquire point"
    );
    assert!(c.is_alive(), "no protocol error: {:?}", c.protocol_error());

    acq.signal(1).expect("signal acquire point 1");
    assert!(
        c.blocking_dispatch_until(LIMIT, |r| r.surfaces[s].frames.len() == 1),
        "B1 shown once its acquire point signalled; {}",
        mc.output()
    );
    witness_frames(&mut c, clock, &mc);
    assert_eq!(
        rel.query().expect("query"),
        0,
        "B1 is shown: release point 1 unsignalled"
    );

    // B2, acquire point 2 = a pending vgem fence imported into the timeline.
    let (_scratch, fence, sf) = vgem_fence(&vgem);
    acq.import_point(2, &sf)
        .expect("import the vgem fence as point 2");
    let buf2 = vgem.allocate(64, 64).expect("vgem buffer");
    let b2 = c.create_dmabuf_buffer(&buf2);
    c.attach(s, Some(b2));
    c.set_acquire_point(s, &acq_obj, 2);
    c.set_release_point(s, &rel_obj, 2);
    c.commit(s, frame_only());
    witness_frames(&mut c, clock, &mc);
    assert_eq!(
        c.rec.surfaces[s].frames.len(),
        1,
        "B2 shown before its fence signalled"
    );
    assert_eq!(
        rel.query().expect("query"),
        0,
        "B1 still shown: not released"
    );

    vgem.signal(fence).expect("signal the vgem fence");
    assert!(
        c.blocking_dispatch_until(LIMIT, |r| r.surfaces[s].frames.len() == 2),
        "B2 shown once its fence signalled; {}",
        mc.output()
    );
    assert!(
        eventually(LIMIT, || rel.query().is_ok_and(|v| v >= 1)),
        "B1's release point signalled once B2 replaced it"
    );
    witness_frames(&mut c, clock, &mc);
    assert_eq!(
        rel.query().expect("query"),
        1,
        "B2 is shown: release point 2 unsignalled"
    );

    // B3 (point 3 signalled up front) is the third frame; the example exits after it.
    acq.signal(3).expect("signal acquire point 3");
    let buf3 = vgem.allocate(64, 64).expect("vgem buffer");
    let b3 = c.create_dmabuf_buffer(&buf3);
    c.attach(s, Some(b3));
    c.set_acquire_point(s, &acq_obj, 3);
    c.set_release_point(s, &rel_obj, 3);
    c.commit(s, frame_only());
    c.flush();
    let summary = mc.wait_exit(LIMIT);
    assert!(
        rel.query().expect("query") >= 2,
        "B2's release point signalled once B3 replaced it"
    );
    assert_eq!(summary.text("syncobj"), "eventfd", "{summary:?}");
    assert_eq!(summary.get("frames_presented"), 3, "{summary:?}");
    assert!(summary.get("commits_waited_syncobj") >= 2, "{summary:?}");
    // pixman reads on the CPU: no render fence, the release points are signalled by the
    // CPU once the render that read the buffer is done.
    assert!(
        summary.get("release_points_cpu_signalled") >= 2,
        "{summary:?}"
    );
}

#[test]
fn minimal_compositor_gates_an_implicit_dmabuf_commit_on_its_write_fence() {
    require_vm();
    let mc = start_minimal("vm-implicit", 1, None);
    let (mut c, s, clock) = client_with_surfaces(&mc);
    let vgem = Allocator::vgem();

    // The client "renders" into the buffer: a pending write fence on the dma-buf itself,
    // no explicit-sync protocol at all.
    let buf = vgem.allocate(64, 64).expect("vgem buffer");
    let fence = vgem
        .attach_write_fence(&buf)
        .expect("attach a vgem write fence");
    let b = c.create_dmabuf_buffer(&buf);
    c.attach(s, Some(b));
    c.commit(s, frame_only());
    witness_frames(&mut c, clock, &mc);
    assert!(
        c.rec.surfaces[s].frames.is_empty(),
        "shown before its implicit write fence signalled"
    );

    vgem.signal(fence).expect("signal the vgem fence");
    assert!(
        c.blocking_dispatch_until(LIMIT, |r| r.surfaces[s].frames.len() == 1),
        "shown once the write fence signalled; {}",
        mc.output()
    );
    let summary = mc.wait_exit(LIMIT);
    assert_eq!(summary.get("frames_presented"), 1, "{summary:?}");
    assert!(summary.get("commits_waited_implicit") >= 1, "{summary:?}");
}
