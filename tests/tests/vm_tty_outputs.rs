//! Outputs of the tty backend coming and going on a real kernel (issue 5): several
//! connected connectors, and a connector that vanishes while the compositor presents.
//! Runs inside the VM under `seatd-launch`: `cargo xtask test --vm-filter vm_tty_outputs`.
//!
//! The connectors are switched through DRM's sysfs `status` file (`on` / `off` /
//! `detect`: the kernel then reports the connector connected or disconnected to every
//! probe), and the hotplug notification is a real kernel uevent on the card (writing
//! `change` to its sysfs `uevent`), delivered through systemd-udevd to the compositor's
//! udev monitor. Neither VKMS nor QEMU's virtio-gpu can unplug a connector by itself
//! here: VKMS 6.12 has no hotplug, and QEMU changes virtio-gpu heads only from a UI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use syncbridge_tests::client::buffers::Allocator;
use syncbridge_tests::client::{Commit, Presentation, TestClient};
use syncbridge_tests::kernel::card::Card;
use syncbridge_tests::tty::*;
use wayland_client::protocol::wl_shm::Format;

/// wp_presentation_feedback kind: zero_copy.
const ZERO_COPY: u32 = 0x8;

/// Size of the small test frames.
const SMALL: (u32, u32) = (64, 64);

/// A connector's sysfs directory, e.g. `/sys/class/drm/card0-Virtual-2`.
#[derive(Debug)]
struct SysfsConnector(PathBuf);

