//! The compositor on a real kernel (run inside the test VM by `cargo xtask test`): real
//! dma-bufs (vgem, virtio-gpu dumb buffers, udmabuf), real fences (vgem fences, virtio_gpu
//! timeline syncobjs), the in-process compositor with a manual frame clock where
//! determinism matters, and the real `syncbridge` binary with Debian's weston clients.
//!
//! Every test appends a line of figures (latch latency, frames) to
//! `$SYNCBRIDGE_SCRATCH/vm_compositor_sync_summary.jsonl`, and `zz_summary` prints them.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use syncbridge_bridge::{SyncFile, SyncobjDevice, Timeline};
use syncbridge_protocols::SyncStats;
use syncbridge_tests::client::buffers::{Allocator, DmaBuffer};
use syncbridge_tests::client::harness::{virtio_render_node, virtio_syncobj_device, ClientId, Harness};
use syncbridge_tests::compositor_bin::{
    self, eventually, runtime_dir, scratch, syncbridge_bin, Options, Running,
};
use syncbridge_tests::client::{
    globals_by_name, BufferId, Commit, CommitId, Presentation, SurfaceId, TestClient,
};
use syncbridge_tests::kernel::card::{find_nodes, NodeKind};
use syncbridge_tests::kernel::{require_vm, virtio_gpu_node, VirtioGpu};
use syncbridge_tests::kernel::vgem::VgemFence;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_surface_v1::Error as SyncobjError;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_surface_synchronization_v1::Error as ExplicitError;

// ------------------------------------------------------------------------------ helpers

const W: u32 = 64;
const H: u32 = 64;

/// Appends one JSON line of figures to the summary file.
fn record_summary(test: &str, value: serde_json::Value) {
    let line = serde_json::json!({ "test": test, "figures": value });
    let path = scratch().join("vm_compositor_sync_summary.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open the summary file");
    writeln!(f, "{line}").expect("write the summary");
}

fn bridge_figures(s: &SyncStats, frames: u64) -> serde_json::Value {
    serde_json::json!({
        "frames_presented": frames,
        "latch_p50_us": s.latch_latency.p50_ns as f64 / 1000.0,
        "latch_p99_us": s.latch_latency.p99_ns as f64 / 1000.0,
        "latch_samples": s.latch_latency.count,
        "waited_implicit": s.commits_waited_implicit,
        "waited_syncobj": s.commits_waited_syncobj,
        "waited_explicit": s.commits_waited_explicit,
    })
}

fn frames_presented(h: &mut Harness) -> u64 {
    h.state().stats.outputs[0].frames_presented
}

fn sync_stats(h: &mut Harness) -> SyncStats {
    h.state().sync_bridge.stats()
}

/// Pumps until the bridge has no acquire wait in flight (the fence we signalled was seen).
fn until_no_waits(h: &mut Harness) {
    let ok = h.pump_until(500, |h| sync_stats(h).pending_waits == 0);
    assert!(
        ok,
        "the compositor never saw the fence signal: {:?}",
        sync_stats(h)
    );
}

/// A mapped toplevel showing a first (unfenced) buffer from `alloc`.
fn mapped_surface(
    h: &mut Harness,
    c: ClientId,
    alloc: &Allocator,
) -> (SurfaceId, BufferId, DmaBuffer) {
    let s = h.create_toplevel(c);
    let buf = alloc.allocate(W, H).expect("allocate the first buffer");
    let b = h.client(c).create_dmabuf_buffer(&buf);
    h.client(c).attach(s, Some(b));
    let k = h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    let tick = h.frame();
    assert_eq!(
        h.client(c).rec.presented(k),
        Some(tick.seq),
        "an unfenced buffer is presented at the next frame"
    );
    (s, b, buf)
}

/// A vgem fence (on a scratch vgem buffer) and its sync_file: a real fence the test signals.
fn vgem_fence(alloc: &Allocator) -> (DmaBuffer, VgemFence, SyncFile) {
    let buf = alloc.allocate(16, 16).expect("scratch vgem buffer");
    let fence = alloc.attach_write_fence(&buf).expect("attach a vgem fence");
    let sf = buf.export_write_fences().expect("export the fence");
    assert!(
        !sf.is_signaled().expect("poll"),
        "a fresh vgem fence is pending"
    );
    (buf, fence, sf)
}

// ------------------------------------------------------------------------ implicit sync

#[test]
fn unsignalled_vgem_fence_is_not_presented_until_signalled_then_within_one_frame() {
    require_vm();
    let mut h = Harness::vm();
    let c = h.add_client();
    let vgem = Allocator::vgem();
    let (s, b0, _buf0) = mapped_surface(&mut h, c, &vgem);

    let buf1 = vgem.allocate(W, H).expect("vgem buffer");
    let fence = vgem.attach_write_fence(&buf1).expect("vgem write fence");
    let b1 = h.client(c).create_dmabuf_buffer(&buf1);
    h.client(c).attach(s, Some(b1));
    let k1 = h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    assert_eq!(sync_stats(&mut h).pending_waits, 1, "the commit waits");

    for _ in 0..5 {
        h.frame();
        assert_eq!(
            h.client(c).rec.outcome(k1),
            None,
            "a buffer with an unsignalled write fence must not be presented (or discarded)"
        );
        assert_eq!(
            h.client(c).rec.releases(b0),
            0,
            "the previous buffer is still shown: it must not be released"
        );
    }

    vgem.signal(fence).expect("signal the vgem fence");
    until_no_waits(&mut h);
    let tick = h.frame();
    assert_eq!(
        h.client(c).rec.presented(k1),
        Some(tick.seq),
        "presented in the first frame after the fence signalled"
    );
    h.roundtrip(c);
    assert_eq!(
        h.client(c).rec.releases(b0),
        1,
        "the replaced buffer is released"
    );
    assert_eq!(h.client(c).rec.releases(b1), 0, "the shown buffer is not");

    let s = sync_stats(&mut h);
    assert!(s.commits_waited_implicit >= 1, "{s:?}");
    assert!(s.latch_latency.count >= 1, "{s:?}");
    let frames = frames_presented(&mut h);
    record_summary("implicit_fence", bridge_figures(&s, frames));
}

