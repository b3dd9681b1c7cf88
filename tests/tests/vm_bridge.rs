//! Real-kernel tests of the bridge (issue 3). Run inside the VM, one thread:
//! `cargo xtask test`, or by hand:
//! `cargo test -p syncbridge-tests --features vm --test vm_bridge --no-run`, then in the VM
//! `modprobe virtio_gpu; modprobe vgem; <test binary> --test-threads=1`.
//!
//! Devices: vgem (dma-bufs with fences the test controls, forced to signal by the kernel
//! after 10 s), virtio_gpu (timeline syncobjs with eventfd), udmabuf / dma-heap (probe).

#[path = "../src/bridge_support.rs"]
mod bridge_support;

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use bridge_support::*;
use syncbridge_bridge::calloop::EventLoop;
use syncbridge_bridge::dmabuf::{self, Access, DmabufFenceError, DmabufFenceSupport};
use syncbridge_bridge::release::{ReleaseError, ReleaseMerger, ReleaseProgress};
use syncbridge_bridge::source::{DmabufReadySource, SyncFileSource, TimelinePointSource};
use syncbridge_bridge::sync_file::{monotonic_now_ns, FenceStatus, NotASyncFileReason};
use syncbridge_bridge::{
    ErrorKind, SyncFile, SyncFileError, SyncobjDevice, SyncobjError, WaitMode,
};
use syncbridge_tests::kernel::proc_stats::{open_fds, rss_kib};
use syncbridge_tests::kernel::vgem::{FenceAccess, Vgem};
use syncbridge_tests::kernel::virtio_gpu::open_virtio_gpu;
use syncbridge_tests::kernel::{require_vm, NodeKind, VirtioGpu};

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(5);

/// Dispatches `event_loop` until `done(state)` or `limit` passes; returns the elapsed time.
fn dispatch_until<S>(
    event_loop: &mut EventLoop<'_, S>,
    state: &mut S,
    limit: Duration,
    done: impl Fn(&S) -> bool,
) -> Duration {
    let start = Instant::now();
    while !done(state) && start.elapsed() < limit {
        event_loop
            .dispatch(Some(limit.saturating_sub(start.elapsed())), state)
            .expect("dispatch");
    }
    start.elapsed()
}

// ------------------------------------------------------------------------------------
// Probe
// ------------------------------------------------------------------------------------

#[test]
fn probe_reports_export_import_on_6_12() {
    require_vm();
    let support = DmabufFenceSupport::probe();
    assert_eq!(
        support,
        DmabufFenceSupport::ExportImport,
        "{}",
        DmabufFenceSupport::probe_method()
    );
    assert!(
        DmabufFenceSupport::probe_method().starts_with("verified"),
        "probe should have used a real dma-buf in the VM: {}",
        DmabufFenceSupport::probe_method()
    );
    let stub = SyncFile::signaled_stub().expect("the VM has dma-heap/udmabuf");
    assert!(stub.is_signaled().expect("poll"));
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(8, 8).expect("buffer");
    assert_eq!(
        DmabufFenceSupport::probe_with(buf.dmabuf.as_fd()).expect("probe_with"),
        DmabufFenceSupport::ExportImport
    );
}

// ------------------------------------------------------------------------------------
// Acquire
// ------------------------------------------------------------------------------------

#[test]
fn acquire_export_read_waits_for_vgem_write_fence_and_source_fires_once() {
    require_vm();
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(64, 64).expect("buffer");
    let fence = vgem.attach(&buf, FenceAccess::Write).expect("attach");
    let acquire = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read).expect("export");
    assert!(
        !acquire.is_signaled().expect("poll"),
        "export(Read) must wait for the writer"
    );
    let info = acquire.info().expect("info");
    assert_eq!(info.status, FenceStatus::Active);
    assert_eq!(info.fences.len(), 1);
    assert_eq!(info.fences[0].driver_name, "vgem");
    assert_eq!(info.fences[0].timestamp_ns, 0);

    let mut event_loop: EventLoop<'_, u32> = EventLoop::try_new().expect("loop");
    let token = event_loop
        .handle()
        .insert_source(SyncFileSource::new(acquire), |fence, _, fired: &mut u32| {
            assert!(fence.is_signaled().expect("poll"));
            *fired += 1;
        })
        .expect("insert");
    let mut fired = 0u32;
    // Nothing fires while the fence is pending.
    event_loop
        .dispatch(Some(SHORT), &mut fired)
        .expect("dispatch");
    assert_eq!(fired, 0);
    vgem.signal(fence).expect("signal");
    let took = dispatch_until(&mut event_loop, &mut fired, LONG, |f| *f > 0);
    assert_eq!(
        fired, 1,
        "source fires once the fence signals (waited {took:?})"
    );
    // ... and never again; removing the (already removed) source is harmless.
    event_loop
        .dispatch(Some(SHORT), &mut fired)
        .expect("dispatch");
    assert_eq!(fired, 1);
    event_loop.handle().remove(token);
    // The buffer is ready now.
    assert!(dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read)
        .expect("export")
        .is_signaled()
        .expect("poll"));
}

#[test]
fn read_only_fence_delays_export_write_but_not_export_read() {
    require_vm();
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(32, 32).expect("buffer");
    let reader = vgem.attach(&buf, FenceAccess::Read).expect("attach read");
    let r = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read).expect("export read");
    let w = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Write).expect("export write");
    assert!(
        r.is_signaled().expect("poll"),
        "a reader does not block other readers"
    );
    assert!(!w.is_signaled().expect("poll"), "a reader blocks writers");
    assert!(dmabuf::poll_readable(&[buf.dmabuf.as_fd()]).expect("poll"));
    vgem.signal(reader).expect("signal");
    w.wait(LONG).expect("write export signals after the reader");
}

