//! GLES composition on the headless backend, on a real GL driver stack: the VM's virgl
//! card (a virtio-gpu whose host renders with Mesa; its guest driver exports native
//! fences), named with `--render-device`. `cargo xtask test --vm-filter vm_headless_gles`.
//!
//! What is checked: with `--render-device` on the virgl render node the headless backend
//! composites with GLES (`--renderer auto`: virgl is a hardware EGL driver to the guest);
//! real GL clients (weston-simple-egl, weston-simple-dmabuf-egl) get frames presented with
//! no protocol error; each frame's render fence reaches the fence bridge as a sync_file
//! (`render_sync.exported`); and the clients' pixels are in the compositor's screenshot
//! (read back from the GBM buffer with GL). The fallbacks: `--renderer pixman` on the same
//! node, and `--renderer auto` on vgem (no hardware EGL driver), composite with pixman.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use syncbridge_tests::compositor_bin::{runtime_dir, scratch, syncbridge_bin};
use syncbridge_tests::kernel::card::{find_nodes, NodeKind};
use syncbridge_tests::kernel::require_vm;
use syncbridge_tests::screenshot::{read_png, run_with_simple_egl_triangle, Image};

fn virgl_card() -> PathBuf {
    syncbridge_tests::kernel::virtio_gpu::virgl().card
}

fn render_node_of(_card: &Path) -> PathBuf {
    syncbridge_tests::kernel::virtio_gpu::virgl().render
}

/// Run `client` under `syncbridge --backend headless --render-device <device>` until an
/// output presented `frames` frames; return the stats, the screenshot taken at exit and
/// the log. GL clients start slowly in the emulated VM (libLLVM pages in over 9p, shaders
/// compile on the host through virgl), so the bound is frames, with a generous timeout.
fn run_headless(
    name: &str,
    device: &Path,
    frames: u32,
    extra: &[&str],
    client: &[&str],
) -> (serde_json::Value, Image, String) {
    require_vm();
    let runtime = runtime_dir(&format!("headless-gles-{name}"));
    let stats = scratch().join(format!("headless-gles-{name}.json"));
    let shot = scratch().join(format!("headless-gles-{name}.png"));
    let log = scratch().join(format!("headless-gles-{name}.log"));
    let _ = std::fs::remove_file(&stats);
    let _ = std::fs::remove_file(&shot);
    let log_file = std::fs::File::create(&log).expect("log");
    let status = Command::new("timeout")
        .args(["--kill-after=10", "300"])
        .arg(syncbridge_bin())
        .args(["--backend", "headless", "--render-device"])
        .arg(device)
        .args(["--stats-interval", "0", "--stats-json"])
        .arg(&stats)
        .arg("--screenshot")
        .arg(&shot)
        .args(["--exit-after-frames", &frames.to_string()])
        .args(extra)
        .arg("--")
        .args(client)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("dup"))
        .stderr(log_file)
        .status()
        .expect("run");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let text = std::fs::read_to_string(&stats)
        .unwrap_or_else(|e| panic!("no stats ({e}), status {status}; log:\n{log_text}"));
    let stats: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_ne!(
        status.code(),
        Some(124),
        "{frames} frames presented within 300 s; log:\n{log_text}"
    );
    assert!(
        stats["child"]["exit_code"].is_null(),
        "the client ran until the compositor stopped: {}; log:\n{log_text}",
        stats["child"]
    );
    assert_eq!(stats["protocol_errors_sent"], 0, "log:\n{log_text}");
    assert!(
        stats["frames_presented_total"].as_u64().unwrap_or(0) >= u64::from(frames),
        "frames presented: {}; log:\n{log_text}",
        stats["frames_presented_total"]
    );
    let image = read_png(&shot).unwrap_or_else(|e| panic!("screenshot: {e}; log:\n{log_text}"));
    (stats, image, log_text)
}

/// GLES composited, and render fences went to the bridge as sync_files.
fn assert_gles_with_render_fences(stats: &serde_json::Value, log: &str) {
    assert_eq!(stats["backend"], "headless");
    assert_eq!(stats["renderer"], "gles", "log:\n{log}");
    let exported = stats["render_sync"]["exported"].as_u64().unwrap_or(0);
    assert!(
        exported >= 1,
        "render fences went to the bridge for the sampled buffers: {}",
        stats["render_sync"]
    );
    assert!(
        log.contains("headless: renderer: GLES"),
        "the start-up log says GLES runs"
    );
}

