//! What the display shows, read back through GETFB2 of the primary plane's framebuffer
//! (the VM tests run as root, so the kernel hands out its GEM handles), and CPU drawing
//! into client dma-bufs; plus small helpers on the stats and the test client.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use drm::control::Device as _;

use crate::client::buffers::DmaBuffer;
use crate::client::{Presentation, Recorder, TestClient};
use crate::kernel::card::Card;

/// How long tests wait for something the compositor should do within a few frames.
pub const LONG: Duration = Duration::from_secs(10);

/// Opens a KMS card to read back what it shows (universal planes, to see the primary
/// plane). Open it after the compositor started: the first opener becomes DRM master.
pub fn open_display(path: &Path) -> Card {
    use drm::Device as _;
    let card = Card::open(path).expect("open the display card");
    card.set_client_capability(drm::ClientCapability::UniversalPlanes, true)
        .expect("universal planes");
    card
}

/// The mode size of the first connected connector of `card`.
pub fn mode_size(card: &Card) -> (u32, u32) {
    let res = card.resource_handles().expect("resources");
    for c in res.connectors() {
        let Ok(info) = card.get_connector(*c, false) else {
            continue;
        };
        if info.state() == drm::control::connector::State::Connected {
            let mode = info
                .modes()
                .iter()
                .find(|m| {
                    m.mode_type()
                        .contains(drm::control::ModeTypeFlags::PREFERRED)
                })
                .or(info.modes().first())
                .expect("a mode");
            let (w, h) = mode.size();
            return (u32::from(w), u32::from(h));
        }
    }
    panic!("no connected connector on {}", card.path.display());
}

/// The framebuffer on the primary plane of the first active CRTC, if any.
pub fn primary_fb(card: &Card) -> Option<drm::control::framebuffer::Handle> {
    let planes = card.plane_handles().ok()?;
    for p in planes {
        let info = card.get_plane(p).ok()?;
        if info.crtc().is_none() {
            continue;
        }
        let props = card.get_properties(p).ok()?;
        let primary = props.iter().any(|(h, v)| {
            card.get_property(*h)
                .map(|i| i.name().to_str() == Ok("type"))
                .unwrap_or(false)
                && *v == 1
        });
        if primary {
            return info.framebuffer();
        }
    }
    None
}

/// Pixels of `fb` at the given points (XRGB8888 words), via GETFB2 + PRIME + mmap.
pub fn read_pixels(
    card: &Card,
    fb: drm::control::framebuffer::Handle,
    points: &[(u32, u32)],
) -> Option<Vec<u32>> {
    let info = card.get_planar_framebuffer(fb).ok()?;
    let handle = info.buffers()[0]?;
    let pitch = info.pitches()[0];
    let offset = info.offsets()[0];
    let (_, h) = info.size();
    let flags = (rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::RDWR).bits();
    let fd = card.buffer_to_prime_fd(handle, flags);
    let _ = card.close_buffer(handle);
    let fd = fd.ok()?;
    let len = (offset + pitch * h) as usize;
    let pixels = map_read(fd.as_fd(), len, |bytes| {
        points
            .iter()
            .map(|&(x, y)| {
                let at = (offset + y * pitch + x * 4) as usize;
                u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
            })
            .collect::<Vec<u32>>()
    });
    Some(pixels)
}

/// The inode of the dma-buf behind the primary plane's framebuffer: GETFB2, then a PRIME
/// export of its GEM handle. A client buffer the display imported comes back as the
/// client's own dma-buf, so this equals [`dmabuf_inode`] of the buffer the plane shows
/// (as committed: a nonblocking atomic commit changes it at once, before its flip).
pub fn primary_dmabuf_inode(card: &Card) -> Option<u64> {
    let fb = primary_fb(card)?;
    let info = card.get_planar_framebuffer(fb).ok()?;
    let handle = info.buffers()[0]?;
    let flags = (rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::RDWR).bits();
    let fd = card.buffer_to_prime_fd(handle, flags);
    let _ = card.close_buffer(handle);
    dmabuf_inode(fd.ok()?.as_fd())
}