#[test]
fn export_is_a_snapshot() {
    require_vm();
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(32, 32).expect("buffer");
    // Nothing on the buffer: the snapshot is a signalled stub...
    let before = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Write).expect("export");
    assert!(before.is_signaled().expect("poll"));
    // ...and stays signalled after a later fence arrives.
    let later = vgem.attach(&buf, FenceAccess::Write).expect("attach");
    assert!(
        before.is_signaled().expect("poll"),
        "later fences must not delay a snapshot"
    );
    let after = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read).expect("export");
    assert!(!after.is_signaled().expect("poll"));

    // Same with a pending fence in the snapshot: signalling it is enough even though a
    // newer fence is still pending on the buffer. (vgem refuses a second attach while a
    // write fence is pending, so the newer fence is imported from another buffer.)
    let extra = pending_fence(&vgem);
    dmabuf::import_sync_file(buf.dmabuf.as_fd(), &extra.sync_file, Access::Write).expect("import");
    vgem.signal(later).expect("signal");
    after
        .wait(LONG)
        .expect("snapshot signals with its own fence");
    assert!(!dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read)
        .expect("export")
        .is_signaled()
        .expect("poll"));
    vgem.signal(extra.vgem_fence).expect("signal");
}

#[test]
fn multi_plane_export_merges_and_dedups() {
    require_vm();
    let vgem = Vgem::open();
    let a = vgem.create_buffer(16, 16).expect("a");
    let b = vgem.create_buffer(16, 16).expect("b");
    let fa = vgem.attach(&a, FenceAccess::Write).expect("fa");
    let fb = vgem.attach(&b, FenceAccess::Write).expect("fb");
    // A second fd on the same dma-buf counts once.
    let a_dup = a.dmabuf.try_clone().expect("dup");
    let planes = [
        a.dmabuf.as_fd(),
        a_dup.as_fd(),
        b.dmabuf.as_fd(),
        a.dmabuf.as_fd(),
    ];
    assert_eq!(dmabuf::distinct_planes(&planes).expect("distinct").len(), 2);
    let merged = dmabuf::export_planes(&planes, Access::Read).expect("export planes");
    assert_eq!(merged.fence_count().expect("count"), 2);
    assert!(!dmabuf::poll_readable(&planes).expect("poll"));
    vgem.signal(fa).expect("signal a");
    assert!(
        !merged.is_signaled().expect("poll"),
        "plane b still pending"
    );
    vgem.signal(fb).expect("signal b");
    merged.wait(LONG).expect("both planes done");
    assert!(dmabuf::poll_readable(&planes).expect("poll"));
}

/// The signal time of a fired wait comes from one `SYNC_IOC_FILE_INFO` with room for
/// `MAX_TIMESTAMP_FENCES` records: the latest fence's time once every fence signalled,
/// `None` while one is pending, and `None` (not an error) for a sync_file of more fences
/// than that, which the kernel refuses with EINVAL.
#[test]
fn signal_time_covers_every_fence_up_to_the_limit_in_one_read() {
    require_vm();
    let vgem = Vgem::open();
    let limit = syncbridge_bridge::sync_file::MAX_TIMESTAMP_FENCES;
    for count in [1, limit, limit + 1] {
        let pending: Vec<_> = (0..count).map(|_| pending_fence(&vgem)).collect();
        let mut merged = pending[0].sync_file.try_clone().expect("dup");
        for p in &pending[1..] {
            merged = merged.merge(&p.sync_file).expect("merge");
        }
        assert_eq!(merged.fence_count().expect("count") as usize, count);
        assert_eq!(
            merged.signaled_at_ns().expect("read"),
            None,
            "{count} fences: none signalled yet"
        );
        let before = monotonic_now_ns();
        let mut last = None;
        for (i, p) in pending.into_iter().enumerate() {
            if i + 1 == count {
                assert_eq!(
                    merged.signaled_at_ns().expect("read"),
                    None,
                    "{count} fences: one still pending"
                );
                last = Some(monotonic_now_ns());
            }
            vgem.signal(p.vgem_fence).expect("signal");
        }
        let after = monotonic_now_ns();
        let got = merged.signaled_at_ns().expect("read");
        if count > limit {
            assert_eq!(got, None, "{count} fences: more than the limit");
        } else {
            let t = got.unwrap_or_else(|| panic!("{count} fences: all signalled, no time"));
            let last = last.expect("last signal");
            assert!(
                (before..=after).contains(&t) && t >= last,
                "{count} fences: signal time {t} is the last fence's (signalled after {last}, by {after})"
            );
        }
    }
}

#[test]
fn dmabuf_ready_source_fallback_fires_after_all_planes() {
    require_vm();
    let vgem = Vgem::open();
    let a = vgem.create_buffer(16, 16).expect("a");
    let b = vgem.create_buffer(16, 16).expect("b");
    let fa = vgem.attach(&a, FenceAccess::Write).expect("fa");
    let fb = vgem.attach(&b, FenceAccess::Write).expect("fb");
    let mut event_loop: EventLoop<'_, u32> = EventLoop::try_new().expect("loop");
    let planes = vec![
        a.dmabuf.try_clone().expect("dup"),
        b.dmabuf.try_clone().expect("dup"),
    ];
    event_loop
        .handle()
        .insert_source(DmabufReadySource::new(planes), |(), _, n: &mut u32| *n += 1)
        .expect("insert");
    let mut n = 0;
    event_loop.dispatch(Some(SHORT), &mut n).expect("dispatch");
    vgem.signal(fb).expect("signal b");
    event_loop.dispatch(Some(SHORT), &mut n).expect("dispatch");
    assert_eq!(n, 0, "plane a still busy");
    vgem.signal(fa).expect("signal a");
    dispatch_until(&mut event_loop, &mut n, LONG, |n| *n > 0);
    assert_eq!(n, 1);
    // All planes already idle: fires at the next dispatch.
    let planes = vec![a.dmabuf.try_clone().expect("dup")];
    event_loop
        .handle()
        .insert_source(DmabufReadySource::new(planes), |(), _, n: &mut u32| *n += 1)
        .expect("insert");
    dispatch_until(&mut event_loop, &mut n, LONG, |n| *n > 1);
    assert_eq!(n, 2);
}