#[test]
fn a_client_stalled_on_a_fence_for_2s_does_not_cost_another_client_a_frame() {
    require_vm();
    let mut h = Harness::vm();
    let vgem = Allocator::vgem();
    let virtio = Allocator::virtio_dumb();
    let udma = Allocator::udmabuf();

    let a = h.add_client();
    let (sa, _, _) = mapped_surface(&mut h, a, &vgem);
    let b = h.add_client();
    let (sb, first_b, _first) = mapped_surface(&mut h, b, &virtio);

    // A commits a buffer whose fence stays unsignalled for 2 s.
    let stalled = vgem.allocate(W, H).expect("vgem buffer");
    let fence = vgem.attach_write_fence(&stalled).expect("fence");
    let bs = h.client(a).create_dmabuf_buffer(&stalled);
    h.client(a).attach(sa, Some(bs));
    let ka = h.client(a).commit(sa, Commit::feedback());
    h.roundtrip(a);

    // B: a new buffer every frame, from virtio-gpu dumb buffers and udmabufs.
    let mut pool: Vec<(BufferId, DmaBuffer, usize)> = Vec::new();
    for i in 0..4 {
        let alloc = if i % 2 == 0 { &virtio } else { &udma };
        let buf = alloc.allocate(W, H).expect("allocate");
        let id = h.client(b).create_dmabuf_buffer(&buf);
        pool.push((id, buf, 0));
    }
    let start = Instant::now();
    let mut frames = 0u64;
    let mut previous = first_b;
    while start.elapsed() < Duration::from_secs(2) {
        let slot = (frames as usize) % pool.len();
        let (id, _, uses) = &mut pool[slot];
        let id = *id;
        // A client reuses a buffer only once it was released.
        let released = h.client(b).rec.releases(id);
        assert_eq!(released, *uses, "buffer {id} was released after each use");
        *uses += 1;
        h.client(b).attach(sb, Some(id));
        let kb = h.client(b).commit(sb, Commit::feedback());
        h.roundtrip(b);
        let tick = h.frame();
        assert_eq!(
            h.client(b).rec.presented(kb),
            Some(tick.seq),
            "B's commit {kb} must be presented at the frame right after it (frame {frames})"
        );
        assert_eq!(
            h.client(a).rec.outcome(ka),
            None,
            "A's buffer is still not ready"
        );
        h.roundtrip(b);
        assert!(
            h.client(b).rec.releases(previous) >= 1,
            "B's replaced buffer was released"
        );
        previous = id;
        frames += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(frames >= 10, "only {frames} frames in 2 s");

    vgem.signal(fence).expect("signal");
    until_no_waits(&mut h);
    let tick = h.frame();
    assert_eq!(h.client(a).rec.presented(ka), Some(tick.seq));
    let s = sync_stats(&mut h);
    let total = frames_presented(&mut h);
    let mut fig = bridge_figures(&s, total);
    fig["b_frames_during_stall"] = frames.into();
    fig["stall_latch_ms"] = (s.latch_latency.max_ns as f64 / 1e6).into();
    record_summary("two_clients_one_stalled", fig);
}

// ------------------------------------------------------------------- linux-drm-syncobj-v1

#[test]
fn syncobj_acquire_is_honoured_and_release_points_signal_only_after_use_and_always() {
    require_vm();
    let mut h = Harness::vm();
    let c = h.add_client();
    let vgem = Allocator::vgem();
    let (acq, rel, acq_obj, rel_obj) = h.client(c).new_timelines(&virtio_syncobj_device());
    let s = h.create_toplevel(c);
    h.client(c).syncobj_surface(s);
    h.roundtrip(c);

    // B1: acquire point 1 not yet signalled.
    let buf1 = vgem.allocate(W, H).expect("buffer");
    let b1 = h.client(c).create_dmabuf_buffer(&buf1);
    h.client(c).attach(s, Some(b1));
    h.client(c).set_acquire_point(s, &acq_obj, 1);
    h.client(c).set_release_point(s, &rel_obj, 1);
    let k1 = h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    for _ in 0..3 {
        h.frame();
        assert_eq!(
            h.client(c).rec.outcome(k1),
            None,
            "acquire point 1 not signalled yet"
        );
    }
    acq.signal(1).expect("signal acquire point 1");
    until_no_waits(&mut h);
    let tick = h.frame();
    assert_eq!(h.client(c).rec.presented(k1), Some(tick.seq));
    for _ in 0..3 {
        h.frame();
        assert_eq!(
            rel.query().expect("query"),
            0,
            "B1 is still shown: its release point must not be signalled"
        );
    }

    // B2: acquire point 2 carries a pending vgem fence (imported into the timeline).
    let (_scratch, fence, sf) = vgem_fence(&vgem);
    acq.import_point(2, &sf)
        .expect("import the vgem fence as point 2");
    let buf2 = vgem.allocate(W, H).expect("buffer");
    let b2 = h.client(c).create_dmabuf_buffer(&buf2);
    h.client(c).attach(s, Some(b2));
    h.client(c).set_acquire_point(s, &acq_obj, 2);
    h.client(c).set_release_point(s, &rel_obj, 2);
    let k2 = h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    for _ in 0..3 {
        h.frame();
        assert_eq!(
            h.client(c).rec.outcome(k2),
            None,
            "point 2's fence is pending"
        );
        assert_eq!(
            rel.query().expect("query"),
            0,
            "B1 still shown, not released"
        );
    }
    vgem.signal(fence).expect("signal");
    until_no_waits(&mut h);
    let tick = h.frame();
    assert_eq!(h.client(c).rec.presented(k2), Some(tick.seq));
    assert!(
        h.pump_until(200, |_| rel.query().is_ok_and(|v| v >= 1)),
        "B1's release point 1 is signalled once B2 replaced it"
    );
    h.frame();
    assert_eq!(rel.query().expect("query"), 1, "B2's release point not yet");

    // Detach: B2 retired, its release point signalled.
    h.client(c).attach(s, None);
    h.client(c).commit(s, Commit::default());
    h.roundtrip(c);
    h.frame();
    assert!(
        h.pump_until(200, |_| rel.query().is_ok_and(|v| v >= 2)),
        "B2's release point is signalled after the detach"
    );

    // B3 shown, then the client disconnects: its release point is signalled all the same.
    let buf3 = vgem.allocate(W, H).expect("buffer");
    let b3 = h.client(c).create_dmabuf_buffer(&buf3);
    h.client(c).attach(s, Some(b3));
    h.client(c).set_acquire_point(s, &acq_obj, 3);
    h.client(c).set_release_point(s, &rel_obj, 3);
    acq.signal(3).expect("signal 3");
    let k3 = h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    let tick = h.frame();
    assert_eq!(h.client(c).rec.presented(k3), Some(tick.seq));
    assert_eq!(rel.query().expect("query"), 2);
    h.disconnect(c);
    h.frame();
    assert!(
        h.pump_until(200, |_| rel.query().is_ok_and(|v| v >= 3)),
        "the release point of the buffer shown at disconnect is signalled"
    );

    let s = sync_stats(&mut h);
    assert!(s.commits_waited_syncobj >= 2, "{s:?}");
    assert!(
        s.release_points_cpu_signalled + s.release_points_fenced >= 3,
        "{s:?}"
    );
    assert_eq!(s.tracked_buffers, 0, "{s:?}");
    assert_eq!(s.pending_waits, 0);
    let frames = frames_presented(&mut h);
    record_summary("syncobj", bridge_figures(&s, frames));
}

/// A fresh client with a syncobj surface and two timelines imported.
struct SyncobjCase {
    c: ClientId,
    s: SurfaceId,
    tl: wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
    tl2: wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
    _timelines: (Timeline, Timeline),
}

fn syncobj_case(h: &mut Harness, dev: &SyncobjDevice) -> SyncobjCase {
    let c = h.add_client();
    let a = dev.create_timeline().expect("timeline");
    let b = dev.create_timeline().expect("timeline");
    let tl = h
        .client(c)
        .import_timeline(a.export_fd().expect("export").as_fd());
    let tl2 = h
        .client(c)
        .import_timeline(b.export_fd().expect("export").as_fd());
    let s = h.create_toplevel(c);
    h.client(c).syncobj_surface(s);
    h.roundtrip(c);
    SyncobjCase {
        c,
        s,
        tl,
        tl2,
        _timelines: (a, b),
    }
}

#[test]
fn syncobj_protocol_errors_are_all_sent() {
    require_vm();
    let mut h = Harness::vm();
    let dev = virtio_syncobj_device();
    let vgem = Allocator::vgem();
    let bystander = h.add_client();
    let (bs, _, _) = mapped_surface(&mut h, bystander, &vgem);

    type Setup = fn(&mut Harness, &SyncobjCase, BufferId, BufferId);
    let cases: Vec<(&str, SyncobjError, Setup)> = vec![
        (
            "no acquire point",
            SyncobjError::NoAcquirePoint,
            |h, k, dma, _| {
                h.client(k.c).attach(k.s, Some(dma));
                h.client(k.c).set_release_point(k.s, &k.tl2, 1);
            },
        ),
        (
            "no release point",
            SyncobjError::NoReleasePoint,
            |h, k, dma, _| {
                h.client(k.c).attach(k.s, Some(dma));
                h.client(k.c).set_acquire_point(k.s, &k.tl, 1);
            },
        ),
        (
            "acquire == release on one timeline",
            SyncobjError::ConflictingPoints,
            |h, k, dma, _| {
                h.client(k.c).attach(k.s, Some(dma));
                h.client(k.c).set_acquire_point(k.s, &k.tl, 5);
                h.client(k.c).set_release_point(k.s, &k.tl, 5);
            },
        ),
        (
            "acquire > release on one timeline",
            SyncobjError::ConflictingPoints,
            |h, k, dma, _| {
                h.client(k.c).attach(k.s, Some(dma));
                h.client(k.c).set_acquire_point(k.s, &k.tl, 6);
                h.client(k.c).set_release_point(k.s, &k.tl, 5);
            },
        ),
        (
            "not a dma-buf",
            SyncobjError::UnsupportedBuffer,
            |h, k, _, shm| {
                h.client(k.c).attach(k.s, Some(shm));
                h.client(k.c).set_acquire_point(k.s, &k.tl, 1);
                h.client(k.c).set_release_point(k.s, &k.tl2, 1);
            },
        ),
        (
            "points without a buffer",
            SyncobjError::NoBuffer,
            |h, k, _, _| {
                h.client(k.c).set_acquire_point(k.s, &k.tl, 1);
                h.client(k.c).set_release_point(k.s, &k.tl2, 1);
            },
        ),
    ];
    let errors_before = sync_stats(&mut h).protocol_errors;
    for (i, (what, code, setup)) in cases.iter().enumerate() {
        let k = syncobj_case(&mut h, &dev);
        let buf = vgem.allocate(W, H).expect("buffer");
        let dma = h.client(k.c).create_dmabuf_buffer(&buf);
        let shm = h.client(k.c).create_shm_buffer(W as i32, H as i32);
        h.roundtrip(k.c);
        setup(&mut h, &k, dma, shm);
        h.client(k.c).commit(k.s, Commit::default());
        let err = h
            .until_protocol_error(k.c)
            .unwrap_or_else(|| panic!("{what}: no protocol error"));
        assert_eq!(
            err.object_interface, "wp_linux_drm_syncobj_surface_v1",
            "{what}: {err:?}"
        );
        assert_eq!(err.code, *code as u32, "{what}: {err:?}");
        assert_eq!(
            sync_stats(&mut h).protocol_errors,
            errors_before + i as u64 + 1,
            "{what}: counted"
        );
    }
    // The bystander is unaffected.
    let buf = vgem.allocate(W, H).expect("buffer");
    let b = h.client(bystander).create_dmabuf_buffer(&buf);
    h.client(bystander).attach(bs, Some(b));
    let k = h.client(bystander).commit(bs, Commit::feedback());
    h.roundtrip(bystander);
    let tick = h.frame();
    assert_eq!(h.client(bystander).rec.presented(k), Some(tick.seq));
    let s = sync_stats(&mut h);
    assert_eq!(s.pending_waits, 0, "{s:?}");
    assert_eq!(s.fds_held, 0, "{s:?}");
}

/// Lowers this process's RLIMIT_NOFILE soft limit to its lowest free fd number, so that the
/// next fd the process (the in-process compositor) asks for fails with EMFILE; the old
/// limit is restored on drop.
struct NoFreeFd {
    old: libc::rlimit,
}

impl NoFreeFd {
    fn new() -> Self {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into `old`, a valid exclusive reference.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
        assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
        // The kernel hands out the lowest free fd number: with the soft limit at the lowest
        // free number, no fd can be allocated.
        let lowest_free = (0..old.rlim_cur as libc::c_int)
            // SAFETY: F_GETFD only reads the fd table; an unused number fails with EBADF.
            .find(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1)
            .expect("a free fd below the limit");
        let low = libc::rlimit {
            rlim_cur: lowest_free as libc::rlim_t,
            rlim_max: old.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from a valid reference.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) };
        assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
        // SAFETY: eventfd has no memory arguments; the fd, if any, is closed at once.
        let probe = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        let err = std::io::Error::last_os_error();
        if probe >= 0 {
            // SAFETY: `probe` is an fd this function just opened and nothing else uses.
            unsafe { libc::close(probe) };
        }
        let guard = Self { old };
        assert_eq!(
            probe, -1,
            "an fd was still allocatable at the lowered limit"
        );
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
        guard
    }
}