/// The inode of a dma-buf fd (one per dma-buf, whoever holds it).
pub fn dmabuf_inode(fd: BorrowedFd<'_>) -> Option<u64> {
    rustix::fs::fstat(fd).ok().map(|st| st.st_ino)
}

pub fn map_read<T>(fd: BorrowedFd<'_>, len: usize, f: impl FnOnce(&[u8]) -> T) -> T {
    // SAFETY: mapping a dma-buf fd we hold, read-only, shared; the mapping is unmapped
    // below and the slice does not outlive it.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )
    }
    .expect("mmap of the scanout buffer");
    // SAFETY: `ptr` maps `len` readable bytes until munmap.
    let out = f(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) });
    // SAFETY: unmapping exactly what we mapped.
    unsafe {
        let _ = rustix::mm::munmap(ptr, len);
    }
    out
}

/// Fill `buf` with one XRGB8888 colour through a CPU mapping of its dma-buf.
pub fn fill(buf: &DmaBuffer, colour: u32) {
    let len = (buf.stride * buf.height) as usize;
    // SAFETY: mapping a dma-buf we own, shared read-write; unmapped below.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            buf.fd.as_fd(),
            0,
        )
    }
    .expect("mmap of a client buffer");
    // SAFETY: `ptr` maps `len` writable bytes (4-byte aligned: page aligned) until munmap.
    let words = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u32>(), len / 4) };
    words.fill(colour);
    // SAFETY: unmapping exactly what we mapped.
    unsafe {
        let _ = rustix::mm::munmap(ptr, len);
    }
}

pub fn centre(size: (u32, u32)) -> Vec<(u32, u32)> {
    vec![(size.0 / 2, size.1 / 2), (1, 1), (size.0 - 2, size.1 - 2)]
}

/// Waits until the display's primary plane shows `colour` at `points`.
pub fn wait_shows(card: &Card, points: &[(u32, u32)], colour: u32, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(fb) = primary_fb(card) {
            if let Some(px) = read_pixels(card, fb, points) {
                if px.iter().all(|p| p & 0x00ff_ffff == colour & 0x00ff_ffff) {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let fb = primary_fb(card);
    let info = fb.map(|fb| {
        card.get_planar_framebuffer(fb)
            .map(|i| format!("{:?} {:?}", i.buffers(), i.size()))
    });
    eprintln!(
        "display readback: fb {fb:?} info {info:?} pixels {:x?}",
        fb.and_then(|fb| read_pixels(card, fb, points))
    );
    false
}

pub fn kms(stats: &serde_json::Value) -> &serde_json::Value {
    let k = &stats["kms"];
    assert!(k.is_object(), "stats have a kms section: {stats}");
    println!(
        "kms stats: {}",
        serde_json::to_string(k).unwrap_or_default()
    );
    k
}

/// A toplevel that got its configure.
pub fn configured_surface(c: &mut TestClient) -> usize {
    let s = c.create_toplevel();
    assert!(
        c.blocking_dispatch_until(LONG, |r| !r.surfaces[s].configures.is_empty()),
        "no configure"
    );
    s
}

pub fn presented_flags(c: &TestClient, commit: u64) -> Option<u32> {
    match c.rec.outcome(commit) {
        Some(Presentation::Presented { flags, .. }) => Some(flags),
        _ => None,
    }
}

/// How many `wl_output` globals are in the client's recorded global list.
pub fn wl_outputs(r: &Recorder) -> usize {
    r.globals
        .iter()
        .filter(|g| g.interface == "wl_output")
        .count()
}

/// CRTCs of `card` that are active with a mode.
pub fn active_crtcs(card: &Card) -> usize {
    let res = card.resource_handles().expect("resources");
    res.crtcs()
        .iter()
        .filter_map(|c| card.get_crtc(*c).ok())
        .filter(|info| info.mode().is_some())
        .count()
}
