//! Direct scanout of `wl_buffer`s that share one dma-buf (issue 12 item 9), on VKMS in
//! the VM under `seatd-launch`: `cargo xtask test --vm-filter vm_tty_shared_dmabuf`.
//!
//! The kernel returns the same GEM handle for every PRIME import of one dma-buf on one
//! device file, so the compositor's framebuffers of two `wl_buffer`s on one dma-buf share
//! a handle. Each must keep it until the last of them goes: closing it per framebuffer
//! closes it twice (`EINVAL`), or closes the handle of whatever import got that number
//! in between.

use syncbridge_tests::client::buffers::Allocator;
use syncbridge_tests::client::{BufferId, Commit, SurfaceId, TestClient};
use syncbridge_tests::kernel::card::Card;
use syncbridge_tests::tty::*;
use wayland_client::protocol::wl_shm::Format;

/// wp_presentation_feedback kind: zero_copy.
const ZERO_COPY: u32 = 0x8;

/// What the compositor logs when a GEM_CLOSE of a client buffer's handle fails.
const CLOSE_FAILED: &str = "closing the GEM handle of a client dma-buf failed";

struct Screen<'a> {
    comp: &'a Compositor,
    card: &'a Card,
    size: (u32, u32),
    shown: usize,
}

impl Screen<'_> {
    /// Attaches `buffer`, commits, and checks it was presented (scanned out directly when
    /// `direct`) and that the display shows `colour`.
    fn show(
        &mut self,
        c: &mut TestClient,
        s: SurfaceId,
        buffer: BufferId,
        colour: u32,
        direct: bool,
    ) {
        c.attach(s, Some(buffer));
        let commit = c.commit(s, Commit::feedback());
        assert!(
            c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some()),
            "frame {} not presented; log:\n{}",
            self.shown,
            self.comp.log_text()
        );
        let flags = presented_flags(c, commit).unwrap_or_else(|| {
            panic!(
                "frame {} discarded; log:\n{}",
                self.shown,
                self.comp.log_text()
            )
        });
        assert_eq!(
            flags & ZERO_COPY != 0,
            direct,
            "frame {}: zero-copy {direct} expected (flags {flags:#x}); log:\n{}",
            self.shown,
            self.comp.log_text()
        );
        assert!(
            wait_shows(self.card, &centre(self.size), colour, LONG),
            "frame {}: the display does not show {colour:#08x}; log:\n{}",
            self.shown,
            self.comp.log_text()
        );
        self.shown += 1;
    }
}

#[test]
fn vkms_two_wl_buffers_on_one_dmabuf_share_its_gem_handle_until_the_last_goes() {
    let path = card_of("vkms");
    let comp = Compositor::start("shared-dmabuf", &path, &[]);
    let card = open_display(&path);
    let size = mode_size(&card);
    let alloc = Allocator::vgem();
    let red = alloc.allocate(size.0, size.1).expect("red buffer");
    let blue = alloc.allocate(size.0, size.1).expect("blue buffer");
    fill(&red, 0x00ff_0000);
    fill(&blue, 0x0000_00ff);
    let mut c = comp.client();
    let s = configured_surface(&mut c);
    let mut screen = Screen {
        comp: &comp,
        card: &card,
        size,
        shown: 0,
    };
    let rounds = 3;
    for _ in 0..rounds {
        // Two wl_buffers on the red dma-buf (each create sends the fd: the compositor
        // gets a dup of it per wl_buffer), shown in turn.
        let a = c.create_dmabuf_buffer(&red);
        let b = c.create_dmabuf_buffer(&red);
        screen.show(&mut c, s, a, 0x00ff_0000, true);
        screen.show(&mut c, s, b, 0x00ff_0000, true);
        screen.show(&mut c, s, a, 0x00ff_0000, true);
        screen.show(&mut c, s, b, 0x00ff_0000, true);
        // A goes while B is on screen: A's framebuffer is removed, B keeps the handle.
        c.destroy_buffer(a);
        // Another dma-buf is imported (it may get the handle number A's close freed),
        // then B is shown again from its framebuffer, then goes while blue is shown.
        let d = c.create_dmabuf_buffer(&blue);
        screen.show(&mut c, s, d, 0x0000_00ff, true);
        screen.show(&mut c, s, b, 0x00ff_0000, true);
        screen.show(&mut c, s, d, 0x0000_00ff, true);
        c.destroy_buffer(b);
        // B's framebuffer goes at the next cycle; blue must stay.
        let e = c.create_dmabuf_buffer(&blue);
        screen.show(&mut c, s, e, 0x0000_00ff, true);
        screen.show(&mut c, s, d, 0x0000_00ff, true);
        c.destroy_buffer(e);
        // Composited (shm): every client framebuffer goes.
        let grey =
            c.create_shm_buffer_filled(size.0 as i32, size.1 as i32, Format::Xrgb8888, 0x0080_8080);
        screen.show(&mut c, s, grey, 0x0080_8080, false);
        c.destroy_buffer(d);
        let grey2 =
            c.create_shm_buffer_filled(size.0 as i32, size.1 as i32, Format::Xrgb8888, 0x0040_4040);
        screen.show(&mut c, s, grey2, 0x0040_4040, false);
        c.destroy_buffer(grey);
    }
    assert!(c.protocol_error().is_none());
    drop(c);
    let log = comp.log_text();
    let stats = comp.stop();
    let k = kms(&stats);
    let close_failures: Vec<&str> = log.lines().filter(|l| l.contains(CLOSE_FAILED)).collect();
    assert!(
        close_failures.is_empty(),
        "{} GEM_CLOSEs of client buffer handles failed (a handle shared by two \
         framebuffers was closed by each):\n{}",
        close_failures.len(),
        close_failures.join("\n")
    );
    let rmfb_failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("removing a client framebuffer"))
        .collect();
    assert!(
        rmfb_failures.is_empty(),
        "RMFB of client framebuffers failed:\n{}",
        rmfb_failures.join("\n")
    );
    let shared_imports = log
        .lines()
        .filter(|l| l.contains("client dma-buf imported (PRIME)") && l.contains("uses=2"))
        .count();
    assert!(
        shared_imports >= rounds,
        "B's import shared A's GEM handle in {shared_imports} of {rounds} rounds"
    );
    assert_eq!(k["commit_errors"], 0, "{k}");
    assert_eq!(k["test_only_failures"], 0, "{k}");
    assert!(
        k["direct_scanout_frames"].as_u64().unwrap_or(0) >= 9 * rounds as u64,
        "{k}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0);
}