impl Drop for NoFreeFd {
    fn drop(&mut self) {
        // SAFETY: setrlimit reads one rlimit from a valid reference.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.old) };
    }
}

/// The bridge's id of the buffer the (only) window shows, if there is a window.
fn current_buffer_id(h: &mut Harness) -> Option<syncbridge_protocols::BufferId> {
    let state = h.state();
    let window = state.space.elements().next()?.clone();
    let surface = window.toplevel()?.wl_surface().clone();
    state.sync_bridge.buffer_id(&surface)
}

/// Issue 12 item 4: a commit whose acquire wait cannot be set up (here: no fd left for the
/// timeline point's eventfd, a genuine EMFILE) is never applied, not even by the
/// surface's next commit. smithay keeps a cancelled commit's state in the surface's cache
/// and merges it into the current state with the next commit it applies, so the bridge
/// disconnects the client with `wl_display.error(no_memory)`.
#[test]
fn a_commit_whose_acquire_wait_cannot_be_set_up_is_never_applied_unwaited() {
    require_vm();
    let mut h = Harness::vm();
    let dev = virtio_syncobj_device();
    let vgem = Allocator::vgem();
    let k = syncobj_case(&mut h, &dev);
    let acquire = &k._timelines.0;

    // B1, acquire point 1 signalled: shown.
    acquire.signal(1).expect("signal acquire point 1");
    let buf1 = vgem.allocate(W, H).expect("buffer");
    let b1 = h.client(k.c).create_dmabuf_buffer(&buf1);
    h.client(k.c).attach(k.s, Some(b1));
    h.client(k.c).set_acquire_point(k.s, &k.tl, 1);
    h.client(k.c).set_release_point(k.s, &k.tl2, 1);
    let k1 = h.client(k.c).commit(k.s, Commit::feedback());
    h.roundtrip(k.c);
    let tick = h.frame();
    assert_eq!(h.client(k.c).rec.presented(k1), Some(tick.seq));
    let id1 = current_buffer_id(&mut h).expect("B1 is tracked");

    // B2, acquire point 2 never signalled; the compositor has no fd for its eventfd.
    let buf2 = vgem.allocate(W, H).expect("buffer");
    let b2 = h.client(k.c).create_dmabuf_buffer(&buf2);
    h.roundtrip(k.c);
    let rejected_before = sync_stats(&mut h).commits_rejected;
    h.client(k.c).attach(k.s, Some(b2));
    h.client(k.c).set_acquire_point(k.s, &k.tl, 2);
    h.client(k.c).set_release_point(k.s, &k.tl2, 2);
    h.client(k.c).commit(k.s, Commit::feedback());
    {
        let _no_fd = NoFreeFd::new();
        h.pump();
    }
    let st = sync_stats(&mut h);
    assert_eq!(
        st.commits_rejected,
        rejected_before + 1,
        "the wait could not be set up (EMFILE): {st:?}"
    );
    assert_eq!(st.pending_waits, 0, "{st:?}");

    // A later commit without a buffer (what a client does for damage or a frame callback).
    let k3 = h.client(k.c).commit(k.s, Commit::feedback());
    for _ in 0..3 {
        h.pump();
        h.frame();
    }
    assert_eq!(
        acquire.query().expect("query"),
        1,
        "point 2 never signalled"
    );
    let shown = current_buffer_id(&mut h);
    assert!(
        shown.is_none() || shown == Some(id1),
        "B2 was made current (bridge id {shown:?}, B1 was {id1:?}) while its acquire point 2 \
         is unsignalled: the commit whose wait failed was applied by the next commit; \
         the later commit's presentation: {:?}",
        h.client(k.c).rec.outcome(k3)
    );
    match h.until_dead(k.c) {
        Some(wayland_client::backend::WaylandError::Io(e)) => {
            assert_eq!(e.raw_os_error(), Some(libc::ENOMEM), "{e:?}")
        }
        other => panic!("expected wl_display.error(no_memory), got {other:?}"),
    }
}

/// Point 0 of a timeline is its latest fence, whatever point that fence carries: a commit
/// whose acquire point is 0 waits for it (it is not "already signalled" because the last
/// signalled point is >= 0).
#[test]
fn syncobj_acquire_point_0_waits_for_the_timelines_latest_fence() {
    require_vm();
    let mut h = Harness::vm();
    let dev = virtio_syncobj_device();
    let vgem = Allocator::vgem();
    let k = syncobj_case(&mut h, &dev);
    let (_fb, fence, sf) = vgem_fence(&vgem);
    k._timelines
        .0
        .import_point(5, &sf)
        .expect("a pending fence at point 5");
    let buf = vgem.allocate(W, H).expect("buffer");
    let b = h.client(k.c).create_dmabuf_buffer(&buf);
    h.client(k.c).attach(k.s, Some(b));
    h.client(k.c).set_acquire_point(k.s, &k.tl, 0);
    h.client(k.c).set_release_point(k.s, &k.tl2, 1);
    let commit = h.client(k.c).commit(k.s, Commit::feedback());
    h.roundtrip(k.c);
    h.frame();
    assert_eq!(
        h.client(k.c).rec.outcome(commit),
        None,
        "presented while the timeline's latest fence is pending"
    );
    assert_eq!(sync_stats(&mut h).pending_waits, 1);
    vgem.signal(fence).expect("signal");
    until_no_waits(&mut h);
    let tick = h.frame();
    assert_eq!(h.client(k.c).rec.presented(commit), Some(tick.seq));
    assert!(h.client(k.c).protocol_error().is_none());
}

#[test]
fn syncobj_manager_errors_invalid_timeline_and_surface_exists() {
    require_vm();
    let mut h = Harness::vm();
    let dev = virtio_syncobj_device();
    // A sync_file is not a syncobj.
    let c = h.add_client();
    let vgem = Allocator::vgem();
    let (_b, fence, sf) = vgem_fence(&vgem);
    h.client(c).import_timeline(sf.as_fd());
    let err = h.until_protocol_error(c).expect("invalid_timeline");
    assert_eq!(
        err.object_interface, "wp_linux_drm_syncobj_manager_v1",
        "{err:?}"
    );
    assert_eq!(err.code, 1, "invalid_timeline: {err:?}");
    vgem.signal(fence).expect("signal");
    // Two syncobj objects on one surface.
    let c = h.add_client();
    let s = h.create_toplevel(c);
    h.client(c).syncobj_surface(s);
    h.client(c).syncobj_surface(s);
    let err = h.until_protocol_error(c).expect("surface_exists");
    assert_eq!(
        err.object_interface, "wp_linux_drm_syncobj_manager_v1",
        "{err:?}"
    );
    assert_eq!(err.code, 0, "surface_exists: {err:?}");
    // A good timeline still imports for another client.
    let c = h.add_client();
    let tl = dev.create_timeline().expect("timeline");
    h.client(c)
        .import_timeline(tl.export_fd().expect("fd").as_fd());
    h.roundtrip(c);
    assert!(h.client(c).protocol_error().is_none());
}