#[test]
fn virgl_headless_gles_composites_weston_simple_egl() {
    let node = render_node_of(&virgl_card());
    let ((stats, log), _) = run_with_simple_egl_triangle("headless, composited", || {
        let (stats, image, log) =
            run_headless("simple-egl", &node, 40, &[], &["weston-simple-egl"]);
        ((stats, log), image)
    });
    assert_gles_with_render_fences(&stats, &log);
    println!(
        "simple-egl: frames {} render_sync {}",
        stats["frames_presented_total"], stats["render_sync"]
    );
}

#[test]
fn virgl_headless_gles_composites_weston_simple_dmabuf_egl() {
    let node = render_node_of(&virgl_card());
    let node_str = node.display().to_string();
    let (stats, image, log) = run_headless(
        "simple-dmabuf-egl",
        &node,
        40,
        &[],
        &["weston-simple-dmabuf-egl", "-d", &node_str],
    );
    assert_gles_with_render_fences(&stats, &log);
    assert!(
        stats["dmabuf_imports"].as_u64().unwrap_or(0) >= 1,
        "{}",
        stats["dmabuf_imports"]
    );
    assert_eq!(stats["render_device"].as_str(), Some(node_str.as_str()));
    let coloured = image.coloured_pixels();
    println!(
        "simple-dmabuf-egl: frames {} render_sync {} coloured {coloured}",
        stats["frames_presented_total"], stats["render_sync"]
    );
    assert!(
        coloured >= 500,
        "the client's gradient is on screen: {coloured} coloured pixels"
    );
}

/// `--renderer pixman` on the virgl node: pixman composites, no render fence is exported.
#[test]
fn virgl_headless_forced_pixman_stays_pixman() {
    let node = render_node_of(&virgl_card());
    let (stats, image, _) = run_headless(
        "forced-pixman",
        &node,
        20,
        &["--renderer", "pixman"],
        &["weston-simple-shm"],
    );
    assert_eq!(stats["renderer"], "pixman");
    assert_eq!(stats["render_sync"]["exported"], 0);
    assert!(image.coloured_pixels() >= 500);
}

/// vgem has no EGL driver of its own (Mesa falls back to software or fails): `auto`
/// keeps pixman there.
#[test]
fn vgem_headless_auto_renderer_is_pixman() {
    let vgem = find_nodes("vgem", NodeKind::Render)
        .into_iter()
        .next()
        .expect("a vgem render node in this VM");
    let (stats, _, log) = run_headless("vgem-auto", &vgem, 20, &[], &["weston-simple-shm"]);
    assert_eq!(stats["renderer"], "pixman", "log:\n{log}");
    assert!(
        log.contains("--renderer auto: ") && log.contains("pixman"),
        "the log says why GLES does not run:\n{log}"
    );
}

/// Presentation times are CLOCK_MONOTONIC at the frame, after the commit they report.
/// The GLES renderer takes seconds to start on virgl in the emulated VM, and the headless
/// frame clock was once anchored to a CLOCK_MONOTONIC read before that start: every
/// `presented` then lay that far in the past, before its own commit (the bench's headless
/// commit -> present read 0.00 refresh cycles for every frame).
#[test]
fn virgl_headless_presentation_times_come_after_their_commits() {
    use std::time::Duration;
    use syncbridge_bridge::sync_file::monotonic_now_ns;
    use syncbridge_tests::client::{Commit, Presentation, TestClient};
    use syncbridge_tests::compositor_bin::{start_syncbridge, Options};

    require_vm();
    let node = render_node_of(&virgl_card());
    let rb = start_syncbridge("headless-gles-clock", &Options::headless(Some(&node)));
    let mut c = TestClient::connect(&rb.socket).expect("connect");
    let s = c.create_toplevel();
    c.blocking_roundtrip();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let b = c.create_shm_buffer(64, 64);
        c.attach(s, Some(b));
        let before = Duration::from_nanos(monotonic_now_ns());
        let k = c.commit(s, Commit::feedback());
        assert!(
            c.blocking_dispatch_until(Duration::from_secs(30), |r| r.outcome(k).is_some()),
            "no feedback for commit {k:?}; log:\n{}",
            rb.log()
        );
        let after = Duration::from_nanos(monotonic_now_ns());
        let Some(Presentation::Presented { time, .. }) = c.rec.outcome(k) else {
            panic!("commit {k:?} was not presented: {:?}", c.rec.outcome(k));
        };
        assert!(
            before <= time && time <= after,
            "presented at {time:?}, committed at {before:?}, feedback read at {after:?}"
        );
        seen.push(time - before);
    }
    let (stats, log) = rb.stop();
    assert!(
        log.contains("renderer: GLES"),
        "the clock is checked behind the slow GLES start-up; log:\n{log}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0, "{stats:#}");
    eprintln!("commit -> presented: {seen:?}");
}
