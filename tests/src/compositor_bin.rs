//! The real `syncbridge` binary as a child process of a test: a private runtime dir, a
//! named socket, the stats JSON on stop, and its fd count and RSS from `/proc`.
//!
//! ```no_run
//! use syncbridge_tests::compositor_bin::{start_syncbridge, Options};
//! let rb = start_syncbridge("demo", &Options::headless(None));
//! println!("{} fds", rb.fd_count());
//! let (stats, _log) = rb.stop();
//! println!("{}", stats["frames_presented_total"]);
//! ```

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where tests write figures and logs (`$SYNCBRIDGE_SCRATCH`, else /tmp).
pub fn scratch() -> PathBuf {
    PathBuf::from(std::env::var_os("SYNCBRIDGE_SCRATCH").unwrap_or_else(|| "/tmp".into()))
}

/// The profile directory the running test was built into (`<target>/debug`), found from the
/// test executable itself (`<target>/debug/deps/<test>-<hash>`), so that a `CARGO_TARGET_DIR`
/// elsewhere (the clean room's) finds the binaries built beside it.
pub fn profile_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug")))
}

/// The binary: `$SYNCBRIDGE_BIN` (set by `cargo xtask test` for the VM), else `syncbridge` in
/// [`profile_dir`].
pub fn syncbridge_bin() -> PathBuf {
    let path = std::env::var_os("SYNCBRIDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("syncbridge"));
    assert!(
        path.exists(),
        "syncbridge binary {} missing (cargo build --workspace --bins; cargo xtask test builds it)",
        path.display()
    );
    path
}

/// A private XDG_RUNTIME_DIR for one compositor.
pub fn runtime_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let dir = base.join(format!("vm-compositor-{name}"));
    std::fs::create_dir_all(&dir).expect("runtime dir");
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    dir
}

/// How to start the binary.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--render-device`, if any.
    pub render_device: Option<PathBuf>,
    /// RLIMIT_NOFILE (soft, hard) to start it with; `None`: inherit.
    pub nofile: Option<(u64, u64)>,
    /// More arguments.
    pub extra_args: Vec<String>,
}

impl Options {
    /// `--backend headless`, with `render_device` if given.
    pub fn headless(render_device: Option<&Path>) -> Self {
        Self {
            render_device: render_device.map(Path::to_path_buf),
            nofile: None,
            extra_args: Vec::new(),
        }
    }
}

/// A running `syncbridge` (SIGTERM + stats on [`Running::stop`]; killed if dropped, e.g.
/// by a failing test, so it never outlives the test).
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// The socket path (for `TestClient::connect`).
    pub socket: PathBuf,
    stats: PathBuf,
    log: PathBuf,
    stopped: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `syncbridge --backend headless --stats-interval 0` on socket `wayland-test` in
/// [`runtime_dir`]`(name)`, and waits until it listens.
pub fn start_syncbridge(name: &str, opts: &Options) -> Running {
    let dir = runtime_dir(name);
    let socket_name = "wayland-test";
    let socket = dir.join(socket_name);
    let _ = std::fs::remove_file(&socket);
    let stats = scratch().join(format!("{name}-stats.json"));
    let _ = std::fs::remove_file(&stats);
    let log = scratch().join(format!("{name}.log"));
    let mut cmd = Command::new(syncbridge_bin());
    cmd.args([
        "--backend",
        "headless",
        "--stats-interval",
        "0",
        "--socket",
        socket_name,
    ]);
    if let Some(dev) = &opts.render_device {
        cmd.arg("--render-device").arg(dev);
    }
    cmd.arg("--stats-json")
        .arg(&stats)
        .args(&opts.extra_args)
        .env("XDG_RUNTIME_DIR", &dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    if let Some((soft, hard)) = opts.nofile {
        let limit = rustix::process::Rlimit {
            current: Some(soft),
            maximum: Some(hard),
        };
        // SAFETY: runs between fork and exec and only makes the setrlimit system call
        // (async-signal-safe, no allocation; `limit` was built before the fork).
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                    .map_err(std::io::Error::from)
            });
        }
    }
    let child = cmd.spawn().expect("start syncbridge");
    // A hang detector, not a speed check: under TCG on a loaded 2-core machine start-up
    // has taken over 30 s.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "syncbridge never listened; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Running {
        child,
        socket,
        stats,
        log,
        stopped: false,
    }
}

impl Running {
    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it still runs (not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its open fds now.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("the compositor's /proc/<pid>/fd")
            .count()
    }

    /// What its open fds point to (`/proc/<pid>/fd/*` link targets), sorted: for messages
    /// that say which fds a leak left behind.
    pub fn fd_targets(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|t| t.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Its RLIMIT_NOFILE soft limit now (`u64::MAX`: unlimited), from `/proc/<pid>/limits`.
    pub fn nofile_soft_limit(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/limits", self.pid()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .map_or(0, |v| v.parse().unwrap_or(u64::MAX))
    }

    /// Its resident set size in KiB (`VmRSS`: anonymous, file-backed and shared pages).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Its resident anonymous memory in KiB (`RssAnon`: heap, stacks, private maps), what a
    /// leak grows. Unlike `VmRSS` it leaves out code and data pages of the binary and its
    /// libraries, which fault in the first time a path runs, and mapped client buffers.
    pub fn anon_rss_kib(&self) -> u64 {
        self.status_kib("RssAnon:")
    }

    fn status_kib(&self, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait (it must exit 0), read the stats document.
    pub fn stop(mut self) -> (serde_json::Value, String) {
        // SAFETY: kill(2) on the pid of our own child process, which has not been reaped.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to syncbridge");
        let status = self.child.wait().expect("wait for syncbridge");
        self.stopped = true;
        let log = self.log();
        assert!(status.success(), "syncbridge exit {status}; log:\n{log}");
        let text = std::fs::read_to_string(&self.stats)
            .unwrap_or_else(|e| panic!("stats JSON {}: {e}; log:\n{log}", self.stats.display()));
        (serde_json::from_str(&text).expect("stats JSON"), log)
    }
}

/// Waits (bounded) until `f` holds; the bound is a liveness limit, not a speed assertion.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