// ------------------------------------------------------------------------------------
// Release
// ------------------------------------------------------------------------------------

#[test]
fn import_read_makes_export_write_wait() {
    require_vm();
    let vgem = Vgem::open();
    let pending = pending_fence(&vgem);
    let client = vgem.create_buffer(32, 32).expect("client buffer");
    dmabuf::import_sync_file(client.dmabuf.as_fd(), &pending.sync_file, Access::Read)
        .expect("import");
    let w = dmabuf::export_sync_file(client.dmabuf.as_fd(), Access::Write).expect("export write");
    let r = dmabuf::export_sync_file(client.dmabuf.as_fd(), Access::Read).expect("export read");
    assert!(
        !w.is_signaled().expect("poll"),
        "the client's next write must wait for our read"
    );
    assert!(
        r.is_signaled().expect("poll"),
        "a read fence does not block readers"
    );
    vgem.signal(pending.vgem_fence).expect("signal");
    w.wait(LONG)
        .expect("write export signals after the imported fence");
}

#[test]
fn import_write_makes_export_read_wait() {
    require_vm();
    let vgem = Vgem::open();
    let pending = pending_fence(&vgem);
    let client = vgem.create_buffer(32, 32).expect("client buffer");
    dmabuf::import_planes(&[client.dmabuf.as_fd()], &pending.sync_file, Access::Write)
        .expect("import");
    let r = dmabuf::export_sync_file(client.dmabuf.as_fd(), Access::Read).expect("export read");
    assert!(!r.is_signaled().expect("poll"));
    vgem.signal(pending.vgem_fence).expect("signal");
    r.wait(LONG).expect("signals");
}

#[test]
fn release_merger_distinct_contexts_signals_after_all_readers() {
    require_vm();
    const N: usize = 6;
    let vgem = Vgem::open();
    let readers: Vec<PendingFence> = (0..N).map(|_| pending_fence(&vgem)).collect();
    let mut merger: ReleaseMerger = ReleaseMerger::new();
    let ids: Vec<_> = (0..N)
        .map(|_| merger.begin_read().expect("begin"))
        .collect();
    let mut vgem_fences = Vec::new();
    for (id, r) in ids.into_iter().zip(readers) {
        vgem_fences.push(r.vgem_fence);
        merger.end_read(id, Some(r.sync_file)).expect("end");
        assert_eq!(merger.held_fences(), 1, "merged eagerly into one sync_file");
    }
    assert_eq!(merger.seal(), ReleaseProgress::Ready);
    let release = merger.try_finish().expect("finish").expect("ready");
    let fence = release.into_sync_file().expect("merge").expect("a fence");
    assert_eq!(
        fence.fence_count().expect("count"),
        N as u32,
        "one fence per distinct context"
    );
    for f in &vgem_fences[..N - 1] {
        vgem.signal(*f).expect("signal");
        assert!(
            !fence.is_signaled().expect("poll"),
            "must wait for every reader"
        );
    }
    vgem.signal(vgem_fences[N - 1]).expect("signal");
    fence.wait(LONG).expect("signals after the last reader");
}

#[test]
fn release_merger_identical_contexts_collapse_to_one_fence() {
    require_vm();
    let vgem = Vgem::open();
    let p = pending_fence(&vgem);
    let mut merger: ReleaseMerger = ReleaseMerger::new();
    for _ in 0..50 {
        merger
            .add_reader_fence(p.sync_file.try_clone().expect("dup"))
            .expect("add");
    }
    merger.seal();
    let fence = merger
        .try_finish()
        .expect("finish")
        .expect("ready")
        .into_sync_file()
        .expect("merge")
        .expect("fence");
    assert_eq!(
        fence.fence_count().expect("count"),
        1,
        "same context -> one fence"
    );
    assert!(!fence.is_signaled().expect("poll"));
    vgem.signal(p.vgem_fence).expect("signal");
    fence.wait(LONG).expect("signals");
}

#[test]
fn release_merger_timeline_chain_points_dedup_overlapping_fences() {
    require_vm();
    let vgem = Vgem::open();
    let dev = virtio_syncobj_device();
    let tl = dev.create_timeline().expect("timeline");
    let ps: Vec<PendingFence> = (0..4).map(|_| pending_fence(&vgem)).collect();
    for (i, p) in ps.iter().enumerate() {
        tl.import_point(i as u64 + 1, &p.sync_file)
            .expect("import point");
    }
    let mut merger: ReleaseMerger = ReleaseMerger::new();
    for point in 1..=4 {
        merger
            .add_reader_fence(tl.export_point(point).expect("export point"))
            .expect("add");
    }
    merger.seal();
    let fence = merger
        .try_finish()
        .expect("finish")
        .expect("ready")
        .into_sync_file()
        .expect("merge")
        .expect("fence");
    // SYNC_IOC_MERGE unwraps each chain point into the fences behind it (point k: the k
    // vgem fences of points 1..=k). Without per-context dedup that would be 1+2+3+4 = 10
    // fences; with it, one per distinct vgem context survives.
    assert_eq!(fence.fence_count().expect("count"), 4);
    for p in ps.iter().rev() {
        assert!(!fence.is_signaled().expect("poll"));
        vgem.signal(p.vgem_fence).expect("signal");
    }
    fence.wait(LONG).expect("signals after all points");
}