#[test]
fn a_client_queueing_too_many_fenced_commits_is_disconnected_and_cleaned_up() {
    require_vm();
    let mut h = Harness::vm();
    let vgem = Allocator::vgem();
    let c = h.add_client();
    let bystander = h.add_client();
    let (bs, _, _) = mapped_surface(&mut h, bystander, &vgem);
    let s = h.create_toplevel(c);
    let limit = h
        .state()
        .sync_bridge
        .config()
        .limits
        .max_pending_waits_per_surface;
    let mut fences = Vec::new();
    let mut bufs = Vec::new();
    for _ in 0..=limit {
        let buf = vgem.allocate(16, 16).expect("buffer");
        fences.push(vgem.attach_write_fence(&buf).expect("fence"));
        let b = h.client(c).create_dmabuf_buffer(&buf);
        h.client(c).attach(s, Some(b));
        h.client(c).commit(s, Commit::default());
        bufs.push(buf);
    }
    // wl_display.error(no_memory) on the display object: clients see ENOMEM (as with
    // libwayland's wl_client_post_no_memory), not a bare EPIPE.
    let err = h
        .until_dead(c)
        .expect("a client over the pending-wait bound is disconnected");
    match &err {
        wayland_client::backend::WaylandError::Io(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::ENOMEM), "{err:?}")
        }
        other => panic!("expected wl_display.error(no_memory), got {other:?}"),
    }
    for _ in 0..5 {
        h.pump();
    }
    let st = sync_stats(&mut h);
    assert_eq!(st.clients_killed_for_limits, 1, "{st:?}");
    assert_eq!(st.pending_waits, 0, "{st:?}");
    assert!(
        st.fds_held <= 1,
        "only the bystander's buffer may hold anything: {st:?}"
    );
    assert!(st.fds_held_peak >= limit as u64, "{st:?}");
    // The bystander never noticed.
    let buf = vgem.allocate(W, H).expect("buffer");
    let b = h.client(bystander).create_dmabuf_buffer(&buf);
    h.client(bystander).attach(bs, Some(b));
    let k = h.client(bystander).commit(bs, Commit::feedback());
    h.roundtrip(bystander);
    let tick = h.frame();
    assert_eq!(h.client(bystander).rec.presented(k), Some(tick.seq));
    for f in fences {
        vgem.signal(f).expect("signal");
    }
}

// --------------------------------------------------------------------- explicit-sync-v1

#[test]
fn explicit_sync_acquire_fence_is_honoured_and_release_events_arrive() {
    require_vm();
    let mut h = Harness::vm();
    let c = h.add_client();
    let vgem = Allocator::vgem();
    let udma = Allocator::udmabuf();
    let s = h.create_toplevel(c);
    h.client(c).explicit_surface(s);
    h.roundtrip(c);

    // B1 (udmabuf: no implicit fence at all) with an unrelated pending vgem fence as its
    // acquire fence: only the explicit fence can hold it back.
    let buf1 = udma.allocate(W, H).expect("udmabuf");
    let b1 = h.client(c).create_dmabuf_buffer(&buf1);
    let (_scratch, fence, sf) = vgem_fence(&vgem);
    h.client(c).attach(s, Some(b1));
    h.client(c).set_acquire_fence(s, sf.as_fd());
    let k1 = h.client(c).commit(s, Commit::with_explicit_release());
    drop(sf);
    h.roundtrip(c);
    for _ in 0..3 {
        h.frame();
        assert_eq!(h.client(c).rec.outcome(k1), None, "acquire fence pending");
    }
    vgem.signal(fence).expect("signal");
    until_no_waits(&mut h);
    let tick = h.frame();
    assert_eq!(h.client(c).rec.presented(k1), Some(tick.seq));
    for _ in 0..3 {
        h.frame();
        assert!(
            h.client(c).rec.explicit_release(k1).is_none(),
            "B1 is shown: no release yet"
        );
    }

    // B2 (vgem, no acquire fence: implicit sync through the explicit surface) replaces it.
    let buf2 = vgem.allocate(W, H).expect("vgem");
    let b2 = h.client(c).create_dmabuf_buffer(&buf2);
    h.client(c).attach(s, Some(b2));
    let k2 = h.client(c).commit(s, Commit::with_explicit_release());
    h.roundtrip(c);
    let tick = h.frame();
    assert_eq!(h.client(c).rec.presented(k2), Some(tick.seq));
    assert!(
        h.pump_until(100, |h| h.client(c).rec.explicit_release(k1).is_some()),
        "B1's release event arrives once B2 replaced it"
    );
    if let Some(fence) = &h
        .client(c)
        .rec
        .explicit_release(k1)
        .and_then(|r| r.fence.as_ref())
    {
        let sf = SyncFile::from_fd(fence.try_clone().expect("dup")).expect("a sync_file");
        sf.wait(Duration::from_secs(5))
            .expect("the release fence signals");
    }
    assert!(
        h.client(c).rec.explicit_release(k2).is_none(),
        "B2 still shown"
    );

    // Destroying the surface releases the shown buffer.
    let surface = h.client(c).surfaces[s].clone();
    surface.toplevel.destroy();
    surface.xdg.destroy();
    surface.wl.destroy();
    h.roundtrip(c);
    assert!(
        h.pump_until(100, |h| h.client(c).rec.explicit_release(k2).is_some()),
        "the shown buffer's release arrives when its surface is destroyed"
    );
    let st = sync_stats(&mut h);
    assert!(st.commits_waited_explicit >= 1, "{st:?}");
    assert!(
        st.explicit_fenced_releases + st.explicit_immediate_releases >= 2,
        "{st:?}"
    );
    let frames = frames_presented(&mut h);
    record_summary("explicit_sync_v1", bridge_figures(&st, frames));
}

#[test]
fn explicit_sync_acquire_fence_on_shm_buffer_is_a_protocol_error() {
    require_vm();
    let mut h = Harness::vm();
    let c = h.add_client();
    let vgem = Allocator::vgem();
    let s = h.create_toplevel(c);
    h.client(c).explicit_surface(s);
    let shm = h.client(c).create_shm_buffer(W as i32, H as i32);
    h.roundtrip(c);
    let (_scratch, fence, sf) = vgem_fence(&vgem);
    h.client(c).attach(s, Some(shm));
    h.client(c).set_acquire_fence(s, sf.as_fd());
    h.client(c).commit(s, Commit::default());
    let err = h.until_protocol_error(c).expect("a protocol error");
    assert_eq!(err.object_interface, "zwp_linux_surface_synchronization_v1");
    assert_eq!(err.code, ExplicitError::UnsupportedBuffer as u32);
    vgem.signal(fence).expect("signal");
    h.pump();
    let st = sync_stats(&mut h);
    assert_eq!((st.pending_waits, st.fds_held), (0, 0), "{st:?}");
}

// ------------------------------------------------------------- fenced release paths
//
// pixman reads on the CPU, so the headless compositor itself never has a render fence.
// These tests report readers to the bridge the way a GPU renderer or the KMS backend
// would (`frame_rendered` with a fence, `scanout_committed` with an out-fence), with a
// pending vgem fence standing in for the GPU/display, and check what the client gets.

/// The bridge's id of the buffer the (only) window shows.
fn shown_buffer_id(h: &mut Harness) -> syncbridge_protocols::BufferId {
    let state = h.state();
    let window = state.space.elements().next().expect("one window").clone();
    let surface = window.toplevel().expect("a toplevel").wl_surface().clone();
    state
        .sync_bridge
        .buffer_id(&surface)
        .expect("the window shows a tracked buffer")
}

fn is_pending(f: &SyncFile) -> bool {
    !f.is_signaled().expect("poll the fence")
}

#[test]
fn fenced_release_implicit_client_gets_the_render_fence_imported_into_its_dmabuf() {
    require_vm();
    let mut h = Harness::vm();
    let c = h.add_client();
    let vgem = Allocator::vgem();
    let (s, b1, buf1) = mapped_surface(&mut h, c, &vgem);
    let id1 = shown_buffer_id(&mut h);
    let (_gpu, render, render_sf) = vgem_fence(&vgem);
    h.state()
        .sync_bridge
        .frame_rendered(Some(render_sf), &[id1]);
    let imported_before = sync_stats(&mut h).fences_imported;

    let buf2 = vgem.allocate(W, H).expect("buffer");
    let b2 = h.client(c).create_dmabuf_buffer(&buf2);
    h.client(c).attach(s, Some(b2));
    h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    h.frame();
    h.roundtrip(c);
    assert_eq!(
        h.client(c).rec.releases(b1),
        1,
        "wl_buffer.release goes out at once, the fence carries the dependency"
    );
    assert_eq!(sync_stats(&mut h).fences_imported, imported_before + 1);
    // A writer of B1 must now wait for the "GPU" read: all of B1's fences are pending.
    let all = syncbridge_bridge::dmabuf::export_sync_file(
        buf1.fd.as_fd(),
        syncbridge_bridge::dmabuf::Access::Write,
    )
    .expect("export B1's fences");
    assert!(
        is_pending(&all),
        "the render fence is in B1's reservation object"
    );
    let readers = buf1
        .export_write_fences()
        .expect("export B1's write fences");
    assert!(
        !is_pending(&readers),
        "imported as a read fence: other readers need not wait"
    );
    vgem.signal(render).expect("signal the render fence");
    all.wait(Duration::from_secs(5))
        .expect("B1 becomes writable");
    let st = sync_stats(&mut h);
    assert_eq!((st.fences_held, st.fds_held), (0, 0), "{st:?}");
}

