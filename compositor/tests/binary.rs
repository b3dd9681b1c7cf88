//! The `syncbridge` binary end to end, with real external clients from Debian's
//! weston package (`weston-simple-shm`, which runs until it is stopped).

use std::{
    path::Path,
    process::{Command, Output},
};

const SYNCBRIDGE: &str = env!("CARGO_BIN_EXE_syncbridge");

/// Run syncbridge with a private XDG_RUNTIME_DIR; returns its output and stats JSON.
fn run_syncbridge(args: &[&str]) -> (Output, Option<serde_json::Value>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let stats = dir.path().join("stats.json");
    let output = Command::new(SYNCBRIDGE)
        .args(["--stats-interval", "1", "--stats-json"])
        .arg(&stats)
        .args(args)
        .env("XDG_RUNTIME_DIR", dir.path())
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .env("RUST_LOG", "info")
        .output()
        .expect("syncbridge runs");
    let json = std::fs::read_to_string(&stats)
        .ok()
        .map(|text| serde_json::from_str(&text).expect("stats file is one JSON object"));
    (output, json)
}

fn require_client(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's weston package (cargo xtask install does)"
    );
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn weston_simple_shm_runs_with_frames_and_no_protocol_error() {
    require_client("/usr/bin/weston-simple-shm");
    let (output, stats) = run_syncbridge(&[
        "--backend",
        "headless",
        "--",
        "timeout",
        "3",
        "/usr/bin/weston-simple-shm",
    ]);
    let log = stderr(&output);
    // `timeout` exits 124 when it had to stop the client: syncbridge passes it on.
    assert_eq!(output.status.code(), Some(124), "log:\n{log}");
    let stats = stats.expect("stats JSON written");
    println!(
        "{}",
        serde_json::to_string_pretty(&stats).unwrap_or_default()
    );
    let frames = stats["frames_presented_total"].as_u64().expect("frames");
    // 3 s at 60 Hz is 180 cycles; leave room for a loaded machine.
    assert!(frames >= 60, "only {frames} frames presented; log:\n{log}");
    assert_eq!(stats["protocol_errors_sent"], 0, "log:\n{log}");
    assert_eq!(stats["clients"]["connected"], 1);
    assert_eq!(stats["child"]["exit_code"], 124);
    assert!(stats["commits"].as_u64().expect("commits") >= frames);
    assert!(
        log.contains("latch_p50_us"),
        "periodic stats line in the log"
    );
    // The fence bridge saw the commits and released the replaced shm buffers.
    let sync = &stats["sync"];
    assert!(sync["commits_seen"].as_u64().expect("commits_seen") >= frames);
    assert!(
        sync["release"]["buffers_released"]
            .as_u64()
            .expect("released")
            >= frames / 2
    );
    assert_eq!(sync["protocol_errors"], 0);
    assert_eq!(
        sync["modes"]["linux_drm_syncobj_v1"], "disabled",
        "no DRM device on the host"
    );
}

#[test]
fn exit_after_frames_stops_a_client_that_runs_forever() {
    require_client("/usr/bin/weston-simple-shm");
    let (output, stats) = run_syncbridge(&[
        "--backend",
        "headless",
        "--outputs",
        "2",
        "--output-size",
        "320x240",
        "--refresh",
        "120",
        "--exit-after-frames",
        "40",
        "--",
        "/usr/bin/weston-simple-shm",
    ]);
    assert_eq!(output.status.code(), Some(0), "log:\n{}", stderr(&output));
    let stats = stats.expect("stats JSON written");
    let outputs = stats["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0]["refresh_mhz"], 120_000);
    let max = outputs
        .iter()
        .filter_map(|o| o["frames_presented"].as_u64())
        .max()
        .unwrap_or(0);
    assert_eq!(max, 40, "stopped exactly at the frame limit");
    assert_eq!(stats["protocol_errors_sent"], 0);
}

#[test]
fn exit_status_of_the_command_is_passed_on() {
    let (output, stats) = run_syncbridge(&["--backend", "headless", "--", "sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7), "log:\n{}", stderr(&output));
    assert_eq!(stats.expect("stats")["child"]["exit_code"], 7);
}

#[test]
fn command_gets_wayland_display() {
    let (output, _) = run_syncbridge(&[
        "--backend",
        "headless",
        "--socket",
        "syncbridge-test-0",
        "--",
        "sh",
        "-c",
        "test \"$WAYLAND_DISPLAY\" = syncbridge-test-0 && test -S \"$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY\"",
    ]);
    assert_eq!(output.status.code(), Some(0), "log:\n{}", stderr(&output));
}

#[test]
fn nested_without_a_session_fails_clearly() {
    // run_syncbridge removes WAYLAND_DISPLAY and DISPLAY.
    let (output, stats) = run_syncbridge(&["--backend", "nested"]);
    assert_eq!(output.status.code(), Some(1));
    let log = stderr(&output);
    assert!(
        log.contains("needs a running X11 or Wayland session"),
        "log:\n{log}"
    );
    assert!(stats.is_none());
}

/// Without a usable KMS device (here `--drm-device /dev/null`, so the test means the same
/// on machines with and without a GPU or seat), `--backend tty` must fail at startup with
/// an error naming the tty backend, exit 1, and write no stats.
#[test]
fn tty_backend_without_kms_fails_clearly() {
    let (output, stats) = run_syncbridge(&["--backend", "tty", "--drm-device", "/dev/null"]);
    assert_eq!(output.status.code(), Some(1));
    let log = stderr(&output);
    assert!(log.contains("tty backend"), "log:\n{log}");
    assert!(stats.is_none());
}

#[test]
fn auto_backend_says_why_it_picked_headless() {
    let (output, _) = run_syncbridge(&["--backend", "auto", "--", "true"]);
    assert_eq!(output.status.code(), Some(0));
    let log = stderr(&output);
    assert!(log.contains("--backend auto:"), "log:\n{log}");
    assert!(log.contains("using headless"), "log:\n{log}");
}