#[test]
fn release_fence_delivery_paths() {
    require_vm();
    let vgem = Vgem::open();
    let dev = virtio_syncobj_device();
    let client = vgem.create_buffer(16, 16).expect("client");
    let p = pending_fence(&vgem);

    let mut merger: ReleaseMerger = ReleaseMerger::new();
    let id = merger.begin_read().expect("begin");
    merger
        .end_read(id, Some(p.sync_file.try_clone().expect("dup")))
        .expect("end");
    merger.seal();
    let release = merger.try_finish().expect("finish").expect("ready");
    // dma-buf delivery
    release
        .import_into(&[client.dmabuf.as_fd()])
        .expect("import");
    assert!(
        !dmabuf::export_sync_file(client.dmabuf.as_fd(), Access::Write)
            .expect("x")
            .is_signaled()
            .expect("poll")
    );
    // syncobj delivery
    let tl = dev.create_timeline().expect("timeline");
    release.signal_point(&tl, 7).expect("transfer");
    assert_eq!(tl.last_submitted().expect("query"), 7);
    assert!(tl.query().expect("query") < 7);
    vgem.signal(p.vgem_fence).expect("signal");
    tl.wait(7, WaitMode::Signaled, LONG)
        .expect("point 7 signals with the readers");

    // No fence at all: CPU-signal fallback.
    let mut merger: ReleaseMerger = ReleaseMerger::new();
    let id = merger.begin_read().expect("begin");
    merger.end_read(id, None).expect("end");
    merger.seal();
    let release = merger.try_finish().expect("finish").expect("ready");
    assert!(release.is_signaled());
    release.signal_point(&tl, 8).expect("cpu signal");
    assert_eq!(tl.query().expect("query"), 8);
    assert!(release.into_sync_file().expect("none").is_none());
}

// ------------------------------------------------------------------------------------
// Timelines (virtio_gpu)
// ------------------------------------------------------------------------------------

#[test]
fn virtio_gpu_timelines_and_eventfd_probe() {
    require_vm();
    let dev = virtio_syncobj_device();
    assert_eq!(dev.driver_name(), "virtio_gpu");
    assert!(dev.supports_eventfd(), "6.12 has SYNCOBJ_EVENTFD");
    let stub = dev.signaled_sync_file().expect("stub");
    assert!(stub.is_signaled().expect("poll"));
}

#[test]
fn eventfd_fires_on_signal_and_on_materialization() {
    require_vm();
    let vgem = Vgem::open();
    let dev = virtio_syncobj_device();
    let tl = dev.create_timeline().expect("timeline");
    let avail = tl
        .eventfd(3, WaitMode::Available)
        .expect("eventfd available");
    let signaled = tl.eventfd(3, WaitMode::Signaled).expect("eventfd signaled");
    assert!(!readable(avail.as_fd()) && !readable(signaled.as_fd()));

    // Materialize point 3 with a pending fence: available fires, signalled does not.
    let p = pending_fence(&vgem);
    tl.import_point(3, &p.sync_file).expect("import point");
    assert!(
        readable(avail.as_fd()),
        "WAIT_AVAILABLE fires on materialization"
    );
    assert!(!readable(signaled.as_fd()));
    vgem.signal(p.vgem_fence).expect("signal");
    tl.wait(3, WaitMode::Signaled, LONG).expect("wait");
    assert!(readable(signaled.as_fd()), "eventfd fires on signal");

    // An eventfd for a point that is already signalled fires at once; CPU signal works.
    assert!(readable(
        tl.eventfd(2, WaitMode::Signaled).expect("eventfd").as_fd()
    ));
    let e5 = tl.eventfd(5, WaitMode::Signaled).expect("eventfd");
    tl.signal(5).expect("signal");
    assert!(readable(e5.as_fd()));
    assert_eq!(tl.query().expect("query"), 5);
}

#[test]
fn timeline_point_source_fires_once_in_calloop() {
    require_vm();
    let vgem = Vgem::open();
    let dev = virtio_syncobj_device();
    let tl = dev.create_timeline().expect("timeline");
    let mut event_loop: EventLoop<'_, Vec<(u64, WaitMode)>> = EventLoop::try_new().expect("loop");
    for mode in [WaitMode::Available, WaitMode::Signaled] {
        event_loop
            .handle()
            .insert_source(
                TimelinePointSource::new(&tl, 1, mode).expect("source"),
                |ev, _, seen: &mut Vec<_>| seen.push((ev.point, ev.mode)),
            )
            .expect("insert");
    }
    let mut seen = Vec::new();
    event_loop
        .dispatch(Some(SHORT), &mut seen)
        .expect("dispatch");
    assert!(seen.is_empty());
    let p = pending_fence(&vgem);
    tl.import_point(1, &p.sync_file).expect("import");
    dispatch_until(&mut event_loop, &mut seen, LONG, |s| !s.is_empty());
    assert_eq!(seen, vec![(1, WaitMode::Available)]);
    vgem.signal(p.vgem_fence).expect("signal");
    dispatch_until(&mut event_loop, &mut seen, LONG, |s| s.len() > 1);
    assert_eq!(
        seen,
        vec![(1, WaitMode::Available), (1, WaitMode::Signaled)]
    );
    event_loop
        .dispatch(Some(SHORT), &mut seen)
        .expect("dispatch");
    assert_eq!(seen.len(), 2, "each source fires once");
}

#[test]
fn sync_file_point_round_trips_preserve_the_wait() {
    require_vm();
    let vgem = Vgem::open();
    let dev = virtio_syncobj_device();
    let tl = dev.create_timeline().expect("timeline");
    let p = pending_fence(&vgem);
    tl.import_point(10, &p.sync_file)
        .expect("sync_file -> point");
    let back = tl.export_point(10).expect("point -> sync_file");
    assert!(!back.is_signaled().expect("poll"));
    // And through a second timeline (as a client's release timeline would be).
    let tl2 = dev.create_timeline().expect("timeline 2");
    tl2.import_point(1, &back).expect("import into tl2");
    let back2 = tl2.export_point(1).expect("export from tl2");
    assert!(!back2.is_signaled().expect("poll"));
    // Round trip through an exported/imported fd, as between processes.
    let tl3 = dev
        .import_timeline(tl2.export_fd().expect("fd"))
        .expect("import fd");
    let back3 = tl3.export_point(1).expect("export tl3");
    assert!(!back3.is_signaled().expect("poll"));
    vgem.signal(p.vgem_fence).expect("signal");
    for f in [&back, &back2, &back3] {
        f.wait(LONG).expect("every copy signals");
    }
    // A signalled point converts to a signalled fence.
    assert!(tl
        .export_point(10)
        .expect("export")
        .is_signaled()
        .expect("poll"));
    assert!(tl
        .export_point(3)
        .expect("earlier point")
        .is_signaled()
        .expect("poll"));
}