#[test]
fn fenced_release_syncobj_point_carries_the_render_fence_and_the_scanout_out_fence() {
    require_vm();
    let mut h = Harness::vm();
    let c = h.add_client();
    let dev = virtio_syncobj_device();
    let vgem = Allocator::vgem();
    let acq = dev.create_timeline().expect("timeline");
    let rel = dev.create_timeline().expect("timeline");
    let acq_obj = h
        .client(c)
        .import_timeline(acq.export_fd().expect("fd").as_fd());
    let rel_obj = h
        .client(c)
        .import_timeline(rel.export_fd().expect("fd").as_fd());
    let s = h.create_toplevel(c);
    h.client(c).syncobj_surface(s);
    h.roundtrip(c);
    let commit_point = |h: &mut Harness, n: u64| {
        let buf = vgem.allocate(W, H).expect("buffer");
        let b = h.client(c).create_dmabuf_buffer(&buf);
        h.client(c).attach(s, Some(b));
        h.client(c).set_acquire_point(s, &acq_obj, n);
        h.client(c).set_release_point(s, &rel_obj, n);
        acq.signal(n).expect("signal acquire");
        let k = h.client(c).commit(s, Commit::feedback());
        h.roundtrip(c);
        let tick = h.frame();
        assert_eq!(h.client(c).rec.presented(k), Some(tick.seq));
        (buf, shown_buffer_id(h))
    };

    // Render fence: B1 sampled by a "GPU" frame whose fence is pending.
    let (_b1, id1) = commit_point(&mut h, 1);
    let (_gpu, render, render_sf) = vgem_fence(&vgem);
    h.state()
        .sync_bridge
        .frame_rendered(Some(render_sf), &[id1]);
    let (_b2, id2) = commit_point(&mut h, 2);
    rel.wait(
        1,
        syncbridge_bridge::WaitMode::Available,
        Duration::from_secs(5),
    )
    .expect("release point 1 materialized once B2 replaced B1");
    assert_eq!(
        rel.query().expect("query"),
        0,
        "point 1 carries the pending render fence"
    );
    vgem.signal(render).expect("signal");
    rel.wait(
        1,
        syncbridge_bridge::WaitMode::Signaled,
        Duration::from_secs(5),
    )
    .expect("point 1 signals with the render fence");

    // Scanout: B2 goes on a plane; B3 replaces it on the client side, but the display
    // still reads B2 until the commit that stops showing it, whose out-fence is pending.
    h.state().sync_bridge.scanout_committed(None, &[id2], &[]);
    let (_b3, id3) = commit_point(&mut h, 3);
    for _ in 0..3 {
        h.frame();
        assert!(
            rel.wait(2, syncbridge_bridge::WaitMode::Available, Duration::ZERO)
                .is_err(),
            "B2 is still scanned out: release point 2 must not even exist"
        );
    }
    let (_kms, flip, out_fence) = vgem_fence(&vgem);
    h.state()
        .sync_bridge
        .scanout_committed(Some(out_fence), &[id3], &[id2]);
    rel.wait(
        2,
        syncbridge_bridge::WaitMode::Available,
        Duration::from_secs(5),
    )
    .expect("point 2 materialized with the out-fence");
    assert_eq!(
        rel.query().expect("query"),
        1,
        "point 2 waits for the out-fence"
    );
    vgem.signal(flip).expect("signal");
    rel.wait(
        2,
        syncbridge_bridge::WaitMode::Signaled,
        Duration::from_secs(5),
    )
    .expect("point 2 signals with the out-fence");
    let st = sync_stats(&mut h);
    assert!(st.release_points_fenced >= 2, "{st:?}");
    h.state().sync_bridge.scanout_committed(None, &[], &[id3]);
    h.disconnect(c);
    h.frame();
    let st = sync_stats(&mut h);
    assert_eq!(
        (st.tracked_buffers, st.fences_held, st.fds_held),
        (0, 0, 0),
        "{st:?}"
    );
}

#[test]
fn fenced_release_explicit_sync_client_gets_fenced_release_with_the_render_fence() {
    require_vm();
    let mut h = Harness::vm();
    let c = h.add_client();
    let vgem = Allocator::vgem();
    let s = h.create_toplevel(c);
    h.client(c).explicit_surface(s);
    h.roundtrip(c);
    let commit = |h: &mut Harness| {
        let buf = vgem.allocate(W, H).expect("buffer");
        let b = h.client(c).create_dmabuf_buffer(&buf);
        h.client(c).attach(s, Some(b));
        let k = h.client(c).commit(s, Commit::with_explicit_release());
        h.roundtrip(c);
        let tick = h.frame();
        assert_eq!(h.client(c).rec.presented(k), Some(tick.seq));
        (buf, k, shown_buffer_id(h))
    };
    let (_b1, k1, id1) = commit(&mut h);
    let (_gpu, render, render_sf) = vgem_fence(&vgem);
    h.state()
        .sync_bridge
        .frame_rendered(Some(render_sf), &[id1]);
    let (_b2, _k2, _id2) = commit(&mut h);
    assert!(
        h.pump_until(100, |h| h.client(c).rec.explicit_release(k1).is_some()),
        "B1's release event arrives at once"
    );
    let fence = h
        .client(c)
        .rec
        .explicit_release(k1)
        .and_then(|r| r.fence.as_ref())
        .expect("fenced_release (not immediate_release): there is a render fence")
        .try_clone()
        .expect("dup");
    let fence = SyncFile::from_fd(fence).expect("the release fence is a sync_file");
    assert!(is_pending(&fence), "it is the pending render fence");
    vgem.signal(render).expect("signal");
    fence
        .wait(Duration::from_secs(5))
        .expect("the release fence signals with the render fence");
    assert!(sync_stats(&mut h).explicit_fenced_releases >= 1);
}

// ---------------------------------------------------------------- the real binary

fn start_syncbridge(name: &str, render_device: &Path) -> Running {
    compositor_bin::start_syncbridge(name, &Options::headless(Some(render_device)))
}

/// One client that shows a buffer, then queues three commits that wait (implicit vgem
/// fence, syncobj acquire point, explicit-sync-v1 acquire fence), then disconnects.
fn client_dies_mid_wait(
    rb: &Running,
    vgem: &Allocator,
    dev: &SyncobjDevice,
    pending: &mut Vec<VgemFence>,
) -> Timeline {
    let mut c = TestClient::connect(&rb.socket).expect("connect");
    // Implicit.
    let s1 = c.create_toplevel();
    c.blocking_roundtrip();
    let buf = vgem.allocate(W, H).expect("buffer");
    let fence = vgem.attach_write_fence(&buf).expect("fence");
    pending.push(fence);
    let b = c.create_dmabuf_buffer(&buf);
    c.attach(s1, Some(b));
    c.commit(s1, Commit::feedback());
    // syncobj.
    let s2 = c.create_toplevel();
    c.syncobj_surface(s2);
    let tl = dev.create_timeline().expect("timeline");
    let tl_obj = c.import_timeline(tl.export_fd().expect("fd").as_fd());
    let rel = dev.create_timeline().expect("timeline");
    let rel_obj = c.import_timeline(rel.export_fd().expect("fd").as_fd());
    c.blocking_roundtrip();
    let buf2 = vgem.allocate(W, H).expect("buffer");
    let b2 = c.create_dmabuf_buffer(&buf2);
    c.attach(s2, Some(b2));
    c.set_acquire_point(s2, &tl_obj, 1);
    c.set_release_point(s2, &rel_obj, 1);
    c.commit(s2, Commit::feedback());
    // explicit-sync-v1.
    let s3 = c.create_toplevel();
    c.explicit_surface(s3);
    c.blocking_roundtrip();
    let buf3 = vgem.allocate(W, H).expect("buffer");
    let b3 = c.create_dmabuf_buffer(&buf3);
    let (_sb, f3, sf3) = vgem_fence(vgem);
    pending.push(f3);
    c.attach(s3, Some(b3));
    c.set_acquire_fence(s3, sf3.as_fd());
    c.commit(s3, Commit::with_explicit_release());
    c.blocking_roundtrip();
    for (i, _) in c.surfaces.iter().enumerate() {
        assert!(c.rec.outcome(i as u64 + 1).is_none());
    }
    assert!(c.protocol_error().is_none());
    c.disconnect();
    drop(c);
    rel
}

