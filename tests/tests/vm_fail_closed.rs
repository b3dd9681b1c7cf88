//! Releases fail closed when the compositor runs out of fds (run inside the test VM by
//! `cargo xtask test`). The in-process compositor, a real client over a socket pair, real
//! vgem dma-bufs and real fences: two pending vgem fences stand in for a GPU render fence
//! and a KMS out-fence (readers of buffer B1), reported the way the renderer and the KMS
//! backend report them. The process's fd table is then genuinely full (dups of /dev/null
//! up to a lowered RLIMIT_NOFILE, so every new fd fails with EMFILE) while the readers are
//! reported and, where the client's requests need no fd, while B1 is replaced and released.
//!
//! The promise checked: the client never gets B1 back (`wl_buffer.release` with nothing
//! in its dma-buf, a signalled release point, `immediate_release`) while a reader's fence
//! is pending.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use syncbridge_bridge::dmabuf::{export_sync_file, Access};
use syncbridge_bridge::{SyncFile, WaitMode};
use syncbridge_protocols::SyncStats;
use syncbridge_tests::client::buffers::{Allocator, DmaBuffer};
use syncbridge_tests::client::harness::{virtio_syncobj_device, Harness};
use syncbridge_tests::client::Commit;
use syncbridge_tests::kernel::require_vm;
use syncbridge_tests::kernel::vgem::VgemFence;

const W: u32 = 64;
const H: u32 = 64;

/// The fd table filled up to a lowered soft limit; dropping it gives everything back.
struct FdsExhausted {
    fill: Vec<OwnedFd>,
    limit: Rlimit,
}

impl FdsExhausted {
    fn now() -> Self {
        let limit = getrlimit(Resource::Nofile);
        let open = std::fs::read_dir("/proc/self/fd")
            .expect("list /proc/self/fd")
            .count() as u64;
        // Keep the fill short: a soft limit a little above what is open now.
        let soft = (open + 64).min(limit.maximum.unwrap_or(u64::MAX));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(soft),
                maximum: limit.maximum,
            },
        )
        .expect("lower RLIMIT_NOFILE");
        let base = File::open("/dev/null").expect("open /dev/null");
        let mut fill: Vec<OwnedFd> = vec![base.into()];
        loop {
            match fill[0].try_clone() {
                Ok(fd) => fill.push(fd),
                Err(err) => {
                    assert_eq!(
                        err.raw_os_error(),
                        Some(libc::EMFILE),
                        "filling the fd table: {err}"
                    );
                    break;
                }
            }
        }
        Self { fill, limit }
    }
}

impl Drop for FdsExhausted {
    fn drop(&mut self) {
        self.fill.clear();
        let _ = setrlimit(Resource::Nofile, self.limit);
    }
}

fn sync_stats(h: &mut Harness) -> SyncStats {
    h.state().sync_bridge.stats()
}

fn is_pending(f: &SyncFile) -> bool {
    !f.is_signaled().expect("poll the fence")
}

/// A vgem fence (on a scratch vgem buffer) and its sync_file.
fn vgem_fence(alloc: &Allocator) -> (DmaBuffer, VgemFence, SyncFile) {
    let buf = alloc.allocate(16, 16).expect("scratch vgem buffer");
    let fence = alloc.attach_write_fence(&buf).expect("attach a vgem fence");
    let sf = buf.export_write_fences().expect("export the fence");
    assert!(is_pending(&sf), "a fresh vgem fence is pending");
    (buf, fence, sf)
}

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

/// Two readers of `id` (a render and a scanout) reported while no fd can be made; the
/// bridge gets the fences it is handed and nothing else.
fn report_readers_out_of_fds(
    h: &mut Harness,
    id: syncbridge_protocols::BufferId,
    render_sf: SyncFile,
    out_sf: SyncFile,
) {
    h.state().sync_bridge.scanout_committed(None, &[id], &[]);
    let _full = FdsExhausted::now();
    assert!(
        render_sf.try_clone().is_err(),
        "the fd table is full: a dup fails"
    );
    h.state().sync_bridge.frame_rendered(Some(render_sf), &[id]);
    h.state()
        .sync_bridge
        .scanout_committed(Some(out_sf), &[], &[id]);
}