/// Why `Timeline::import_point` keeps its own `FD_TO_HANDLE(IMPORT_SYNC_FILE)` (bridge's
/// `syncobj_ioctl::import_sync_file`): the drm crate's `fd_to_syncobj(fd, true)` sends
/// handle 0, so it cannot put a sync_file into a syncobj that exists, and the kernel says
/// ENOENT. If this starts failing, the crate was fixed and ours can go.
#[test]
fn drm_crate_cannot_import_a_sync_file_into_an_existing_syncobj() {
    use drm::control::Device as _;
    use syncbridge_tests::client::harness::virtio_render_node;
    use syncbridge_tests::kernel::card::Card;
    require_vm();
    let vgem = Vgem::open();
    let p = pending_fence(&vgem);

    let card = Card::open(&virtio_render_node()).expect("open virtio_gpu's render node");
    let existing = card.create_syncobj(false).expect("create a syncobj");
    let err = card
        .fd_to_syncobj(p.sync_file.as_fd(), true)
        .expect_err("the crate imports into handle 0, which never exists");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    // Nor did the fence land in the syncobj that exists: it still has none (EINVAL).
    let export = card.syncobj_to_fd(existing, true);
    assert_eq!(
        export.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::EINVAL),
        "{export:?}"
    );
    card.destroy_syncobj(existing).expect("destroy");

    // Ours imports the same fence into an existing timeline's point, and it keeps the wait.
    let dev = virtio_syncobj_device();
    let tl = dev.create_timeline().expect("timeline");
    tl.import_point(1, &p.sync_file).expect("import_point");
    let back = tl.export_point(1).expect("export_point");
    assert!(
        !back.is_signaled().expect("poll"),
        "the vgem fence is pending"
    );
    vgem.signal(p.vgem_fence).expect("signal");
    back.wait(LONG).expect("signals with the vgem fence");
    tl.wait(1, WaitMode::Signaled, LONG)
        .expect("point 1 signalled");
}

#[test]
fn never_materializing_point_never_fires_and_costs_nothing() {
    require_vm();
    let dev = virtio_syncobj_device();
    let tl = dev.create_timeline().expect("timeline");
    let mut event_loop: EventLoop<'_, u32> = EventLoop::try_new().expect("loop");
    let token = event_loop
        .handle()
        .insert_source(
            TimelinePointSource::new(&tl, 1000, WaitMode::Available).expect("source"),
            |_, _, n: &mut u32| *n += 1,
        )
        .expect("insert");
    let mut n = 0;
    tl.signal(1).expect("other points move");
    tl.signal(999).expect("other points move");
    let cpu0 = cpu_time();
    let wall = Instant::now();
    while wall.elapsed() < Duration::from_secs(2) {
        event_loop
            .dispatch(Some(Duration::from_millis(500)), &mut n)
            .expect("dispatch");
    }
    let cpu = cpu_time() - cpu0;
    assert_eq!(n, 0, "point 1000 never materialized");
    assert!(
        cpu < Duration::from_millis(100),
        "a pending point must cost no CPU, used {cpu:?} in 2 s"
    );
    assert!(tl.export_point(1000).is_err());
    event_loop.handle().remove(token);
    // Removing the source and dropping the timeline leaves nothing behind.
    let fds = open_fds();
    drop(tl);
    assert!(open_fds() <= fds);
}

// ------------------------------------------------------------------------------------
// Never-signalling fences
// ------------------------------------------------------------------------------------

#[test]
fn never_signalled_vgem_fence_is_forced_after_10s_without_blocking_us() {
    require_vm();
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(16, 16).expect("buffer");
    let attached_ns = monotonic_now_ns();
    let _never = vgem.attach(&buf, FenceAccess::Write).expect("attach");
    let fence = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read).expect("export");

    // A bounded wait times out with its own error, well before the kernel's 10 s.
    let t = Instant::now();
    let err = fence
        .wait(Duration::from_millis(300))
        .expect_err("must time out");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Os);
    assert!(t.elapsed() < Duration::from_secs(2));

    // The event loop stays idle until the kernel forces the fence.
    let mut event_loop: EventLoop<'_, Option<Instant>> = EventLoop::try_new().expect("loop");
    event_loop
        .handle()
        .insert_source(
            SyncFileSource::new(fence.try_clone().expect("dup")),
            |_, _, at: &mut Option<Instant>| *at = Some(Instant::now()),
        )
        .expect("insert");
    let mut fired_at = None;
    let cpu0 = cpu_time();
    let mut wakeups = 0u32;
    let start = Instant::now();
    while fired_at.is_none() && start.elapsed() < Duration::from_secs(20) {
        event_loop
            .dispatch(Some(Duration::from_secs(1)), &mut fired_at)
            .expect("dispatch");
        wakeups += 1;
    }
    let cpu = cpu_time() - cpu0;
    assert!(
        fired_at.is_some(),
        "kernel must force-signal the vgem fence"
    );
    let info = fence.info().expect("info");
    assert_eq!(
        info.status,
        FenceStatus::Signaled,
        "forced signal carries no error: {info:?}"
    );
    let signalled_ns = info.signaled_at_ns().expect("timestamp");
    let late = Duration::from_nanos(signalled_ns.saturating_sub(attached_ns));
    assert!(
        late >= Duration::from_secs(9) && late < Duration::from_secs(15),
        "timestamp says it signalled {late:?} after attach"
    );
    assert!(
        cpu < Duration::from_millis(200),
        "idle wait used {cpu:?} CPU over {wakeups} wakeups"
    );
    eprintln!(
        "forced signal after {late:?}; {wakeups} loop wake-ups (1 s dispatch timeout), {cpu:?} CPU"
    );
}