impl SysfsConnector {
    /// The connectors of the card at `/dev/dri/cardN`, by name.
    fn of_card(card: &Path) -> Vec<SysfsConnector> {
        let name = card
            .file_name()
            .and_then(|n| n.to_str())
            .expect("card name");
        let prefix = format!("{name}-");
        let mut found: Vec<SysfsConnector> = std::fs::read_dir("/sys/class/drm")
            .expect("/sys/class/drm")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| SysfsConnector(e.path()))
            .filter(|c| !c.name().contains("Writeback"))
            .collect();
        found.sort_by_key(SysfsConnector::name);
        found
    }

    fn name(&self) -> String {
        self.0
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn status(&self) -> String {
        std::fs::read_to_string(self.0.join("status"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Force the connector `on`, `off`, or back to `detect`.
    fn force(&self, how: &str) {
        std::fs::write(self.0.join("status"), how)
            .unwrap_or_else(|e| panic!("forcing {} {how}: {e}", self.name()));
    }
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

/// Commit a `size` shm frame with presentation feedback and wait for its outcome.
fn commit_frame(
    c: &mut TestClient,
    surface: usize,
    size: (u32, u32),
    colour: u32,
) -> Option<Presentation> {
    let (w, h) = (
        i32::try_from(size.0).expect("width"),
        i32::try_from(size.1).expect("height"),
    );
    let buffer = c.create_shm_buffer_filled(w, h, Format::Xrgb8888, colour);
    c.attach(surface, Some(buffer));
    let commit = c.commit(surface, Commit::frame_and_feedback());
    c.flush();
    c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some());
    c.rec.outcome(commit)
}

fn presented(p: Option<Presentation>) -> bool {
    matches!(p, Some(Presentation::Presented { .. }))
}

/// Wait until `cond` (on the kernel's state) holds, up to `within`, dispatching `c`'s
/// events meanwhile.
fn wait(c: &mut TestClient, within: Duration, cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return true;
        }
        c.blocking_dispatch_until(Duration::from_millis(100), |_| false);
    }
    cond()
}

/// Put every connector of `card` back to `detect` when the test ends, pass or fail.
struct RestoreConnectors(PathBuf);

impl Drop for RestoreConnectors {
    fn drop(&mut self) {
        for c in SysfsConnector::of_card(&self.0) {
            let _ = std::fs::write(c.0.join("status"), "detect");
        }
        // The 2D card's second head rests off (QEMU's gtk display reports it connected).
        if let Err(e) = syncbridge_tests::kernel::virtio_gpu::single_head_plain() {
            eprintln!("vm_tty_outputs: the 2D card's second head: {e}");
        }
    }
}

/// virtio-gpu with two heads (QEMU `max_outputs=2`; the second one forced on): two
/// outputs, each with its CRTC. Then the second connector vanishes: its output and
/// wl_output go away, its CRTC is switched off, and the first output keeps presenting.
/// When it comes back, it gets an output again.
#[test]
fn virtio_gpu_two_outputs_one_vanishes_and_returns() {
    let path = virtio_card();
    let _restore = RestoreConnectors(path.clone());
    let connectors = SysfsConnector::of_card(&path);
    assert_eq!(
        connectors.len(),
        2,
        "virtio-gpu has two heads (max_outputs=2): {connectors:?}"
    );
    let second = &connectors[1];
    second.force("on");
    assert_eq!(second.status(), "connected");

    let comp = Compositor::start("two-outputs", &path, &[]);
    let card = Card::open(&path).expect("open the card");
    let mut c = comp.client();
    assert_eq!(
        wl_outputs(&c.rec),
        2,
        "one wl_output per connected connector"
    );
    assert!(
        wait(&mut c, LONG, || active_crtcs(&card) == 2),
        "both CRTCs lit; log:\n{}",
        comp.log_text()
    );
    let s = configured_surface(&mut c);
    assert!(
        presented(commit_frame(&mut c, s, SMALL, 0x00ff_0000)),
        "presented"
    );

    // The second connector vanishes.
    second.force("off");
    card_changed(&path);
    assert!(
        c.blocking_dispatch_until(LONG, |r| wl_outputs(r) == 1),
        "the vanished connector's wl_output was removed; log:\n{}",
        comp.log_text()
    );
    assert!(
        wait(&mut c, LONG, || active_crtcs(&card) == 1),
        "its CRTC was switched off"
    );
    for i in 0..10 {
        assert!(
            presented(commit_frame(&mut c, s, SMALL, 0x0000_ff00 + i)),
            "frame {i} after the connector vanished was presented; log:\n{}",
            comp.log_text()
        );
    }

    // It comes back.
    second.force("on");
    card_changed(&path);
    assert!(
        c.blocking_dispatch_until(LONG, |r| wl_outputs(r) == 2),
        "the returning connector got a wl_output again; log:\n{}",
        comp.log_text()
    );
    assert!(
        wait(&mut c, LONG, || active_crtcs(&card) == 2),
        "and its CRTC is lit again"
    );
    assert!(
        presented(commit_frame(&mut c, s, SMALL, 0x0000_00ff)),
        "presented"
    );
    let stats = comp.stop();
    let k = kms(&stats);
    assert_eq!(k["connectors_lost"], 1, "{k}");
    assert_eq!(k["connectors_added"], 1, "{k}");
    let outputs = stats["outputs"].as_array().expect("outputs");
    assert_eq!(
        outputs.len(),
        3,
        "two outputs, then the returning one: {stats}"
    );
    for o in outputs {
        assert!(
            o["refresh_cycles"].as_u64().unwrap_or(0) > 0,
            "every output ran refresh cycles: {o}"
        );
    }
}

/// VKMS's only connector vanishes: nothing is left to present on, and the compositor
/// keeps serving its client; when the connector returns, the client's next frame is
/// presented and shown.
#[test]
fn vkms_only_connector_vanishes_and_returns() {
    let path = card_of("vkms");
    let _restore = RestoreConnectors(path.clone());
    let connector = SysfsConnector::of_card(&path)
        .into_iter()
        .next()
        .expect("a VKMS connector");
    let comp = Compositor::start("vanish", &path, &[]);
    let card = open_display(&path);
    let size = mode_size(&card);
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    // A full-screen dma-buf, scanned out directly: the vanishing output holds it.
    let alloc = Allocator::vgem();
    let scanned = alloc.allocate(size.0, size.1).expect("buffer");
    fill(&scanned, 0x00ff_0000);
    let scanned_id = c.create_dmabuf_buffer(&scanned);
    c.attach(s, Some(scanned_id));
    let first = c.commit(s, Commit::feedback());
    c.flush();
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.outcome(first).is_some()),
        "first frame presented"
    );
    assert!(
        c.rec.outcome(first).is_some_and(|p| matches!(
            p,
            Presentation::Presented { flags, .. } if flags & ZERO_COPY != 0
        )),
        "the full-screen dma-buf went on the plane: {:?}",
        c.rec.outcome(first)
    );
    assert_eq!(c.rec.releases(scanned_id), 0, "held while on the plane");

    connector.force("off");
    card_changed(&path);
    assert!(
        c.blocking_dispatch_until(LONG, |r| wl_outputs(r) == 0),
        "the wl_output was removed; log:\n{}",
        comp.log_text()
    );
    assert!(
        wait(&mut c, LONG, || active_crtcs(&card) == 0),
        "the CRTC was switched off"
    );
    // Still serving: a roundtrip works, and a commit is not presented anywhere.
    c.blocking_roundtrip();
    assert!(c.is_alive() && c.protocol_error().is_none());
    let buffer = c.create_shm_buffer_filled(64, 64, Format::Xrgb8888, 0x0000_ff00);
    c.attach(s, Some(buffer));
    let orphan = c.commit(s, Commit::feedback());
    c.flush();
    c.blocking_dispatch_until(Duration::from_secs(1), |r| r.outcome(orphan).is_some());
    assert!(
        !presented(c.rec.outcome(orphan)),
        "no output: nothing is presented"
    );
    // The plane that showed the dma-buf is gone and the surface replaced it: it must
    // come back (a dead output must not hold it).
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.releases(scanned_id) > 0),
        "the scanned-out buffer was released after its output vanished; log:\n{}",
        comp.log_text()
    );

    connector.force("detect");
    card_changed(&path);
    assert!(
        c.blocking_dispatch_until(LONG, |r| wl_outputs(r) == 1),
        "the connector came back with a wl_output; log:\n{}",
        comp.log_text()
    );
    let colour = 0x0000_00ff;
    assert!(
        presented(commit_frame(&mut c, s, size, colour)),
        "presented after the return"
    );
    assert!(
        wait_shows(&card, &[(size.0 / 2, size.1 / 2)], colour, LONG),
        "the display shows the client's frame again; log:\n{}",
        comp.log_text()
    );
    let stats = comp.stop();
    let k = kms(&stats);
    assert_eq!(k["connectors_lost"], 1, "{k}");
    assert_eq!(k["connectors_added"], 1, "{k}");
}