#[test]
fn a_client_that_disconnects_mid_wait_leaves_nothing_behind_in_the_compositor() {
    require_vm();
    let rb = start_syncbridge("disconnect", &virtio_render_node());
    let vgem = Allocator::vgem();
    let dev = virtio_syncobj_device();

    // Warm-up: a client that shows a buffer and leaves (lazily created state settles).
    {
        let mut c = TestClient::connect(&rb.socket).expect("connect");
        let s = c.create_toplevel();
        c.blocking_roundtrip();
        let buf = vgem.allocate(W, H).expect("buffer");
        let b = c.create_dmabuf_buffer(&buf);
        c.attach(s, Some(b));
        let k = c.commit(s, Commit::feedback());
        assert!(
            c.blocking_dispatch_until(Duration::from_secs(10), |r| r.presented(k).is_some()),
            "the warm-up buffer is presented"
        );
        c.disconnect();
    }
    let mut pending = Vec::new();
    let _ = client_dies_mid_wait(&rb, &vgem, &dev, &mut pending);
    for f in pending.drain(..) {
        vgem.signal(f).expect("signal");
    }
    // The baseline: the fd count once it stops changing.
    let mut baseline = rb.fd_count();
    let steady = eventually(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(200));
        let now = rb.fd_count();
        std::mem::replace(&mut baseline, now) == now
    });
    assert!(steady, "the compositor's fd count never settled");
    let rss_before = rb.rss_kib();
    let anon_before = rb.anon_rss_kib();
    let mut anon_per_round = Vec::new();

    let rounds = 10;
    for round in 0..rounds {
        let rel = client_dies_mid_wait(&rb, &vgem, &dev, &mut pending);
        rel.wait(
            1,
            syncbridge_bridge::WaitMode::Signaled,
            Duration::from_secs(10),
        )
        .expect("the release point of a commit that never applied is signalled anyway");
        let back = eventually(Duration::from_secs(10), || rb.fd_count() <= baseline);
        assert!(
            back,
            "round {round}: the compositor holds {} fds, {baseline} before the client came; log:\n{}",
            rb.fd_count(),
            rb.log()
        );
        // The fences it waited on are still pending; signalling them now must be harmless.
        for f in pending.drain(..) {
            vgem.signal(f).expect("signal");
        }
        anon_per_round.push(rb.anon_rss_kib());
    }
    let rss_after = rb.rss_kib();
    let anon_after = rb.anon_rss_kib();
    let fds_after = rb.fd_count();
    let (stats, log) = rb.stop();
    let sync = &stats["sync"];
    assert_eq!(stats["clients"]["connected"], rounds + 2, "{stats:#}");
    assert_eq!(stats["clients"]["disconnected"], rounds + 2, "{stats:#}");
    assert_eq!(stats["protocol_errors_sent"], 0, "{stats:#}\n{log}");
    assert_eq!(sync["pending_waits"], 0, "no wait left: {sync:#}");
    assert_eq!(sync["tracked_buffers"], 0, "no buffer left: {sync:#}");
    assert_eq!(sync["fences_held"]["now"], 0, "no fence left: {sync:#}");
    assert_eq!(sync["fds_held"]["now"], 0, "no fd left: {sync:#}");
    assert_eq!(sync["kernel_ops"]["live_sync_files"], 0, "{sync:#}");
    assert_eq!(sync["kernel_ops"]["live_timelines"], 0, "{sync:#}");
    let waited = &sync["commits_waited"];
    assert!(waited["implicit"].as_u64() >= Some(rounds), "{sync:#}");
    assert!(waited["syncobj"].as_u64() >= Some(rounds), "{sync:#}");
    assert!(
        waited["explicit_sync_v1"].as_u64() >= Some(rounds),
        "{sync:#}"
    );
    assert!(
        sync["fds_held"]["peak"].as_u64() >= Some(3),
        "the waits did hold fds: {sync:#}"
    );
    // Memory: 10 clients x 3 surfaces must not grow the compositor's heap round after
    // round. Anonymous memory only: VmRSS also counts code pages that fault in the first
    // time a path runs. One step is allowed: measured here, +4584 KiB once at round 5 and
    // flat before and after (CI saw the same step in VmRSS), and in another run no step at
    // all; what allocates it is not known (one guess: glibc's dynamic mmap threshold keeps
    // a freed large block in the heap). A leak shows in every round instead; 1 MiB over the
    // other 9 rounds catches one of ~110 KiB a client.
    let steps: Vec<u64> = std::iter::once(anon_before)
        .chain(anon_per_round.iter().copied())
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let largest = steps.iter().copied().max().unwrap_or(0);
    let rest = steps.iter().sum::<u64>() - largest;
    let detail = format!(
        "anonymous RSS {anon_before} -> {anon_after} KiB over {rounds} clients, per round \
         {anon_per_round:?}; VmRSS {rss_before} -> {rss_after}"
    );
    assert!(
        rest < 1024,
        "the heap grew in more than one round: {detail}"
    );
    assert!(
        largest < 8192,
        "one round grew the heap by {largest} KiB: {detail}"
    );
    record_summary(
        "disconnect_mid_wait",
        serde_json::json!({
            "fd_baseline": baseline, "fd_after": fds_after,
            "rss_before_kib": rss_before, "rss_after_kib": rss_after,
            "anon_before_kib": anon_before, "anon_after_kib": anon_after,
            "anon_per_round_kib": anon_per_round,
            "fds_held_peak": sync["fds_held"]["peak"],
        }),
    );
}

#[test]
fn binary_latch_latency_of_fenced_commits() {
    require_vm();
    let rb = start_syncbridge("latch", &virtio_render_node());
    let vgem = Allocator::vgem();
    let mut c = TestClient::connect(&rb.socket).expect("connect");
    let s = c.create_toplevel();
    c.blocking_roundtrip();
    let mut pool = Vec::new();
    for _ in 0..3 {
        let buf = vgem.allocate(W, H).expect("buffer");
        let b = c.create_dmabuf_buffer(&buf);
        pool.push((b, buf));
    }
    let rounds = 60u64;
    let mut frames_to_present = Vec::new();
    for i in 0..rounds as usize {
        let (b, buf) = &pool[i % pool.len()];
        // Reuse only released buffers.
        let uses = i / pool.len();
        assert!(
            c.blocking_dispatch_until(Duration::from_secs(10), |r| r.releases(*b) >= uses),
            "buffer {b} released after use {uses}"
        );
        let fence = vgem.attach_write_fence(buf).expect("fence");
        c.attach(s, Some(*b));
        let k = c.commit(s, Commit::feedback());
        c.blocking_roundtrip();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            c.rec.outcome(k),
            None,
            "round {i}: not presented before the signal"
        );
        let signalled = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let signalled = Duration::new(signalled.tv_sec as u64, signalled.tv_nsec as u32);
        vgem.signal(fence).expect("signal");
        assert!(
            c.blocking_dispatch_until(Duration::from_secs(10), |r| r.outcome(k).is_some()),
            "round {i}: the commit is presented once its fence signalled"
        );
        match c.rec.outcome(k) {
            Some(Presentation::Presented { time, .. }) => {
                // Refresh intervals (60 Hz) from the signal to the presentation.
                let dt = time.saturating_sub(signalled);
                frames_to_present.push(dt.as_micros().div_ceil(16_667) as u64)
            }
            other => panic!("round {i}: {other:?}"),
        }
    }
    c.disconnect();
    drop(c);
    let (stats, log) = rb.stop();
    let sync = &stats["sync"];
    assert_eq!(stats["protocol_errors_sent"], 0, "{log}");
    assert!(
        sync["commits_waited"]["implicit"].as_u64() >= Some(rounds),
        "every commit waited: {sync:#}"
    );
    assert!(
        sync["latch_latency"]["count"].as_u64() >= Some(rounds),
        "{sync:#}"
    );
    frames_to_present.sort_unstable();
    let p50 = syncbridge_bridge::percentile::nearest_rank(&frames_to_present, 50).unwrap_or(0);
    let max = frames_to_present.last().copied().unwrap_or(0);
    record_summary(
        "binary_latch",
        serde_json::json!({
            "rounds": rounds,
            "latch_latency": sync["latch_latency"],
            "commit_wait": sync["commit_wait"],
            "frames_presented": stats["frames_presented_total"],
            "refresh_cycles": stats["outputs"][0]["refresh_cycles"],
            "missed_cycles": stats["outputs"][0]["missed_cycles"],
            "frames_from_signal_to_present_p50": p50,
            "frames_from_signal_to_present_max": max,
        }),
    );
}

// ---------------------------------------------------------- property test (seeded)

/// splitmix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A fence the model controls: a vgem fence on the buffer (implicit sync) or an acquire
/// point on a surface's acquire timeline (linux-drm-syncobj-v1).
enum MFence {
    Vgem(VgemFence),
    Point(std::rc::Rc<Timeline>, u64),
}

/// One commit in the model.
#[derive(Debug, Clone)]
struct MCommit {
    id: CommitId,
    /// Buffer index in the surface's pool, None = detach.
    buffer: Option<usize>,
    /// Index into `Model::fences`, if the commit waits on one.
    fence: Option<usize>,
}

/// linux-drm-syncobj-v1 state of a surface: one acquire timeline, and one release
/// timeline per buffer (as the spec recommends); use n of a buffer releases point n.
struct MSyncobj {
    acquire: std::rc::Rc<Timeline>,
    acquire_obj: wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
    next_point: u64,
    release: Vec<(Timeline, wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1)>,
}

struct MSurface {
    sid: SurfaceId,
    pool: Vec<(BufferId, DmaBuffer)>,
    syncobj: Option<MSyncobj>,
    /// Commits that attach/detach, in order.
    commits: Vec<MCommit>,
    /// Times each pool buffer was committed.
    committed: Vec<usize>,
    /// Releases already checked per pool buffer.
    checked_releases: Vec<usize>,
}

struct MClient {
    id: ClientId,
    alive: bool,
    surfaces: Vec<MSurface>,
    checked_feedback: usize,
}

#[derive(Default)]
struct Model {
    clients: Vec<MClient>,
    /// (fence, signalled).
    fences: Vec<(MFence, bool)>,
}

impl Model {
    fn signal(&mut self, i: usize, vgem: &Allocator) {
        match &self.fences[i].0 {
            MFence::Vgem(f) => vgem.signal(*f).expect("signal a vgem fence"),
            MFence::Point(tl, p) => {
                let (tl, p) = (tl.clone(), *p);
                tl.signal(p).expect("signal an acquire point");
                self.points_signalled(&tl, p);
            }
        }
        self.fences[i].1 = true;
    }

