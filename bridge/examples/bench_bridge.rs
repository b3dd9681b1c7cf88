//! Per-operation cost of the bridge's kernel operations, on the real kernel in the test VM.
//!
//! Build on the host, run in the VM (vgem + virtio_gpu loaded):
//! ```text
//! cargo build --release -p syncbridge-bridge --example bench_bridge
//! cargo xtask vm --exec "target/release/examples/bench_bridge"
//! ```
//! Prints a table of ns/op (best of 3 runs of N iterations) with the ratio to
//! `export(Read)`, then wake-up latency percentiles for the calloop sources. The VM's CPU is
//! emulated: compare ratios, not absolute numbers.
//!
//! Self-contained on purpose (its own small vgem helper), so it builds with the bridge's
//! dependencies only and in release mode in seconds.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::Device as _;
use rustix::ioctl::{ioctl, opcode, Setter, Updater};
use syncbridge_bridge::calloop::EventLoop;
use syncbridge_bridge::dmabuf::{self, Access};
use syncbridge_bridge::percentile::nearest_rank;
use syncbridge_bridge::release::ReleaseMerger;
use syncbridge_bridge::source::{DmabufReadySource, SyncFileSource};
use syncbridge_bridge::syncobj::drm_driver_name;
use syncbridge_bridge::{SyncFile, SyncobjDevice, WaitMode};

