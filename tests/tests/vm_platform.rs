//! Real-kernel tests of the VM platform itself: they prove the harness gives us real
//! implicit fences on dma-bufs, timeline syncobjs, KMS out-fences at a real vblank
//! rate, udmabuf and dma-heaps. The bridge's own behaviour is tested in `vm_bridge`;
//! here its export/import calls only serve to observe the kernel.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use drm::control::{property, AtomicCommitFlags, Device as _};
use drm::{Device as _, DriverCapability};
use syncbridge_bridge::dmabuf::{export_sync_file, import_sync_file, Access};
use syncbridge_bridge::kms::OutFenceSlot;
use syncbridge_tests::kernel::kms::KmsPipe;
use syncbridge_tests::kernel::vgem::{FenceAccess, Vgem};
use syncbridge_tests::kernel::virtio_gpu::open_virtio_gpu;
use syncbridge_tests::kernel::{dma_heap, require_vm, udmabuf, NodeKind, VirtioGpu};

fn ready(dmabuf: std::os::fd::BorrowedFd<'_>, access: Access) -> bool {
    export_sync_file(dmabuf, access)
        .expect("export")
        .is_signaled()
        .expect("poll")
}

#[test]
fn vgem_write_fence_is_an_implicit_fence_on_the_dmabuf() {
    require_vm();
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(64, 64).expect("vgem buffer");
    let fence = vgem
        .attach(&buf, FenceAccess::Write)
        .expect("attach write fence");
    assert!(
        !ready(buf.dmabuf.as_fd(), Access::Read),
        "readers must wait for the pending write"
    );
    vgem.signal(fence).expect("signal");
    assert!(ready(buf.dmabuf.as_fd(), Access::Read));
}

#[test]
fn vgem_read_fences_stack_and_only_delay_writers() {
    require_vm();
    let vgem = Vgem::open();
    let a = vgem.create_buffer(64, 64).expect("buffer a");
    let b = vgem.create_buffer(64, 64).expect("buffer b");
    let fence = vgem.attach(&a, FenceAccess::Write).expect("attach");
    let pending = export_sync_file(a.dmabuf.as_fd(), Access::Read).expect("export");
    import_sync_file(b.dmabuf.as_fd(), &pending, Access::Read).expect("import");
    assert!(
        ready(b.dmabuf.as_fd(), Access::Read),
        "a read fence must not delay readers"
    );
    assert!(
        !ready(b.dmabuf.as_fd(), Access::Write),
        "a read fence must delay writers"
    );
    vgem.signal(fence).expect("signal");
    assert!(ready(b.dmabuf.as_fd(), Access::Write));
}

#[test]
fn virtio_gpu_reports_timeline_syncobjs() {
    require_vm();
    let card = open_virtio_gpu(VirtioGpu::Plain, NodeKind::Render);
    assert_eq!(
        card.get_driver_capability(DriverCapability::SyncObj)
            .expect("cap"),
        1
    );
    assert_eq!(
        card.get_driver_capability(DriverCapability::TimelineSyncObj)
            .expect("cap"),
        1
    );
}

#[test]
fn udmabuf_and_system_heap_allocate_dmabufs() {
    require_vm();
    let u = udmabuf::create(1 << 20).expect("udmabuf");
    let h = dma_heap::alloc("system", 1 << 20).expect("dma-heap system");
    // Both are dma-bufs: export works on them and, with no fences, is already signalled.
    assert!(ready(u.as_fd(), Access::Write));
    assert!(ready(h.as_fd(), Access::Write));
}

#[test]
fn vkms_flips_at_vblank_rate_with_an_out_fence_per_commit() {
    require_vm();
    let pipe = KmsPipe::open("vkms");
    let fbs = [pipe.dumb_fb(), pipe.dumb_fb()];
    let out_fence_prop = pipe.prop(pipe.crtc, "OUT_FENCE_PTR");
    let mut slot = OutFenceSlot::new();
    let frames = 30;
    let mut intervals = Vec::new();
    let mut last_flip: Option<Instant> = None;
    for i in 0..frames {
        let mut req = pipe.flip_request(fbs[i % 2], i == 0);
        req.add_property(
            pipe.crtc,
            out_fence_prop,
            property::Value::SignedRange(slot.arm()),
        );
        let flags = if i == 0 {
            AtomicCommitFlags::ALLOW_MODESET | AtomicCommitFlags::PAGE_FLIP_EVENT
        } else {
            AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT
        };
        pipe.card.atomic_commit(flags, req).expect("atomic commit");
        let out_fence = slot
            .take()
            .expect("take")
            .unwrap_or_else(|| panic!("commit {i}: the kernel must return an out-fence"));
        // The read blocks until the page-flip event arrives.
        let got_flip = pipe
            .card
            .receive_events()
            .expect("events")
            .any(|e| matches!(e, drm::control::Event::PageFlip(_)));
        assert!(got_flip, "commit {i}: expected a page-flip event");
        let now = Instant::now();
        if let Some(prev) = last_flip {
            intervals.push(now - prev);
        }
        last_flip = Some(now);
        // The out-fence signals when the new frame starts scanning out: by the flip event.
        out_fence
            .wait(Duration::from_millis(100))
            .unwrap_or_else(|e| panic!("commit {i}: out-fence not signalled around the flip: {e}"));
    }
    intervals.sort();
    let median = intervals[intervals.len() / 2];
    println!(
        "vkms flip interval median {median:?} over {} flips",
        intervals.len()
    );
    // A pacing check (flips wait for vblank instead of completing at once), not a speed
    // target: the bounds are two vblank periods wide either way.
    assert!(
        median > Duration::from_millis(10) && median < Duration::from_millis(34),
        "VKMS flips should be paced by its 60 Hz vblank timer, median interval was {median:?}"
    );
}
