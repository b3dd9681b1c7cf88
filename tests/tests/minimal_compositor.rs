//! The adopters' example compositor (`protocols/examples/minimal_compositor.rs`) run as
//! a process against real clients on the host: our recording client (shm buffers, the
//! bridge's implicit path) and weston-simple-shm. The syncobj path through it runs in the
//! VM (`vm_minimal_compositor`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use syncbridge_tests::client::{Commit, TestClient};
use syncbridge_tests::example_bin::{start_minimal, SOCKET_NAME};
use wayland_client::protocol::wl_shm::Format::Argb8888;

/// Hang detector for waits on the example's frame clock (not a speed check).
const LIMIT: Duration = Duration::from_secs(60);

fn frame_only() -> Commit {
    Commit {
        frame: true,
        ..Commit::default()
    }
}

#[test]
fn minimal_compositor_presents_shm_frames_and_releases_each_replaced_buffer() {
    let mc = start_minimal("recording", 3, None);
    let mut c = TestClient::connect(&mc.socket).expect("connect to minimal_compositor");
    for global in [
        "wl_compositor",
        "xdg_wm_base",
        "wl_shm",
        "zwp_linux_dmabuf_v1",
        // The bridge's global; linux-drm-syncobj-v1 needs a DRM device (VM test).
        "zwp_linux_explicit_synchronization_v1",
    ] {
        assert!(c.global(global).is_some(), "{global} advertised");
    }

    let w = c.create_toplevel();
    assert!(
        c.blocking_dispatch_until(LIMIT, |r| !r.surfaces[w].configures.is_empty()),
        "initial configure; {}",
        mc.output()
    );
    let a = c.create_shm_buffer_filled(64, 48, Argb8888, 0xff20_80c0);
    let b = c.create_shm_buffer_filled(64, 48, Argb8888, 0xffc0_8020);

    // Frame 1 shows A.
    c.attach(w, Some(a));
    c.commit(w, frame_only());
    assert!(
        c.blocking_dispatch_until(LIMIT, |r| r.surfaces[w].frames.len() == 1),
        "frame callback of the commit showing A; {}",
        mc.output()
    );
    c.blocking_roundtrip();
    assert_eq!(c.rec.releases(a), 0, "A is shown: not released");

    // Frame 2 shows B: A goes back once B replaced it, before B's frame is done.
    c.attach(w, Some(b));
    c.commit(w, frame_only());
    assert!(
        c.blocking_dispatch_until(LIMIT, |r| r.surfaces[w].frames.len() == 2),
        "frame callback of the commit showing B; {}",
        mc.output()
    );
    c.blocking_roundtrip();
    assert_eq!(c.rec.releases(a), 1, "A released once, after B replaced it");
    assert_eq!(c.rec.releases(b), 0, "B is shown: not released");
    let frames = c.rec.surfaces[w].frames.clone();
    let a_release = c.rec.buffers[a].releases[0];
    assert!(
        frames[0] < a_release && a_release < frames[1],
        "A's release ({a_release}) comes between A's frame ({}) and B's frame ({})",
        frames[0],
        frames[1]
    );

    // Frame 3 shows A again (the client may reuse it): B goes back; the example exits.
    c.attach(w, Some(a));
    c.commit(w, frame_only());
    assert!(
        c.blocking_dispatch_until(LIMIT, |r| r.surfaces[w].frames.len() == 3
            && r.buffers[b].releases.len() == 1),
        "frame 3 and B's release; {}",
        mc.output()
    );

    let summary = mc.wait_exit(LIMIT);
    assert_eq!(summary.get("frames_presented"), 3, "{summary:?}");
    assert!(summary.get("buffers_released") >= 2, "{summary:?}");
    assert!(summary.get("commits") >= 3, "{summary:?}");
    assert_eq!(summary.text("explicit_sync"), "enabled", "{summary:?}");
    assert_eq!(summary.text("syncobj"), "disabled", "{summary:?}");
}

#[test]
fn weston_simple_shm_runs_on_the_minimal_compositor_until_it_exits() {
    const FRAMES: u64 = 60;
    let mc = start_minimal("weston-simple-shm", FRAMES, None);
    let client_log = syncbridge_tests::compositor_bin::scratch().join("minimal-simple-shm.log");
    let mut client = Command::new("weston-simple-shm")
        .env("XDG_RUNTIME_DIR", &mc.runtime_dir)
        .env("WAYLAND_DISPLAY", SOCKET_NAME)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&client_log).expect("client log"))
        .spawn()
        .expect("start weston-simple-shm (Debian package weston)");

    // The example exits after FRAMES frames that showed the client's buffers; the
    // client then loses its connection and exits on its own.
    let summary = mc.wait_exit(Duration::from_secs(120));
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = client.try_wait().expect("wait for weston-simple-shm") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = client.kill();
            panic!("weston-simple-shm still runs after the compositor exited");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&client_log).unwrap_or_default();
    // simple-shm has two buffers and aborts ("Both buffers busy at redraw(). Server
    // bug?") when the compositor holds both: a clean exit means every buffer it needed
    // back came back.
    assert!(
        status.success(),
        "weston-simple-shm exit {status}; its log:\n{log}"
    );
    assert!(!log.contains("busy"), "weston-simple-shm: {log}");
    assert_eq!(summary.get("frames_presented"), FRAMES, "{summary:?}");
    assert!(summary.get("commits") >= FRAMES, "{summary:?}");
    // Each presented commit replaced the previous buffer, which the bridge released.
    assert!(summary.get("buffers_released") >= FRAMES - 1, "{summary:?}");
}

/// Code lines of the example: non-blank lines that are not `//` comments, and of those the
/// ones between `// syncbridge {` and `// } syncbridge` markers (the README's rule).
fn example_line_counts(source: &str) -> (usize, usize) {
    let (mut syncbridge, mut all, mut inside) = (0, 0, false);
    for line in source.lines().map(str::trim) {
        match line {
            "// syncbridge {" => inside = true,
            "// } syncbridge" => inside = false,
            l if l.is_empty() || l.starts_with("//") => {}
            _ => {
                all += 1;
                syncbridge += usize::from(inside);
            }
        }
    }
    assert!(!inside, "an unclosed `// syncbridge {{` marker");
    (syncbridge, all)
}

#[test]
fn readme_states_the_examples_integration_line_count() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let example =
        std::fs::read_to_string(format!("{root}/protocols/examples/minimal_compositor.rs"))
            .expect("the example's source");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let (syncbridge, all) = example_line_counts(&example);
    assert!(syncbridge > 0 && syncbridge < all, "{syncbridge} of {all}");
    let claim = format!(
        "The integration is {syncbridge} of the example's {all} code lines**; the other {}",
        all - syncbridge
    );
    assert!(
        readme.contains(&claim),
        "README.md must say \"{claim}\" (recount after changing the example)"
    );
}