#[test]
fn implicit_release_out_of_fds_carries_the_reader_fences_or_waits_for_them() {
    require_vm();
    let mut h = Harness::vm();
    let c = h.add_client();
    let vgem = Allocator::vgem();
    let s = h.create_toplevel(c);
    let buf1 = vgem.allocate(W, H).expect("buffer");
    let b1 = h.client(c).create_dmabuf_buffer(&buf1);
    h.client(c).attach(s, Some(b1));
    h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    h.frame();
    let id1 = shown_buffer_id(&mut h);
    let (_g, render, render_sf) = vgem_fence(&vgem);
    let (_k, flip, out_sf) = vgem_fence(&vgem);
    report_readers_out_of_fds(&mut h, id1, render_sf, out_sf);

    // The implicit acquire of B2 needs an fd (its exported sync_file): fds are back.
    let buf2 = vgem.allocate(W, H).expect("buffer");
    let b2 = h.client(c).create_dmabuf_buffer(&buf2);
    h.client(c).attach(s, Some(b2));
    h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    h.frame();
    h.roundtrip(c);
    if h.client(c).rec.releases(b1) > 0 {
        // Released at once: then both readers' fences must be in B1's dma-buf.
        let all = export_sync_file(buf1.fd.as_fd(), Access::Write).expect("export B1's fences");
        assert!(
            is_pending(&all),
            "wl_buffer.release arrived while the readers' fences are pending, and B1's \
             dma-buf carries none of them: a writer would not wait for the readers"
        );
        vgem.signal(render).expect("signal");
        assert!(is_pending(&all), "the out-fence is in B1 too");
        vgem.signal(flip).expect("signal");
        all.wait(Duration::from_secs(5))
            .expect("B1 becomes writable");
    } else {
        vgem.signal(render).expect("signal");
        vgem.signal(flip).expect("signal");
        assert!(
            h.pump_until(300, |h| h.client(c).rec.releases(b1) > 0),
            "B1 is released once its readers are done"
        );
    }
    let st = sync_stats(&mut h);
    assert_eq!(st.implicit_releases_unheld, 0, "{st:?}");
}

#[test]
fn syncobj_release_point_out_of_fds_does_not_signal_before_the_readers() {
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
    let buffer = |h: &mut Harness, n: u64| {
        let buf = vgem.allocate(W, H).expect("buffer");
        let b = h.client(c).create_dmabuf_buffer(&buf);
        h.client(c).attach(s, Some(b));
        h.client(c).set_acquire_point(s, &acq_obj, n);
        h.client(c).set_release_point(s, &rel_obj, n);
        acq.signal(n).expect("signal acquire");
        buf
    };
    let _b1 = buffer(&mut h, 1);
    h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    h.frame();
    let id1 = shown_buffer_id(&mut h);
    let (_g, render, render_sf) = vgem_fence(&vgem);
    let (_k, flip, out_sf) = vgem_fence(&vgem);
    report_readers_out_of_fds(&mut h, id1, render_sf, out_sf);
    let _b2 = buffer(&mut h, 2);

    // B2 replaces B1 while the fd table is still full: a signalled acquire point needs
    // no fd, and neither does a commit. B1's release is delivered out of fds.
    let full = FdsExhausted::now();
    h.client(c).commit(s, Commit::default());
    h.roundtrip(c);
    assert_eq!(shown_buffer_id(&mut h).get(), id1.get() + 1, "B2 applied");
    let point1_signalled =
        |rel: &syncbridge_bridge::Timeline| rel.wait(1, WaitMode::Signaled, Duration::ZERO).is_ok();
    assert!(
        !point1_signalled(&rel),
        "release point 1 signalled while both readers' fences are pending"
    );
    vgem.signal(render).expect("signal the render fence");
    for _ in 0..5 {
        h.pump_with(Duration::from_millis(10));
    }
    assert!(
        !point1_signalled(&rel),
        "release point 1 signalled while the out-fence is pending"
    );
    vgem.signal(flip).expect("signal the out-fence");
    assert!(
        h.pump_until(300, |_| point1_signalled(&rel)),
        "release point 1 signals once both readers are done"
    );
    drop(full);
    let st = sync_stats(&mut h);
    assert!(st.releases_held_until_signalled >= 1, "{st:?}");
    assert!(
        st.fence_waits_polled >= 1,
        "no fd for a wait source: polled\n{st:?}"
    );
}

