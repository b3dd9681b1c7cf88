//! Buffers on planes when scanout ends without the usual proof (issue 12, item 6): the
//! KMS device goes away, and a connector vanishes while the session is paused (VT
//! switched away), when the kernel refuses our switch-off commit with EACCES. Runs
//! inside the VM under `seatd-launch`: `cargo xtask test --vm-filter vm_tty_handover`.
//!
//! The release counts are the client's: `wl_buffer.release` events received for the
//! buffer that was on the plane. Each must come exactly once, and never while the
//! display may still read the buffer.
//!
//! Device removal is real: the virtio-gpu PCI device is removed through sysfs
//! (`remove`), the kernel unplugs the DRM device (its ioctls answer ENODEV) and sends the
//! udev `remove` event; the test puts the device back with a PCI bus rescan. VKMS cannot
//! be removed while the compositor holds it open (its module is in use, and 6.12 has no
//! driver to unbind nor configfs devices).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use drm::control::Device as _;
use syncbridge_tests::client::buffers::Allocator;
use syncbridge_tests::client::{Commit, Presentation, TestClient};
use syncbridge_tests::kernel::card::{Card, NodeKind};
use syncbridge_tests::kernel::virtio_gpu::{find_virtio_gpu_nodes, VirtioGpu};
use syncbridge_tests::tty::*;
use wayland_client::protocol::wl_shm::Format;

/// wp_presentation_feedback kind: zero_copy.
const ZERO_COPY: u32 = 0x8;

/// Dispatch `c`'s events for `d` (nothing expected; counts are read afterwards).
fn settle(c: &mut TestClient, d: Duration) {
    c.blocking_dispatch_until(d, |_| false);
}

/// Wait until the compositor's log contains `needle`.
fn wait_log(comp: &Compositor, needle: &str) {
    let start = Instant::now();
    while !comp.log_text().contains(needle) {
        assert!(
            start.elapsed() < LONG,
            "no `{needle}` in the log:\n{}",
            comp.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Show a full-screen dma-buf of `alloc` on `card` through direct scanout; return the
/// client, its surface, the wl_buffer's index, and the buffer (kept alive by the caller).
fn scan_out_full_screen(
    comp: &Compositor,
    card: &Card,
    alloc: &Allocator,
    colour: u32,
) -> (
    TestClient,
    usize,
    usize,
    syncbridge_tests::client::buffers::DmaBuffer,
) {
    let size = mode_size(card);
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let a = alloc.allocate(size.0, size.1).expect("buffer A");
    fill(&a, colour);
    let wa = c.create_dmabuf_buffer(&a);
    c.attach(s, Some(wa));
    let ca = c.commit(s, Commit::feedback());
    c.flush();
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.outcome(ca).is_some()),
        "A presented; log:\n{}",
        comp.log_text()
    );
    assert!(
        c.rec.outcome(ca).is_some_and(|p| matches!(
            p,
            Presentation::Presented { flags, .. } if flags & ZERO_COPY != 0
        )),
        "A went on the plane: {:?}",
        c.rec.outcome(ca)
    );
    assert!(
        wait_shows(card, &centre(size), colour, LONG),
        "the display shows A"
    );
    assert_eq!(c.rec.releases(wa), 0, "held while on the plane");
    (c, s, wa, a)
}

/// The surface replaces A with a small shm buffer: from then on only the display can hold
/// A back (the surface no longer needs it).
fn replace_with_shm(c: &mut TestClient, s: usize) {
    let b = c.create_shm_buffer_filled(64, 64, Format::Xrgb8888, 0x0000_ff00);
    c.attach(s, Some(b));
    c.commit(s, Commit::default());
    c.flush();
}

// ------------------------------------------------------------------------------------
// Device removal
// ------------------------------------------------------------------------------------

/// The PCI device behind a DRM card, e.g. `/sys/devices/pci0000:00/0000:00:02.0`.
fn pci_device_of(card: &Path) -> PathBuf {
    let name = card
        .file_name()
        .and_then(|n| n.to_str())
        .expect("card name");
    // virtio-gpu's DRM device hangs off the PCI function (not the virtio device).
    let device = std::fs::canonicalize(format!("/sys/class/drm/{name}/device"))
        .expect("the card's device in sysfs");
    let pci = [
        device.clone(),
        device.parent().map(Path::to_path_buf).unwrap_or_default(),
    ]
    .into_iter()
    .find(|d| d.join("remove").exists())
    .unwrap_or_else(|| panic!("no PCI `remove` at or above {}", device.display()));
    pci
}

/// Put removed PCI devices back (bus rescan) when the test ends, pass or fail, and wait
/// for the virtio-gpu card to be there again for the tests that follow.
struct RescanPci;

impl Drop for RescanPci {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/bus/pci/rescan", "1");
        let start = Instant::now();
        // The 2D card by its feature, not just the driver: the virgl card stays throughout.
        let back = || !find_virtio_gpu_nodes(VirtioGpu::Plain, NodeKind::Primary).is_empty();
        while !back() && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !back() {
            eprintln!(
                "vm_tty_handover: the virtio-gpu card did not come back after the PCI rescan"
            );
        } else if let Err(e) = syncbridge_tests::kernel::virtio_gpu::single_head_plain() {
            eprintln!("vm_tty_handover: the 2D card's second head after the rescan: {e}");
        }
    }
}