// ------------------------------------------------------------------------------------
// Bounds
// ------------------------------------------------------------------------------------

#[test]
fn hundred_thousand_cycles_keep_fds_memory_and_fence_set_flat() {
    require_vm();
    let cycles: usize = std::env::var("VM_BRIDGE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(16, 16).expect("buffer");
    // A pending reader that stays on the buffer the whole time, so every export carries a
    // real unsignalled fence (signalled at the end).
    let pending = pending_fence(&vgem);
    dmabuf::import_sync_file(buf.dmabuf.as_fd(), &pending.sync_file, Access::Read).expect("import");
    let dmabuf_fd = buf.dmabuf.as_fd();

    // Warm up allocator caches, then measure.
    let mut acc = dmabuf::export_sync_file(dmabuf_fd, Access::Write).expect("export");
    for _ in 0..1000 {
        let e = dmabuf::export_sync_file(dmabuf_fd, Access::Write).expect("export");
        acc = acc.merge(&e).expect("merge");
        dmabuf::import_sync_file(dmabuf_fd, &acc, Access::Read).expect("import");
    }
    let fds0 = open_fds();
    let rss0 = rss_kib();
    let live0 = syncbridge_bridge::stats().live_sync_files;
    let start = Instant::now();
    let mut max_fences = 0;
    for i in 0..cycles {
        let e = dmabuf::export_sync_file(dmabuf_fd, Access::Write).expect("export");
        acc = acc.merge(&e).expect("merge");
        dmabuf::import_sync_file(dmabuf_fd, &acc, Access::Read).expect("import");
        if i % 10_000 == 0 {
            max_fences = max_fences.max(buffer_fence_count(dmabuf_fd));
        }
    }
    let took = start.elapsed();
    let fds1 = open_fds();
    let rss1 = rss_kib();
    let fences = buffer_fence_count(dmabuf_fd);
    eprintln!(
        "{cycles} cycles in {took:?} ({:?}/cycle): fds {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB, \
         buffer fences {fences} (max seen {max_fences}), acc fences {}",
        took / cycles.max(1) as u32,
        acc.fence_count().expect("count")
    );
    assert_eq!(fds1, fds0, "fd count must stay flat");
    assert_eq!(syncbridge_bridge::stats().live_sync_files, live0);
    assert!(rss1 <= rss0 + 1024, "RSS grew from {rss0} to {rss1} KiB");
    assert!(
        fences <= 2 && max_fences <= 2,
        "fence set must stay bounded: {fences} / {max_fences}"
    );
    assert_eq!(
        acc.fence_count().expect("count"),
        1,
        "merging dedups per context"
    );
    match vgem.signal(pending.vgem_fence) {
        Ok(()) => {}
        // vgem signals a fence itself 10 s after attaching it; on a loaded machine the
        // cycles above can take longer (12.4 s seen), and the kernel then answers
        // ETIMEDOUT: the fence is signalled either way, which the wait below checks.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::TIMEDOUT.raw_os_error()) => {}
        Err(e) => panic!("signalling the pending vgem fence: {e}"),
    }
    acc.wait(LONG).expect("signals");
}

#[test]
fn merger_bounds_many_pending_distinct_context_readers() {
    require_vm();
    // Unlike the kernel's dma_resv (which keeps every pending fence of a distinct context),
    // the merger holds exactly one sync_file fd however many readers it folds in.
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(16, 16).expect("buffer");
    let fds0 = open_fds();
    let mut merger: ReleaseMerger = ReleaseMerger::new();
    let mut fences = Vec::new();
    for _ in 0..200 {
        fences.push(vgem.attach(&buf, FenceAccess::Read).expect("attach read"));
        let f = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Write).expect("export");
        merger.add_reader_fence(f).expect("add");
        assert_eq!(merger.held_fences(), 1);
    }
    assert_eq!(open_fds(), fds0 + 1, "one merged fd, nothing else");
    for f in fences {
        vgem.signal(f).expect("signal");
    }
    merger.seal();
    let fence = merger
        .try_finish()
        .expect("finish")
        .expect("ready")
        .into_sync_file()
        .expect("merge")
        .expect("fence");
    fence.wait(LONG).expect("signalled");
}

// ------------------------------------------------------------------------------------
// Bad input
// ------------------------------------------------------------------------------------

#[test]
fn bad_input_sync_file() {
    require_vm();
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(8, 8).expect("buffer");
    let dev = virtio_syncobj_device();
    let tl = dev.create_timeline().expect("timeline");
    let (pipe_r, _pipe_w) = rustix::pipe::pipe().expect("pipe");
    let wrong: Vec<(&str, std::os::fd::OwnedFd)> = vec![
        ("pipe", pipe_r),
        (
            "memfd",
            rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd"),
        ),
        (
            "eventfd",
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd"),
        ),
        ("dma-buf", buf.dmabuf.try_clone().expect("dup")),
        ("drm render node", open_virtio_node(NodeKind::Render)),
        ("vgem card", open_node("vgem", NodeKind::Primary)),
        ("syncobj fd", tl.export_fd().expect("syncobj fd")),
    ];
    for (what, fd) in wrong {
        let e = SyncFile::from_fd(fd).expect_err(what);
        assert!(
            matches!(e, SyncFileError::NotASyncFile { .. }),
            "{what}: {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::BadInput, "{what}");
        if what == "syncobj fd" || what == "eventfd" {
            assert!(
                matches!(
                    e,
                    SyncFileError::NotASyncFile {
                        reason: NotASyncFileReason::Ioctl(_),
                        ..
                    }
                ),
                "{what}: {e:?}"
            );
        }
    }
    // A real one is accepted.
    let good = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read).expect("export");
    let again = SyncFile::from_fd(good.into_fd()).expect("a sync_file is accepted");
    // Deadline: supported on 6.12 (a hint; vgem ignores it).
    again
        .set_deadline(Instant::now() + Duration::from_millis(5))
        .expect("SET_DEADLINE exists on 6.12");
}