    /// Signalling point `p` signals every earlier point of its timeline.
    fn points_signalled(&mut self, tl: &std::rc::Rc<Timeline>, p: u64) {
        for (f, done) in &mut self.fences {
            if let MFence::Point(t, q) = f {
                if std::rc::Rc::ptr_eq(t, tl) && *q <= p {
                    *done = true;
                }
            }
        }
    }
}

impl MSurface {
    /// Length of the commit prefix whose fences all signalled: what the compositor may
    /// have applied at most.
    fn applicable(&self, fences: &[(MFence, bool)]) -> usize {
        self.commits
            .iter()
            .take_while(|c| c.fence.is_none_or(|f| fences[f].1))
            .count()
    }

    /// Releases of pool buffer `i` so far: `wl_buffer.release` events for implicit
    /// surfaces, the signalled points of its release timeline for syncobj surfaces.
    fn releases(&self, client: &TestClient, i: usize) -> usize {
        match &self.syncobj {
            None => client.rec.releases(self.pool[i].0),
            Some(so) => so.release[i].0.query().expect("query a release timeline") as usize,
        }
    }
}

/// Checks the invariants on everything client `ci` received so far.
fn check_invariants(h: &mut Harness, model: &mut Model, ci: usize, step: usize) {
    let fences = &model.fences;
    let mc = &mut model.clients[ci];
    let client = &h.clients[mc.id];
    // 1. No buffer is presented before its fence (and those of earlier commits) signalled.
    if mc.alive {
        for fb in &client.rec.feedback[mc.checked_feedback..] {
            if let Presentation::Presented { .. } = fb.outcome {
                for ms in &mc.surfaces {
                    if let Some(pos) = ms.commits.iter().position(|c| c.id == fb.commit) {
                        assert!(
                            pos < ms.applicable(fences),
                            "step {step}: commit {} presented before its fence signalled",
                            fb.commit
                        );
                    }
                }
            }
        }
        mc.checked_feedback = client.rec.feedback.len();
    }
    // 2. No release while the buffer is (or may still become) the surface's content.
    // Release points are checked for dead clients too: the timelines are ours.
    for ms in &mut mc.surfaces {
        if !mc.alive && ms.syncobj.is_none() {
            continue;
        }
        let applicable = ms.applicable(fences);
        for i in 0..ms.pool.len() {
            let releases = ms.releases(client, i);
            for n in ms.checked_releases[i]..releases {
                // The (n+1)-th commit of buffer i must be applicable and replaced by a later
                // applicable commit (a dead client's commits are all gone).
                let nth = ms
                    .commits
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.buffer == Some(i))
                    .nth(n)
                    .map(|(pos, _)| pos);
                let Some(pos) = nth else {
                    panic!("step {step}: buffer {i} released {releases} times, committed fewer");
                };
                assert!(
                    !mc.alive || pos + 1 < applicable,
                    "step {step}: buffer {i} (syncobj: {}) released while still shown or \
                     queued (commit #{pos}, applicable prefix {applicable})",
                    ms.syncobj.is_some()
                );
            }
            ms.checked_releases[i] = releases;
        }
    }
}

fn add_model_client(h: &mut Harness, model: &mut Model, vgem: &Allocator, dev: &SyncobjDevice) {
    let id = h.add_client();
    let mut surfaces = Vec::new();
    for kind in 0..2 {
        let sid = h.create_toplevel(id);
        let mut pool = Vec::new();
        for _ in 0..3 {
            let buf = vgem.allocate(32, 32).expect("vgem buffer");
            let bid = h.client(id).create_dmabuf_buffer(&buf);
            pool.push((bid, buf));
        }
        let syncobj = (kind == 1).then(|| {
            h.client(id).syncobj_surface(sid);
            let acquire = dev.create_timeline().expect("timeline");
            let acquire_obj = h
                .client(id)
                .import_timeline(acquire.export_fd().expect("fd").as_fd());
            let release = (0..pool.len())
                .map(|_| {
                    let t = dev.create_timeline().expect("timeline");
                    let o = h
                        .client(id)
                        .import_timeline(t.export_fd().expect("fd").as_fd());
                    (t, o)
                })
                .collect();
            MSyncobj {
                acquire: std::rc::Rc::new(acquire),
                acquire_obj,
                next_point: 0,
                release,
            }
        });
        surfaces.push(MSurface {
            sid,
            pool,
            syncobj,
            commits: Vec::new(),
            committed: vec![0; 3],
            checked_releases: vec![0; 3],
        });
    }
    h.roundtrip(id);
    model.clients.push(MClient {
        id,
        alive: true,
        surfaces,
        checked_feedback: 0,
    });
}

/// Commits a free buffer of surface `si` of client `ci`, fenced or not.
fn model_commit(
    h: &mut Harness,
    model: &mut Model,
    vgem: &Allocator,
    ci: usize,
    si: usize,
    bi: usize,
    fenced: bool,
) {
    let cid = model.clients[ci].id;
    let ms = &mut model.clients[ci].surfaces[si];
    let (sid, bid) = (ms.sid, ms.pool[bi].0);
    let mut fence = None;
    let mut signalled_now = None;
    h.client(cid).attach(sid, Some(bid));
    match &mut ms.syncobj {
        None => {
            if fenced {
                let f = vgem
                    .attach_write_fence(&ms.pool[bi].1)
                    .expect("attach a fence to a free buffer");
                fence = Some(MFence::Vgem(f));
            }
        }
        Some(so) => {
            so.next_point += 1;
            let p = so.next_point;
            if fenced {
                fence = Some(MFence::Point(so.acquire.clone(), p));
            } else {
                so.acquire.signal(p).expect("signal the acquire point");
                signalled_now = Some((so.acquire.clone(), p));
            }
            let use_n = ms.committed[bi] as u64 + 1;
            h.client(cid).set_acquire_point(sid, &so.acquire_obj, p);
            h.client(cid)
                .set_release_point(sid, &so.release[bi].1, use_n);
        }
    }
    let id = h.client(cid).commit(sid, Commit::feedback());
    if let Some((tl, p)) = signalled_now {
        model.points_signalled(&tl, p);
    }
    let fence = fence.map(|f| {
        model.fences.push((f, false));
        model.fences.len() - 1
    });
    let ms = &mut model.clients[ci].surfaces[si];
    ms.committed[bi] += 1;
    ms.commits.push(MCommit {
        id,
        buffer: Some(bi),
        fence,
    });
}

fn run_property_case(seed: u64, steps: usize) -> (SyncStats, u64) {
    let mut rng = Rng(seed);
    let mut h = Harness::vm();
    let vgem = Allocator::vgem();
    let dev = virtio_syncobj_device();
    let mut model = Model::default();
    add_model_client(&mut h, &mut model, &vgem, &dev);
    add_model_client(&mut h, &mut model, &vgem, &dev);

    for step in 0..steps {
        let live: Vec<usize> = (0..model.clients.len())
            .filter(|&i| model.clients[i].alive)
            .collect();
        let roll = rng.below(100);
        if live.is_empty() || (roll >= 97 && live.len() < 3) {
            add_model_client(&mut h, &mut model, &vgem, &dev);
        } else if roll < 45 {
            // Commit a free buffer (its previous use released), fenced half of the time.
            let ci = live[rng.below(live.len())];
            let si = rng.below(2);
            let fenced = rng.chance(50);
            let ms = &model.clients[ci].surfaces[si];
            let client = &h.clients[model.clients[ci].id];
            let free: Vec<usize> = (0..ms.pool.len())
                .filter(|&i| ms.releases(client, i) == ms.committed[i])
                .collect();
            if !free.is_empty() {
                let bi = free[rng.below(free.len())];
                model_commit(&mut h, &mut model, &vgem, ci, si, bi, fenced);
            }
        } else if roll < 50 {
            // Detach.
            let ci = live[rng.below(live.len())];
            let si = rng.below(2);
            let (cid, sid) = (model.clients[ci].id, model.clients[ci].surfaces[si].sid);
            h.client(cid).attach(sid, None);
            let id = h.client(cid).commit(sid, Commit::feedback());
            model.clients[ci].surfaces[si].commits.push(MCommit {
                id,
                buffer: None,
                fence: None,
            });
        } else if roll < 72 {
            // Signal a pending fence.
            let pending: Vec<usize> = (0..model.fences.len())
                .filter(|&i| !model.fences[i].1)
                .collect();
            if !pending.is_empty() {
                let i = pending[rng.below(pending.len())];
                model.signal(i, &vgem);
            }
        } else if roll < 95 {
            h.frame();
        } else if live.len() > 1 {
            // A client disconnects with whatever it has queued.
            let ci = live[rng.below(live.len())];
            h.disconnect(model.clients[ci].id);
            model.clients[ci].alive = false;
        }
        h.pump();
        h.pump();
        for ci in 0..model.clients.len() {
            check_invariants(&mut h, &mut model, ci, step);
        }
    }

    // Drain: every fence signals, every surface detaches.
    for i in 0..model.fences.len() {
        if !model.fences[i].1 {
            model.signal(i, &vgem);
        }
    }
    until_no_waits(&mut h);
    for ci in 0..model.clients.len() {
        if !model.clients[ci].alive {
            continue;
        }
        for si in 0..2 {
            let (cid, sid) = (model.clients[ci].id, model.clients[ci].surfaces[si].sid);
            h.client(cid).attach(sid, None);
            let id = h.client(cid).commit(sid, Commit::default());
            model.clients[ci].surfaces[si].commits.push(MCommit {
                id,
                buffer: None,
                fence: None,
            });
        }
    }
    h.frame();
    for ci in 0..model.clients.len() {
        if model.clients[ci].alive {
            let id = model.clients[ci].id;
            h.roundtrip(id);
        }
        check_invariants(&mut h, &mut model, ci, steps);
    }
    // 3. Every use of a live client's buffer was released exactly once.
    for mc in &model.clients {
        for ms in &mc.surfaces {
            if !mc.alive && ms.syncobj.is_none() {
                continue;
            }
            for i in 0..ms.pool.len() {
                assert_eq!(
                    ms.releases(&h.clients[mc.id], i),
                    ms.committed[i],
                    "seed {seed}: buffer {i} (syncobj: {}) committed {} times, every use \
                     must be released",
                    ms.syncobj.is_some(),
                    ms.committed[i]
                );
            }
        }
    }
    // Everyone leaves: the compositor holds nothing.
    for mc in &model.clients {
        if mc.alive {
            h.clients[mc.id].disconnect();
        }
    }
    for _ in 0..5 {
        h.pump();
    }
    h.frame();
    let s = sync_stats(&mut h);
    assert_eq!(s.pending_waits, 0, "seed {seed}: {s:?}");
    assert_eq!(s.tracked_buffers, 0, "seed {seed}: {s:?}");
    assert_eq!(s.fences_held, 0, "seed {seed}: {s:?}");
    assert_eq!(s.fds_held, 0, "seed {seed}: {s:?}");
    let frames = frames_presented(&mut h);
    (s, frames)
}

