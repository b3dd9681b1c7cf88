//! Real-kernel tests of the VM platform itself: they prove the harness gives us real
//! implicit fences, sync_file export/import, timeline syncobjs, KMS out-fences at a
//! real vblank rate, udmabuf and dma-heaps. Run inside the VM by `cargo xtask test`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use drm::control::{atomic, connector, property, AtomicCommitFlags, Device as _};
use drm::{ClientCapability, Device as _, DriverCapability};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::ioctl::{ioctl, opcode, Setter, Updater};
use syncbridge_tests::kernel::vgem::{FenceAccess, Vgem};
use syncbridge_tests::kernel::{dma_heap, open_card_by_driver, require_vm, udmabuf, NodeKind};

#[repr(C)]
#[derive(Debug, Default)]
struct SyncFileArg {
    flags: u32,
    fd: i32,
}
const SYNC_READ: u32 = 1;
const SYNC_WRITE: u32 = 2;

/// Raw DMA_BUF_IOCTL_EXPORT_SYNC_FILE, kept local so these platform tests do not
/// depend on the bridge they are meant to underpin.
fn export(dmabuf: BorrowedFd<'_>, flags: u32) -> OwnedFd {
    let mut arg = SyncFileArg { flags, fd: -1 };
    // SAFETY: _IOWR('b', 2, struct dma_buf_export_sync_file); `arg` has that layout.
    unsafe {
        ioctl(
            dmabuf,
            Updater::<{ opcode::read_write::<SyncFileArg>(b'b', 2) }, _>::new(&mut arg),
        )
    }
    .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
    // SAFETY: on success the kernel returned a fresh sync_file fd owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(arg.fd) }
}

fn import(dmabuf: BorrowedFd<'_>, sync_file: BorrowedFd<'_>, flags: u32) {
    let arg = SyncFileArg {
        flags,
        fd: sync_file.as_raw_fd(),
    };
    // SAFETY: _IOW('b', 3, struct dma_buf_import_sync_file); `arg` has that layout and
    // names an open sync_file fd.
    unsafe {
        ioctl(
            dmabuf,
            Setter::<{ opcode::write::<SyncFileArg>(b'b', 3) }, _>::new(arg),
        )
    }
    .expect("DMA_BUF_IOCTL_IMPORT_SYNC_FILE");
}

fn is_signalled(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    poll(
        &mut fds,
        Some(&rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }),
    )
    .expect("poll")
        == 1
}

#[test]
fn vgem_write_fence_exports_unsignalled_sync_file_until_signalled() {
    require_vm();
    let vgem = Vgem::open();
    let buf = vgem.create_buffer(64, 64).expect("vgem buffer");
    let fence = vgem
        .attach(&buf, FenceAccess::Write)
        .expect("attach write fence");
    let sf = export(buf.dmabuf.as_fd(), SYNC_READ);
    assert!(
        !is_signalled(sf.as_fd()),
        "exported sync_file must wait for the pending write fence"
    );
    vgem.signal(fence).expect("signal");
    assert!(
        is_signalled(sf.as_fd()),
        "sync_file must be signalled once the write fence is"
    );
}

#[test]
fn imported_read_fence_makes_write_export_wait() {
    require_vm();
    let vgem = Vgem::open();
    let a = vgem.create_buffer(64, 64).expect("buffer a");
    let b = vgem.create_buffer(64, 64).expect("buffer b");
    let fence = vgem.attach(&a, FenceAccess::Write).expect("attach");
    let pending = export(a.dmabuf.as_fd(), SYNC_READ);
    import(b.dmabuf.as_fd(), pending.as_fd(), SYNC_READ);
    let read_side = export(b.dmabuf.as_fd(), SYNC_READ);
    let write_side = export(b.dmabuf.as_fd(), SYNC_WRITE);
    assert!(
        is_signalled(read_side.as_fd()),
        "a read fence must not delay readers"
    );
    assert!(
        !is_signalled(write_side.as_fd()),
        "a read fence must delay writers"
    );
    vgem.signal(fence).expect("signal");
    assert!(is_signalled(write_side.as_fd()));
}

#[test]
fn virtio_gpu_reports_timeline_syncobjs() {
    require_vm();
    let card = open_card_by_driver("virtio_gpu", NodeKind::Render);
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
    assert!(is_signalled(export(u.as_fd(), SYNC_WRITE).as_fd()));
    assert!(is_signalled(export(h.as_fd(), SYNC_WRITE).as_fd()));
}

fn prop(
    card: &impl drm::control::Device,
    h: impl drm::control::ResourceHandle,
    name: &str,
) -> property::Handle {
    let props = card.get_properties(h).expect("get_properties");
    for (handle, _) in props.iter() {
        let info = card.get_property(*handle).expect("get_property");
        if info.name().to_str() == Ok(name) {
            return *handle;
        }
    }
    panic!("no property {name}");
}