#[test]
fn bad_input_dmabuf() {
    require_vm();
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(8, 8).expect("buffer");
    let sf = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read).expect("export");
    let (pipe_r, _w) = rustix::pipe::pipe().expect("pipe");
    let render = open_virtio_node(NodeKind::Render);
    let wrong = [
        ("pipe", pipe_r.as_fd()),
        ("sync_file", sf.as_fd()),
        ("drm node", render.as_fd()),
    ];
    for (what, fd) in wrong {
        let checks: Vec<Result<(), DmabufFenceError>> = vec![
            dmabuf::export_sync_file(fd, Access::Read).map(drop),
            dmabuf::import_sync_file(fd, &sf, Access::Read),
            dmabuf::export_planes(&[buf.dmabuf.as_fd(), fd], Access::Write).map(drop),
            dmabuf::import_planes(&[buf.dmabuf.as_fd(), fd], &sf, Access::Read),
            dmabuf::poll_readable(&[fd]).map(drop),
        ];
        for (i, r) in checks.into_iter().enumerate() {
            let e = r.expect_err(what);
            assert!(
                matches!(e, DmabufFenceError::NotADmabuf { .. }),
                "{what} #{i}: {e:?}"
            );
            assert_eq!(e.kind(), ErrorKind::BadInput);
        }
    }
    // Closed fd.
    let closed = borrow_closed(closed_fd_number());
    for r in [
        dmabuf::export_sync_file(closed, Access::Read).map(drop),
        dmabuf::import_sync_file(closed, &sf, Access::Write),
        dmabuf::poll_readable(&[closed]).map(drop),
        dmabuf::is_dmabuf(closed).map(drop),
    ] {
        let e = r.expect_err("closed fd");
        assert!(matches!(e, DmabufFenceError::BadFd { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert_eq!(e.errno(), Some(rustix::io::Errno::BADF));
    }
    // Bad flags.
    for flags in [0u32, 4, 0x8000_0001] {
        let e = dmabuf::export_sync_file_flags(buf.dmabuf.as_fd(), flags)
            .map(drop)
            .expect_err("flags");
        assert!(matches!(e, DmabufFenceError::BadFlags { .. }));
        let e = dmabuf::import_sync_file_flags(buf.dmabuf.as_fd(), &sf, flags).expect_err("flags");
        assert_eq!(e.kind(), ErrorKind::BadInput);
    }
    assert!(matches!(
        dmabuf::import_planes(&[], &sf, Access::Read),
        Err(DmabufFenceError::NoPlanes)
    ));
}

#[test]
fn bad_input_syncobj() {
    require_vm();
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(8, 8).expect("buffer");

    // Devices: vgem has no syncobj at all; a pipe is no DRM device.
    let e = SyncobjDevice::new(open_node("vgem", NodeKind::Primary)).expect_err("vgem");
    assert!(
        matches!(e, SyncobjError::TimelinesUnsupported { syncobj: false, .. }),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let (pipe_r, pipe_w) = rustix::pipe::pipe().expect("pipe");
    let e = SyncobjDevice::new(pipe_r).expect_err("pipe");
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let e = SyncobjDevice::new(buf.dmabuf.try_clone().expect("dup")).expect_err("dma-buf");
    assert!(matches!(e, SyncobjError::NotADrmDevice { .. }), "{e:?}");

    // Timelines: a non-syncobj fd is bad input.
    let dev = virtio_syncobj_device();
    let sf = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read).expect("export");
    let wrong: Vec<(&str, std::os::fd::OwnedFd)> = vec![
        ("pipe", pipe_w),
        ("sync_file", sf.try_clone().expect("dup").into_fd()),
        ("dma-buf", buf.dmabuf.try_clone().expect("dup")),
        (
            "eventfd",
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd"),
        ),
        ("drm node", open_virtio_node(NodeKind::Render)),
    ];
    for (what, fd) in wrong {
        let e = dev.import_timeline(fd).expect_err(what);
        assert!(
            matches!(e, SyncobjError::NotASyncobj { .. }),
            "{what}: {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::BadInput);
    }

    // Points going backwards, point 0, unmaterialized points.
    let tl = dev.create_timeline().expect("timeline");
    tl.signal(5).expect("signal 5");
    for bad in [0, 3, 5] {
        let e = tl.signal(bad).expect_err("backwards");
        assert!(
            matches!(e, SyncobjError::PointWentBackwards { last: 5, .. }),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::BadInput);
        let e = tl.import_point(bad, &sf).expect_err("backwards");
        assert_eq!(e.kind(), ErrorKind::BadInput);
    }
    let e = tl.export_point(6).expect_err("not materialized");
    assert!(
        matches!(e, SyncobjError::PointNotMaterialized { point: 6, .. }),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let e = tl
        .wait(6, WaitMode::Available, Duration::from_millis(50))
        .expect_err("timeout");
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(tl.query().expect("query"), 5, "nothing changed");

    // The release merger refuses misuse.
    let mut m: ReleaseMerger = ReleaseMerger::new();
    m.seal();
    assert!(matches!(m.begin_read(), Err(ReleaseError::Sealed)));
    let _ = m.try_finish().expect("finish").expect("ready");
    assert!(matches!(m.try_finish(), Err(ReleaseError::Finished)));
}

#[test]
fn closed_fds_and_stats_bookkeeping() {
    require_vm();
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(8, 8).expect("buffer");
    let s0 = syncbridge_bridge::stats();
    {
        let a = dmabuf::export_sync_file(buf.dmabuf.as_fd(), Access::Read).expect("export");
        let b = a.try_clone().expect("dup");
        let _m = a.merge(&b).expect("merge");
        dmabuf::import_sync_file(buf.dmabuf.as_fd(), &a, Access::Read).expect("import");
        let s1 = syncbridge_bridge::stats();
        assert_eq!(s1.live_sync_files, s0.live_sync_files + 3);
        assert_eq!(s1.fences_exported, s0.fences_exported + 1);
        assert_eq!(s1.fences_imported, s0.fences_imported + 1);
        assert_eq!(s1.fences_merged, s0.fences_merged + 1);
    }
    assert_eq!(
        syncbridge_bridge::stats().live_sync_files,
        s0.live_sync_files
    );
    let raw = buf.dmabuf.as_raw_fd();
    assert!(raw >= 0);
}

// ------------------------------------------------------------------------------------
// KMS fence helpers (virtio_gpu KMS)
// ------------------------------------------------------------------------------------

#[test]
fn kms_out_fence_slot_and_in_fence_policy_on_virtio_gpu() {
    use drm::control::{atomic::AtomicModeReq, property, AtomicCommitFlags, Device as _};
    use syncbridge_bridge::kms::{in_fence_value, FenceOrigin, OutFenceSlot};
    use syncbridge_tests::kernel::kms::KmsPipe;
    require_vm();
    let pipe = KmsPipe::on_card(open_virtio_gpu(VirtioGpu::Plain, NodeKind::Primary));
    let (card, crtc, primary) = (&pipe.card, pipe.crtc, pipe.primary);
    let fbs = [pipe.dumb_fb(), pipe.dumb_fb()];
    let out_fence_prop = pipe.prop(crtc, "OUT_FENCE_PTR");
    let in_fence_prop = pipe.prop(primary, "IN_FENCE_FD");
    let mut slot = OutFenceSlot::new();

    // The compositor's own (signalled) fence may go into IN_FENCE_FD; a pending client fence
    // may not.
    let vgem = Vgem::open();
    let client = pending_fence(&vgem);
    assert_eq!(
        in_fence_value(&client.sync_file, FenceOrigin::Client).expect("policy"),
        None
    );
    assert!(in_fence_value(&client.sync_file, FenceOrigin::Compositor)
        .expect("policy")
        .is_some());
    let own = virtio_syncobj_device().signaled_sync_file().expect("stub");
    let fds0 = open_fds();

    for i in 0..6usize {
        let mut req = pipe.flip_request(fbs[i % 2], i == 0);
        if let Some(v) = in_fence_value(&own, FenceOrigin::Compositor).expect("policy") {
            req.add_property(primary, in_fence_prop, property::Value::SignedRange(v));
        }
        req.add_property(
            crtc,
            out_fence_prop,
            property::Value::SignedRange(slot.arm()),
        );
        let flags = if i == 0 {
            AtomicCommitFlags::ALLOW_MODESET | AtomicCommitFlags::PAGE_FLIP_EVENT
        } else {
            AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT
        };
        card.atomic_commit(flags, req).expect("atomic commit");
        let out = slot
            .take()
            .expect("take")
            .expect("the kernel wrote an out-fence");
        out.wait(LONG)
            .expect("out-fence signals when the frame is on screen");
        let info = out.info().expect("info");
        assert_eq!(info.fences.len(), 1);
        assert_eq!(info.status, FenceStatus::Signaled);
        // The flip event (the read blocks until it arrives).
        assert!(card
            .receive_events()
            .expect("events")
            .any(|e| matches!(e, drm::control::Event::PageFlip(_))));
    }
    // A TEST_ONLY commit with OUT_FENCE_PTR gets no fence; neither does a failed commit.
    let mut req = AtomicModeReq::new();
    req.add_property(
        primary,
        pipe.prop(primary, "FB_ID"),
        property::Value::Framebuffer(Some(fbs[0])),
    );
    req.add_property(
        crtc,
        out_fence_prop,
        property::Value::SignedRange(slot.arm()),
    );
    card.atomic_commit(AtomicCommitFlags::TEST_ONLY, req)
        .expect("test-only commit");
    assert!(
        slot.take().expect("take").is_none(),
        "TEST_ONLY gives no out-fence"
    );
    let mut req = AtomicModeReq::new();
    // Turning the CRTC off needs ALLOW_MODESET: without it the commit fails (EINVAL).
    req.add_property(
        crtc,
        pipe.prop(crtc, "ACTIVE"),
        property::Value::Boolean(false),
    );
    req.add_property(
        crtc,
        out_fence_prop,
        property::Value::SignedRange(slot.arm()),
    );
    assert!(
        card.atomic_commit(AtomicCommitFlags::empty(), req).is_err(),
        "a modeset without ALLOW_MODESET must fail"
    );
    assert!(
        slot.take().expect("take").is_none(),
        "a failed commit gives no out-fence"
    );
    // An armed slot whose fence is never taken closes it: no fd leaks.
    let mut req = AtomicModeReq::new();
    req.add_property(
        primary,
        pipe.prop(primary, "FB_ID"),
        property::Value::Framebuffer(Some(fbs[1])),
    );
    req.add_property(
        crtc,
        out_fence_prop,
        property::Value::SignedRange(slot.arm()),
    );
    card.atomic_commit(AtomicCommitFlags::empty(), req)
        .expect("commit");
    drop(slot);
    assert_eq!(open_fds(), fds0, "no out-fence fd leaked");
    vgem.signal(client.vgem_fence).expect("signal");
    assert!(
        in_fence_value(&client.sync_file, FenceOrigin::Client)
            .expect("policy")
            .is_some(),
        "signalled client fence is fine"
    );
}