// ---------------------------------------------------------------------------------------
// Minimal vgem + DRM helpers
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Node(OwnedFd);
impl AsFd for Node {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
impl drm::Device for Node {}
impl drm::control::Device for Node {}

fn open_driver(driver: &str, prefix: &str) -> Node {
    let mut paths: Vec<_> = std::fs::read_dir("/dev/dri")
        .expect("/dev/dri (run this in the test VM)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    paths.sort();
    for p in paths {
        let Ok(fd) = rustix::fs::open(
            &p,
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) else {
            continue;
        };
        if drm_driver_name(fd.as_fd()).ok().as_deref() == Some(driver) {
            return Node(fd);
        }
    }
    panic!("no {prefix}* node for driver {driver}");
}

#[repr(C)]
struct VgemAttach {
    handle: u32,
    flags: u32,
    out_fence: u32,
    pad: u32,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct VgemSignal {
    fence: u32,
    flags: u32,
}

struct Vgem(Node);
struct Buf {
    handle: drm::buffer::Handle,
    dmabuf: OwnedFd,
}

impl Vgem {
    fn buffer(&self) -> Buf {
        let db = self
            .0
            .create_dumb_buffer((16, 16), DrmFourcc::Xrgb8888, 32)
            .expect("dumb buffer");
        let flags = (rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::RDWR).bits();
        let dmabuf = self
            .0
            .buffer_to_prime_fd(db.handle(), flags)
            .expect("prime");
        Buf {
            handle: db.handle(),
            dmabuf,
        }
    }
    fn attach(&self, b: &Buf, write: bool) -> u32 {
        let mut arg = VgemAttach {
            handle: b.handle.into(),
            flags: u32::from(write),
            out_fence: 0,
            pad: 0,
        };
        // SAFETY: DRM_IOCTL_VGEM_FENCE_ATTACH is _IOWR('d', 0x41, struct drm_vgem_fence_attach),
        // and `arg` is a live instance of that layout.
        unsafe {
            ioctl(
                self.0.as_fd(),
                Updater::<{ opcode::read_write::<VgemAttach>(b'd', 0x41) }, _>::new(&mut arg),
            )
        }
        .expect("VGEM_FENCE_ATTACH");
        arg.out_fence
    }
    fn signal(&self, fence: u32) {
        let arg = VgemSignal { fence, flags: 0 };
        // SAFETY: DRM_IOCTL_VGEM_FENCE_SIGNAL is _IOW('d', 0x42, struct drm_vgem_fence_signal).
        unsafe {
            ioctl(
                self.0.as_fd(),
                Setter::<{ opcode::write::<VgemSignal>(b'd', 0x42) }, _>::new(arg),
            )
        }
        .expect("VGEM_FENCE_SIGNAL");
    }
    /// A pending fence as a SyncFile (signal with the returned id).
    fn pending(&self) -> (Buf, u32, SyncFile) {
        let b = self.buffer();
        let f = self.attach(&b, true);
        let s = dmabuf::export_sync_file(b.dmabuf.as_fd(), Access::Read).expect("export");
        (b, f, s)
    }
}

/// The naive sync_file -> point path the scratch syncobj avoids: create a binary syncobj,
/// import the sync_file into it, transfer, destroy (4 ioctls).
fn naive_import_point(drm: &Node, timeline: u32, point: u64, fence: &SyncFile) {
    #[repr(C)]
    struct Handle {
        handle: u32,
        flags: u32,
        fd: i32,
        pad: u32,
    }
    let tmp = drm.create_syncobj(false).expect("create");
    let mut arg = Handle {
        handle: tmp.into(),
        flags: 1,
        fd: fence.as_fd().as_raw_fd(),
        pad: 0,
    };
    // SAFETY: DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE is _IOWR('d', 0xC2, struct drm_syncobj_handle);
    // `arg` has that layout and names a live sync_file fd.
    unsafe {
        ioctl(
            drm.as_fd(),
            Updater::<{ opcode::read_write::<Handle>(b'd', 0xC2) }, _>::new(&mut arg),
        )
    }
    .expect("FD_TO_HANDLE(IMPORT_SYNC_FILE)");
    let dst = std::num::NonZeroU32::new(timeline)
        .map(drm::control::syncobj::Handle::from)
        .expect("handle");
    drm.syncobj_timeline_transfer(tmp, dst, 0, point)
        .expect("transfer");
    drm.destroy_syncobj(tmp).expect("destroy");
}

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

struct Row {
    name: String,
    ns: f64,
    ioctls: &'static str,
}

/// Best (lowest) average of 3 runs of `iters` calls.
fn bench(
    rows: &mut Vec<Row>,
    name: &str,
    ioctls: &'static str,
    iters: u32,
    mut f: impl FnMut(u32),
) {
    let mut best = f64::INFINITY;
    for run in 0..3 {
        let t = Instant::now();
        for i in 0..iters {
            f(run * iters + i);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    eprintln!("  {name}: {best:.0} ns/op");
    rows.push(Row {
        name: name.to_string(),
        ns: best,
        ioctls,
    });
}

fn main() {
    let iters: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let vgem = Vgem(open_driver("vgem", "card"));
    let dev = SyncobjDevice::new(open_driver("virtio_gpu", "renderD").0)
        .expect("virtio_gpu syncobj device");
    let raw_drm = Node(rustix::io::fcntl_dupfd_cloexec(dev.drm_fd(), 0).expect("dup"));
    let mut rows = Vec::new();
    eprintln!("bench_bridge: {iters} iterations x 3 runs per op");

    // dma-buf: an idle buffer, and one with a pending (vgem) read fence.
    let idle = vgem.buffer();
    let busy = vgem.buffer();
    let busy_fence = vgem.attach(&busy, false);
    let idle_fd = idle.dmabuf.as_fd();
    let busy_fd = busy.dmabuf.as_fd();

    bench(
        &mut rows,
        "export(Read) idle buffer",
        "fstatfs+1",
        iters,
        |_| {
            let _ = dmabuf::export_sync_file(idle_fd, Access::Read).expect("export");
        },
    );
    bench(
        &mut rows,
        "export(Write) 1 pending fence",
        "fstatfs+1",
        iters,
        |_| {
            let _ = dmabuf::export_sync_file(busy_fd, Access::Write).expect("export");
        },
    );
    bench(
        &mut rows,
        "  of which: dma-buf check (fstatfs)",
        "fstatfs",
        iters,
        |_| {
            assert!(dmabuf::is_dmabuf(idle_fd).expect("fstatfs"));
        },
    );
    let (_pb, pf, pending) = vgem.pending();
    bench(
        &mut rows,
        "import(Read) pending fence",
        "fstatfs+1",
        iters,
        |_| {
            dmabuf::import_sync_file(idle_fd, &pending, Access::Read).expect("import");
        },
    );
    bench(
        &mut rows,
        "poll_readable(dma-buf) [fallback]",
        "fstatfs+poll",
        iters,
        |_| {
            let _ = dmabuf::poll_readable(&[idle_fd]).expect("poll");
        },
    );
    bench(
        &mut rows,
        "SyncFile::is_signaled (poll)",
        "poll",
        iters,
        |_| {
            let _ = pending.is_signaled().expect("poll");
        },
    );
    let (_b2, pf2, pending2) = vgem.pending();
    bench(&mut rows, "merge, 2 distinct contexts", "1", iters, |_| {
        let _ = pending.merge(&pending2).expect("merge");
    });
    bench(&mut rows, "merge, same context", "1", iters, |_| {
        let _ = pending.merge(&pending).expect("merge");
    });
    bench(
        &mut rows,
        "SyncFile::info (2 FILE_INFO)",
        "2",
        iters,
        |_| {
            let _ = pending.info().expect("info");
        },
    );
    bench(
        &mut rows,
        "ReleaseMerger::add_reader_fence (pending)",
        "poll+1",
        iters,
        |_| {
            // A fresh merger per op would measure allocation; one merger folding the same context.
            thread_local! {
                static M: std::cell::RefCell<ReleaseMerger> = std::cell::RefCell::new(ReleaseMerger::new());
            }
            let f = pending.try_clone().expect("dup");
            M.with(|m| m.borrow_mut().add_reader_fence(f).expect("add"));
        },
    );

    // Timelines on virtio_gpu.
    let tl = dev.create_timeline().expect("timeline");
    let stub = dev.signaled_sync_file().expect("stub");
    tl.import_point(1, &pending).expect("materialize point 1");
    bench(
        &mut rows,
        "point -> sync_file (export_point)",
        "2",
        iters,
        |_| {
            let _ = tl.export_point(1).expect("export_point");
        },
    );
    let tl_in = dev.create_timeline().expect("timeline");
    bench(
        &mut rows,
        "sync_file -> point (import_point)",
        "2",
        iters,
        |i| {
            tl_in
                .import_point(u64::from(i) + 1, &stub)
                .expect("import_point");
        },
    );
    let tl_naive = dev.create_timeline().expect("timeline");
    bench(
        &mut rows,
        "sync_file -> point, naive 4-ioctl path",
        "4",
        iters,
        |i| {
            naive_import_point(&raw_drm, tl_naive.handle(), u64::from(i) + 1, &stub);
        },
    );
    let tl_sig = dev.create_timeline().expect("timeline");
    bench(&mut rows, "Timeline::signal (CPU)", "1", iters, |i| {
        tl_sig.signal(u64::from(i) + 1).expect("signal");
    });
    bench(&mut rows, "Timeline::query", "1", iters, |_| {
        let _ = tl_sig.query().expect("query");
    });
    bench(
        &mut rows,
        "Timeline::eventfd (signalled point)",
        "eventfd+1",
        iters,
        |_| {
            let _ = tl_sig.eventfd(1, WaitMode::Signaled).expect("eventfd");
        },
    );

    vgem.signal(pf);
    vgem.signal(pf2);
    vgem.signal(busy_fence);

    // Table.
    let base = rows.first().map_or(1.0, |r| r.ns);
    println!();
    println!("| operation | syscalls | ns/op | x export(Read) |");
    println!("|---|---|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} |",
            r.name,
            r.ioctls,
            r.ns,
            r.ns / base
        );
    }

    // Wake-up latency: vgem signal -> calloop callback.
    let rounds = 200;
    let mut via_sync_file = Vec::with_capacity(rounds);
    let mut via_poll = Vec::with_capacity(rounds);
    let mut event_loop: EventLoop<'_, Option<Instant>> = EventLoop::try_new().expect("loop");
    for round in 0..rounds * 2 {
        let b = vgem.buffer();
        let f = vgem.attach(&b, true);
        if round % 2 == 0 {
            let s = dmabuf::export_sync_file(b.dmabuf.as_fd(), Access::Read).expect("export");
            event_loop
                .handle()
                .insert_source(SyncFileSource::new(s), |_, _, at: &mut Option<Instant>| {
                    *at = Some(Instant::now())
                })
                .expect("insert");
        } else {
            let dup = b.dmabuf.try_clone().expect("dup");
            event_loop
                .handle()
                .insert_source(
                    DmabufReadySource::new(vec![dup]),
                    |(), _, at: &mut Option<Instant>| *at = Some(Instant::now()),
                )
                .expect("insert");
        }
        let mut fired = None;
        event_loop
            .dispatch(Some(Duration::ZERO), &mut fired)
            .expect("dispatch");
        assert!(fired.is_none());
        let t0 = Instant::now();
        vgem.signal(f);
        while fired.is_none() {
            event_loop
                .dispatch(Some(Duration::from_secs(1)), &mut fired)
                .expect("dispatch");
        }
        let lat = fired.map_or(Duration::ZERO, |t| t - t0);
        if round % 2 == 0 {
            via_sync_file.push(lat)
        } else {
            via_poll.push(lat)
        }
    }
    via_sync_file.sort();
    via_poll.sort();
    println!();
    println!("| wake-up after signal ({rounds} rounds) | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (name, v) in [
        ("SyncFileSource (exported sync_file)", &via_sync_file),
        ("DmabufReadySource (poll dma-buf)", &via_poll),
    ] {
        println!(
            "| {name} | {:?} | {:?} | {:?} |",
            nearest_rank(v, 50).unwrap_or_default(),
            nearest_rank(v, 99).unwrap_or_default(),
            v.last().copied().unwrap_or_default()
        );
    }
    let s = syncbridge_bridge::stats();
    println!();
    println!("stats: {s:?}");
}