#[test]
fn vkms_flips_at_vblank_rate_with_an_out_fence_per_commit() {
    require_vm();
    let card = open_card_by_driver("vkms", NodeKind::Primary);
    card.set_client_capability(ClientCapability::UniversalPlanes, true)
        .expect("universal planes");
    card.set_client_capability(ClientCapability::Atomic, true)
        .expect("atomic");
    let res = card.resource_handles().expect("resources");
    let conn = res
        .connectors()
        .iter()
        .map(|c| card.get_connector(*c, false).expect("connector"))
        .find(|c| c.state() == connector::State::Connected)
        .expect("a connected vkms connector");
    let mode = conn.modes()[0];
    let crtc = res.crtcs()[0];
    let planes = card.plane_handles().expect("planes");
    let primary = planes
        .iter()
        .copied()
        .find(|p| {
            let props = card.get_properties(*p).expect("props");
            let is_primary = props.iter().any(|(h, v)| {
                card.get_property(*h)
                    .map(|i| i.name().to_str() == Ok("type"))
                    .unwrap_or(false)
                    && *v == 1
            });
            is_primary
        })
        .expect("primary plane");
    let (w, h) = (mode.size().0 as u32, mode.size().1 as u32);
    let mut fbs = Vec::new();
    for _ in 0..2 {
        let db = card
            .create_dumb_buffer((w, h), drm::buffer::DrmFourcc::Xrgb8888, 32)
            .expect("dumb");
        fbs.push(card.add_framebuffer(&db, 24, 32).expect("fb"));
    }
    let blob = card.create_property_blob(&mode).expect("mode blob");
    let out_fence_prop = prop(&card, crtc, "OUT_FENCE_PTR");
    let frames = 30;
    let mut intervals = Vec::new();
    let mut last_flip: Option<Instant> = None;
    for i in 0..frames {
        let mut out_fence: i32 = -1;
        let mut req = atomic::AtomicModeReq::new();
        if i == 0 {
            req.add_property(
                conn.handle(),
                prop(&card, conn.handle(), "CRTC_ID"),
                property::Value::CRTC(Some(crtc)),
            );
            req.add_property(crtc, prop(&card, crtc, "MODE_ID"), blob);
            req.add_property(
                crtc,
                prop(&card, crtc, "ACTIVE"),
                property::Value::Boolean(true),
            );
            req.add_property(
                primary,
                prop(&card, primary, "CRTC_ID"),
                property::Value::CRTC(Some(crtc)),
            );
            for (name, v) in [
                ("SRC_X", 0u64),
                ("SRC_Y", 0),
                ("SRC_W", (w as u64) << 16),
                ("SRC_H", (h as u64) << 16),
            ] {
                req.add_property(
                    primary,
                    prop(&card, primary, name),
                    property::Value::UnsignedRange(v),
                );
            }
            for (name, v) in [
                ("CRTC_X", 0i64),
                ("CRTC_Y", 0),
                ("CRTC_W", w as i64),
                ("CRTC_H", h as i64),
            ] {
                req.add_property(
                    primary,
                    prop(&card, primary, name),
                    property::Value::SignedRange(v),
                );
            }
        }
        req.add_property(
            primary,
            prop(&card, primary, "FB_ID"),
            property::Value::Framebuffer(Some(fbs[i % 2])),
        );
        req.add_property(
            crtc,
            out_fence_prop,
            property::Value::SignedRange(&mut out_fence as *mut i32 as i64),
        );
        let flags = if i == 0 {
            AtomicCommitFlags::ALLOW_MODESET | AtomicCommitFlags::PAGE_FLIP_EVENT
        } else {
            AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT
        };
        card.atomic_commit(flags, req).expect("atomic commit");
        assert!(
            out_fence >= 0,
            "commit {i}: kernel must return an out-fence"
        );
        // SAFETY: OUT_FENCE_PTR made the kernel write a fresh sync_file fd we now own.
        let out_fence = unsafe { OwnedFd::from_raw_fd(out_fence) };
        // Wait for the page-flip event.
        let mut fds = [PollFd::new(&card, PollFlags::IN)];
        let n = poll(
            &mut fds,
            Some(&rustix::time::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            }),
        )
        .expect("poll");
        assert_eq!(n, 1, "commit {i}: no page-flip event within 1 s");
        let got_flip = card
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
        let mut fds = [PollFd::new(&out_fence, PollFlags::IN)];
        let n = poll(
            &mut fds,
            Some(&rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            }),
        )
        .expect("poll");
        assert_eq!(n, 1, "commit {i}: out-fence not signalled around the flip");
    }
    intervals.sort();
    let median = intervals[intervals.len() / 2];
    println!(
        "vkms flip interval median {median:?} over {} flips",
        intervals.len()
    );
    assert!(
        median > Duration::from_millis(10) && median < Duration::from_millis(34),
        "VKMS flips should be paced by its 60 Hz vblank timer, median interval was {median:?}"
    );
}