#[test]
fn property_random_operation_sequences_keep_the_sync_invariants() {
    require_vm();
    let seeds: Vec<u64> = match std::env::var("SYNCBRIDGE_PROPTEST_SEED") {
        Ok(s) => vec![s.parse().expect("seed")],
        Err(_) => (1..=8).collect(),
    };
    let mut all = Vec::new();
    let start = Instant::now();
    for seed in seeds {
        let (s, frames) = run_property_case(seed, 200);
        all.push(serde_json::json!({
            "seed": seed,
            "latch_samples": s.latch_latency.count,
            "waited_implicit": s.commits_waited_implicit,
            "waited_syncobj": s.commits_waited_syncobj,
            "released": s.buffers_released,
            "frames": frames,
        }));
    }
    record_summary(
        "property",
        serde_json::json!({ "cases": all, "secs": start.elapsed().as_secs_f64() }),
    );
}

// ------------------------------------------------------------ real clients (weston)

fn run_with_client(
    name: &str,
    render_device: &Path,
    extra: &[&str],
    client: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, serde_json::Value, String) {
    let dir = runtime_dir(name);
    let stats = scratch().join(format!("{name}-stats.json"));
    let _ = std::fs::remove_file(&stats);
    // A liveness bound only: Mesa's start-up under an emulated CPU takes 10-40 s.
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=10", "180"])
        .arg(syncbridge_bin())
        .args(["--backend", "headless", "--stats-interval", "0"])
        .args(extra)
        .arg("--render-device")
        .arg(render_device)
        .arg("--stats-json")
        .arg(&stats)
        .arg("--")
        .args(client)
        .env("XDG_RUNTIME_DIR", &dir)
        .env("RUST_LOG", "info")
        .env_remove("WAYLAND_DISPLAY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run syncbridge");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::write(scratch().join(format!("{name}.log")), &log);
    let text = std::fs::read_to_string(&stats)
        .unwrap_or_else(|e| panic!("stats JSON {}: {e}; log:\n{log}", stats.display()));
    (
        out.status.code(),
        serde_json::from_str(&text).expect("stats JSON"),
        log,
    )
}

fn node(driver: &str, kind: NodeKind) -> PathBuf {
    find_nodes(driver, kind)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {kind:?} node for {driver}"))
}

fn weston_figures(stats: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "frames_presented": stats["frames_presented_total"],
        "commits": stats["commits"],
        "dmabuf_imports": stats["dmabuf_imports"],
        "latch_latency": stats["sync"]["latch_latency"],
        "commits_waited": stats["sync"]["commits_waited"],
        "already_signalled": stats["sync"]["commits_fence_already_signalled"],
    })
}

#[test]
fn weston_simple_dmabuf_egl_presents_frames_without_protocol_errors() {
    require_vm();
    // kms_swrast allocates dumb buffers: on the 2D virtio_gpu card's primary node.
    let card = virtio_gpu_node(VirtioGpu::Plain, NodeKind::Primary);
    let card = card.to_str().expect("utf-8 path");
    // Runs until 120 frames with new content were presented (several seconds of the
    // client's animation); then syncbridge stops it and exits 0.
    let (code, stats, log) = run_with_client(
        "weston-simple-dmabuf-egl",
        &virtio_render_node(),
        &["--exit-after-frames", "120"],
        &["weston-simple-dmabuf-egl", "-d", card],
        &[],
    );
    assert_eq!(
        code,
        Some(0),
        "syncbridge stopped at the frame limit; log:\n{log}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0, "{stats:#}\n{log}");
    assert!(
        stats["dmabuf_imports"].as_u64() >= Some(1),
        "{stats:#}\n{log}"
    );
    let frames = stats["frames_presented_total"].as_u64().unwrap_or(0);
    assert!(frames >= 120, "only {frames} frames: {stats:#}\n{log}");
    assert!(stats["commits"].as_u64() >= Some(100), "{stats:#}");
    record_summary("weston-simple-dmabuf-egl", weston_figures(&stats));
}

#[test]
fn weston_simple_dmabuf_feedback_presents_frames_without_protocol_errors() {
    require_vm();
    // The client allocates on the feedback's main device: VKMS has no render node, so it
    // falls back to the primary node, where kms_swrast can allocate dumb buffers. Mesa 22
    // (Debian 12) picks kms_swrast there by itself; Mesa 25 (Debian 13) loads kmsro for
    // the card, which has no GPU to render with ("kmsro: driver missing") and cannot
    // create a bo. GBM_ALWAYS_SOFTWARE asks both for kms_swrast.
    let vkms = node("vkms", NodeKind::Primary);
    let (code, stats, log) = run_with_client(
        "weston-simple-dmabuf-feedback",
        &vkms,
        &[],
        &["weston-simple-dmabuf-feedback"],
        &[("GBM_ALWAYS_SOFTWARE", "1")],
    );
    assert_eq!(
        code,
        Some(0),
        "the client exits 0 after its 3 s; log:\n{log}"
    );
    assert!(
        log.contains("end of dma-buf feedback"),
        "the client received the feedback; log:\n{log}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0, "{stats:#}\n{log}");
    assert!(
        stats["dmabuf_imports"].as_u64() >= Some(1),
        "{stats:#}\n{log}"
    );
    let frames = stats["frames_presented_total"].as_u64().unwrap_or(0);
    assert!(frames >= 2, "only {frames} frames: {stats:#}\n{log}");
    record_summary("weston-simple-dmabuf-feedback", weston_figures(&stats));
}

#[test]
fn wayland_info_lists_dmabuf_v4_syncobj_and_explicit_sync() {
    require_vm();
    let (code, _stats, log) = run_with_client(
        "wayland-info",
        &virtio_render_node(),
        &[],
        &["wayland-info"],
        &[],
    );
    assert_eq!(code, Some(0), "log:\n{log}");
    let mut versions: HashMap<String, u32> = HashMap::new();
    for line in log.lines() {
        // interface: 'zwp_linux_dmabuf_v1',   version:  5, name: 12
        let Some(rest) = line.trim().strip_prefix("interface: '") else {
            continue;
        };
        let Some((name, tail)) = rest.split_once('\'') else {
            continue;
        };
        let version = tail
            .split("version:")
            .nth(1)
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        versions.insert(name.to_string(), version);
    }
    assert!(
        versions.get("zwp_linux_dmabuf_v1").copied().unwrap_or(0) >= 4,
        "{versions:?}\n{log}"
    );
    assert!(
        versions.contains_key("wp_linux_drm_syncobj_manager_v1"),
        "{versions:?}"
    );
    assert!(
        versions.contains_key("zwp_linux_explicit_synchronization_v1"),
        "{versions:?}"
    );
    // Our own client agrees.
    let rb = start_syncbridge("globals", &virtio_render_node());
    let c = TestClient::connect(&rb.socket).expect("connect");
    let ours = globals_by_name(&c.rec.globals);
    assert!(ours.get("zwp_linux_dmabuf_v1").copied().unwrap_or(0) >= 4);
    assert!(ours.contains_key("wp_linux_drm_syncobj_manager_v1"));
    drop(c);
    let _ = rb.stop();
}

// -------------------------------------------------------------------------- summary

/// Prints the figures the other tests recorded (straight to fd 1, past libtest's capture).
/// Runs last (tests run in name order with --test-threads=1).
#[test]
fn zz_summary() {
    let path = scratch().join("vm_compositor_sync_summary.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for line in text.lines() {
        let _ = writeln!(out, "VM-COMPOSITOR-SUMMARY {line}");
    }
    let _ = out.flush();
    // The next run starts a fresh file.
    let _ = std::fs::remove_file(&path);
}
