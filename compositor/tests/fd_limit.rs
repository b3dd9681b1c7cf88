//! The `syncbridge` binary under fd pressure: RLIMIT_NOFILE is raised at start-up and
//! given back to started commands, and running out of fds (EMFILE on `accept()`) pauses
//! accepting instead of ending the compositor.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{setrlimit, Resource, Rlimit};

const SYNCBRIDGE: &str = env!("CARGO_BIN_EXE_syncbridge");

/// `syncbridge --backend headless` with RLIMIT_NOFILE set to `soft`/`hard` before exec.
fn start(dir: &Path, soft: u64, hard: u64, extra: &[&str]) -> Child {
    let mut cmd = Command::new(SYNCBRIDGE);
    cmd.args([
        "--backend",
        "headless",
        "--socket",
        "wayland-fd",
        "--stats-json",
    ])
    .arg(dir.join("stats.json"))
    .args(extra)
    .env("XDG_RUNTIME_DIR", dir)
    .env_remove("WAYLAND_DISPLAY")
    .env_remove("DISPLAY")
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join("log")).expect("log file"));
    let limit = Rlimit {
        current: Some(soft),
        maximum: Some(hard),
    };
    // SAFETY: runs between fork and exec and only makes the setrlimit system call
    // (async-signal-safe, no allocation; `limit` was built before the fork).
    unsafe {
        cmd.pre_exec(move || setrlimit(Resource::Nofile, limit).map_err(std::io::Error::from));
    }
    cmd.spawn().expect("start syncbridge")
}

/// The log, without the terminal colour sequences tracing adds.
fn log_of(dir: &Path) -> String {
    let raw = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn wait_for_socket(dir: &Path, child: &mut Child) -> PathBuf {
    let socket = dir.join("wayland-fd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "syncbridge exited before listening; log:\n{}",
            log_of(dir)
        );
        assert!(
            Instant::now() < deadline,
            "never listened:\n{}",
            log_of(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    socket
}

/// Sends `wl_display.sync` (new callback id 2) without reading the answer.
fn send_sync(stream: &mut UnixStream) {
    let mut msg = Vec::with_capacity(12);
    msg.extend_from_slice(&1u32.to_ne_bytes()); // wl_display
    msg.extend_from_slice(&(12u32 << 16).to_ne_bytes()); // size 12, opcode 0 (sync)
    msg.extend_from_slice(&2u32.to_ne_bytes()); // new wl_callback
    stream.write_all(&msg).expect("send wl_display.sync");
}

/// Whether `wl_callback@2.done` arrives within `timeout` (the client was accepted and
/// dispatched).
fn sync_answered(stream: &mut UnixStream, timeout: Duration) -> bool {
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    let mut header = [0u8; 12];
    match stream.read_exact(&mut header) {
        Ok(()) => u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) == 2,
        Err(_) => false,
    }
}

fn stop(mut child: Child, dir: &Path) -> serde_json::Value {
    // SAFETY: kill(2) on our own, not yet reaped, child.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit {status}; log:\n{}", log_of(dir));
    let text = std::fs::read_to_string(dir.join("stats.json")).expect("stats JSON written");
    serde_json::from_str(&text).expect("stats JSON")
}

#[test]
fn running_out_of_fds_on_accept_pauses_accepting_and_never_exits() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 64 fds: the compositor's own take a few dozen at most, so ~40 connections exhaust it.
    let mut child = start(dir.path(), 64, 64, &[]);
    let socket = wait_for_socket(dir.path(), &mut child);

    let mut streams: Vec<UnixStream> = (0..90)
        .map(|i| UnixStream::connect(&socket).unwrap_or_else(|e| panic!("connect {i}: {e}")))
        .collect();
    for s in &mut streams {
        send_sync(s);
    }
    // Some were accepted and answered; the rest wait in the backlog while accept() fails.
    let mut answered = 0;
    for s in &mut streams {
        if sync_answered(s, Duration::from_millis(300)) {
            answered += 1;
        }
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "syncbridge exited when it ran out of fds; log:\n{}",
        log_of(dir.path())
    );
    assert!(
        answered > 0 && answered < streams.len(),
        "{answered} of {} answered: the limit was not reached; log:\n{}",
        streams.len(),
        log_of(dir.path())
    );
    let log = log_of(dir.path());
    assert!(
        log.contains("accepting a client failed"),
        "the EMFILE is logged:\n{log}"
    );

    // Free most of them: every connection still open must then be accepted and answered.
    let kept: Vec<UnixStream> = streams
        .drain(..)
        .enumerate()
        .filter_map(|(i, s)| (!(5..70).contains(&i)).then_some(s))
        .collect();
    let mut late = 0;
    for (i, mut s) in kept.into_iter().enumerate() {
        if i >= 5 {
            assert!(
                sync_answered(&mut s, Duration::from_secs(10)),
                "connection {i} from the backlog never answered; log:\n{}",
                log_of(dir.path())
            );
            late += 1;
        }
    }
    assert_eq!(late, 20);
    let mut fresh = UnixStream::connect(&socket).expect("connect after the pressure");
    send_sync(&mut fresh);
    assert!(sync_answered(&mut fresh, Duration::from_secs(10)));

    let stats = stop(child, dir.path());
    assert!(
        stats["clients"]["accept_paused"].as_u64() >= Some(1),
        "{stats:#}"
    );
    assert_eq!(stats["clients"]["connected"], 91, "{stats:#}");
    println!(
        "fd limit 64: {answered} of 90 clients accepted at once, accept paused {} times, all 91 served",
        stats["clients"]["accept_paused"]
    );
}

#[test]
fn the_soft_fd_limit_is_raised_and_commands_get_the_original_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let child = start(
        dir.path(),
        256,
        4096,
        &[
            "--",
            "sh",
            "-c",
            "test \"$(ulimit -Sn)\" = 256 && test \"$(ulimit -Hn)\" = 4096",
        ],
    );
    let output = child.wait_with_output().expect("wait");
    let log = log_of(dir.path());
    assert_eq!(
        output.status.code(),
        Some(0),
        "the command saw another limit than 256/4096; log:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("RLIMIT_NOFILE"))
        .unwrap_or_else(|| panic!("the limit is logged:\n{log}"));
    assert!(
        line.contains("soft=4096") && line.contains("was=256") && line.contains("hard=4096"),
        "raised to the hard limit: {line}"
    );
}