/// virtio-gpu scans out a client buffer; the device is removed (PCI remove: the kernel
/// unplugs it and disables its CRTCs). Nothing can read the buffer any more: it is
/// released, exactly once, the wl_output goes away, and the compositor keeps serving.
#[test]
fn virtio_gpu_removed_releases_the_scanned_out_buffer_once() {
    let path = virtio_card();
    let pci = pci_device_of(&path);
    let comp = Compositor::start("removed", &path, &[]);
    let card = open_display(&path);
    let alloc = Allocator::virtio_dumb();
    let (mut c, s, wa, _a) = scan_out_full_screen(&comp, &card, &alloc, 0x0033_6699);
    assert_eq!(wl_outputs(&c.rec), 1, "one output before the removal");

    let _rescan = RescanPci;
    std::fs::write(pci.join("remove"), "1").expect("removing the virtio-gpu PCI device");
    wait_log(&comp, "our KMS device was removed");
    // The kernel says so too: the card's ioctls fail.
    assert!(
        card.resource_handles().is_err(),
        "the unplugged card still answers"
    );
    replace_with_shm(&mut c, s);
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.releases(wa) > 0),
        "the buffer on the removed device's plane was released; log:\n{}",
        comp.log_text()
    );
    settle(&mut c, Duration::from_millis(500));
    assert_eq!(c.rec.releases(wa), 1, "released exactly once");
    assert!(
        c.blocking_dispatch_until(LONG, |r| wl_outputs(r) == 0),
        "the removed device's wl_output went away; log:\n{}",
        comp.log_text()
    );
    c.blocking_roundtrip();
    assert!(
        c.is_alive() && c.protocol_error().is_none(),
        "still serving"
    );
    let stats = comp.stop();
    println!("kms stats after the removal: {}", kms(&stats));
}

// ------------------------------------------------------------------------------------
// A connector vanishes while the session is paused
// ------------------------------------------------------------------------------------

fn active_vt() -> u32 {
    std::fs::read_to_string("/sys/class/tty/tty0/active")
        .ok()
        .and_then(|s| s.trim().strip_prefix("tty").and_then(|n| n.parse().ok()))
        .expect("active VT")
}

fn chvt(n: u32) {
    let status = Command::new("busybox")
        .args(["chvt", &n.to_string()])
        .status()
        .expect("busybox chvt");
    assert!(status.success(), "chvt {n}");
}

/// The first non-writeback connector of `card` in sysfs (`/sys/class/drm/cardN-X-1`).
fn sysfs_connector(card: &Path) -> PathBuf {
    let name = card
        .file_name()
        .and_then(|n| n.to_str())
        .expect("card name");
    let prefix = format!("{name}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir("/sys/class/drm")
        .expect("/sys/class/drm")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && !n.contains("Writeback"))
        })
        .collect();
    found.sort();
    found.into_iter().next().expect("a connector in sysfs")
}

/// Make the kernel send a `change` uevent for the card (what a hotplug interrupt does).
fn card_changed(card: &Path) {
    let name = card
        .file_name()
        .and_then(|n| n.to_str())
        .expect("card name");
    std::fs::write(format!("/sys/class/drm/{name}/uevent"), "change")
        .expect("triggering a change uevent");
}

/// Connector back to `detect` and the VT back home when the test ends, pass or fail.
struct Restore {
    connector: PathBuf,
    card: PathBuf,
    vt: u32,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(self.connector.join("status"), "detect");
        if active_vt() != self.vt {
            let _ = Command::new("busybox")
                .args(["chvt", &self.vt.to_string()])
                .status();
        }
        let _ = std::fs::write(
            format!(
                "/sys/class/drm/{}/uevent",
                self.card.file_name().and_then(|n| n.to_str()).unwrap_or("")
            ),
            "change",
        );
    }
}

/// VKMS scans out a client buffer; the VT is switched away; then the connector vanishes.
/// The compositor cannot switch the CRTC off (not DRM master: EACCES), so the plane
/// may still be read: the buffer is not released while paused. When the VT comes back
/// the switch-off succeeds and the buffer is released, exactly once.
#[test]
fn vkms_connector_lost_while_paused_keeps_its_buffer_until_switched_off() {
    let path = card_of("vkms");
    let connector = sysfs_connector(&path);
    let home = active_vt();
    let away = if home == 2 { 3 } else { 2 };
    let _restore = Restore {
        connector: connector.clone(),
        card: path.clone(),
        vt: home,
    };
    let comp = Compositor::start("lost-paused", &path, &[]);
    let card = open_display(&path);
    let alloc = Allocator::vgem();
    let (mut c, s, wa, _a) = scan_out_full_screen(&comp, &card, &alloc, 0x0066_3399);

    chvt(away);
    wait_log(&comp, "session paused");
    std::fs::write(connector.join("status"), "off").expect("forcing the connector off");
    card_changed(&path);
    wait_log(&comp, "connector vanished");
    assert!(
        c.blocking_dispatch_until(LONG, |r| wl_outputs(r) == 0),
        "the wl_output was removed; log:\n{}",
        comp.log_text()
    );
    assert!(
        comp.log_text().contains("Permission denied (os error 13)"),
        "the switch-off was refused while paused (EACCES); log:\n{}",
        comp.log_text()
    );
    replace_with_shm(&mut c, s);
    settle(&mut c, Duration::from_millis(700));
    assert_eq!(
        c.rec.releases(wa),
        0,
        "released while paused, though the switch-off failed and the CRTC may still scan it out; log:\n{}",
        comp.log_text()
    );

    chvt(home);
    wait_log(&comp, "session active again");
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.releases(wa) > 0),
        "released once the switch-off succeeded after the resume; log:\n{}",
        comp.log_text()
    );
    assert_eq!(
        active_crtcs(&card),
        0,
        "the release came after the CRTC was switched off"
    );
    settle(&mut c, Duration::from_millis(500));
    assert_eq!(c.rec.releases(wa), 1, "released exactly once");
    let stats = comp.stop();
    assert_eq!(kms(&stats)["connectors_lost"], 1);
}