#[test]
fn explicit_release_out_of_fds_is_not_sent_before_the_readers() {
    require_vm();
    let mut h = Harness::vm();
    let c = h.add_client();
    let vgem = Allocator::vgem();
    let s = h.create_toplevel(c);
    h.client(c).explicit_surface(s);
    h.roundtrip(c);
    let buf1 = vgem.allocate(W, H).expect("buffer");
    let b1 = h.client(c).create_dmabuf_buffer(&buf1);
    h.client(c).attach(s, Some(b1));
    let k1 = h.client(c).commit(s, Commit::with_explicit_release());
    h.roundtrip(c);
    h.frame();
    let id1 = shown_buffer_id(&mut h);
    let (_g, render, render_sf) = vgem_fence(&vgem);
    let (_k, flip, out_sf) = vgem_fence(&vgem);
    report_readers_out_of_fds(&mut h, id1, render_sf, out_sf);
    let buf2 = vgem.allocate(W, H).expect("buffer");
    let b2 = h.client(c).create_dmabuf_buffer(&buf2);

    // Replaced while the fd table is full (no acquire fence: the commit needs no fd).
    let full = FdsExhausted::now();
    h.client(c).attach(s, Some(b2));
    h.client(c).commit(s, Commit::with_explicit_release());
    h.roundtrip(c);
    let early = h
        .client(c)
        .rec
        .explicit_release(k1)
        .map(|r| r.fence.is_some());
    assert!(
        early.is_none(),
        "B1's release event (fenced: {early:?}) arrived while the readers' fences are \
         pending and no fd was left to carry them"
    );
    vgem.signal(render).expect("signal");
    vgem.signal(flip).expect("signal");
    assert!(
        h.pump_until(300, |h| h.client(c).rec.explicit_release(k1).is_some()),
        "B1 is released once its readers are done"
    );
    drop(full);
    let st = sync_stats(&mut h);
    assert!(st.releases_held_until_signalled >= 1, "{st:?}");
}

#[test]
fn implicit_release_without_fence_import_waits_for_the_readers() {
    require_vm();
    let mut h = Harness::vm();
    // As on a kernel without DMA_BUF_IOCTL_IMPORT_SYNC_FILE: the release cannot carry the
    // fence, so smithay's buffer (whose last clone sends wl_buffer.release) must be held.
    h.state()
        .sync_bridge
        .set_dmabuf_fences(syncbridge_bridge::DmabufFenceSupport::PollFallback {
            reason: "test: no fence import".into(),
        });
    let c = h.add_client();
    let vgem = Allocator::vgem();
    let s = h.create_toplevel(c);
    let buf1 = vgem.allocate(W, H).expect("buffer");
    let b1 = h.client(c).create_dmabuf_buffer(&buf1);
    h.client(c).attach(s, Some(b1));
    h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    h.frame();
    let id1 = shown_buffer_id(&mut h);
    let (_g, render, render_sf) = vgem_fence(&vgem);
    h.state()
        .sync_bridge
        .frame_rendered(Some(render_sf), &[id1]);

    let buf2 = vgem.allocate(W, H).expect("buffer");
    let b2 = h.client(c).create_dmabuf_buffer(&buf2);
    h.client(c).attach(s, Some(b2));
    h.client(c).commit(s, Commit::feedback());
    h.roundtrip(c);
    for _ in 0..3 {
        h.frame();
        h.roundtrip(c);
        assert_eq!(
            h.client(c).rec.releases(b1),
            0,
            "wl_buffer.release of B1 while the render fence is pending and not in B1"
        );
    }
    vgem.signal(render).expect("signal");
    assert!(
        h.pump_until(300, |h| h.client(c).rec.releases(b1) > 0),
        "B1 is released once the render is done"
    );
    assert_eq!(h.client(c).rec.releases(b1), 1, "exactly one release");
    let st = sync_stats(&mut h);
    assert_eq!(st.releases_held_until_signalled, 1, "{st:?}");
    assert_eq!(st.implicit_releases_unheld, 0, "{st:?}");
}
