//! The adopters' example compositor (`protocols/examples/minimal_compositor.rs`) as a child
//! process of a test: a private runtime dir, a named socket, and the summary line it prints
//! when `--exit-after-frames` ends it.
//!
//! ```no_run
//! use std::time::Duration;
//! use syncbridge_tests::example_bin::start_minimal;
//! let mc = start_minimal("demo", 3, None);
//! // ... connect a client to mc.socket and make it present 3 frames ...
//! let summary = mc.wait_exit(Duration::from_secs(120));
//! assert_eq!(summary.get("frames_presented"), 3);
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::compositor_bin::{profile_dir, runtime_dir, scratch};

/// The example binary: `$SYNCBRIDGE_MINIMAL_BIN` (set by `cargo xtask test` for the VM),
/// else `examples/minimal_compositor` in the test's own [`profile_dir`] (built by
/// `cargo xtask test` and by `cargo build --workspace --examples`).
pub fn minimal_compositor_bin() -> PathBuf {
    let path = std::env::var_os("SYNCBRIDGE_MINIMAL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("examples/minimal_compositor"));
    assert!(
        path.exists(),
        "example binary {} missing (cargo build -p syncbridge-protocols --example minimal_compositor)",
        path.display()
    );
    path
}

/// A running example compositor (killed if dropped, e.g. by a failing test).
#[derive(Debug)]
pub struct Minimal {
    child: Child,
    /// The socket path (for `TestClient::connect`).
    pub socket: PathBuf,
    /// Its XDG_RUNTIME_DIR (for external clients: `WAYLAND_DISPLAY` is [`SOCKET_NAME`]).
    pub runtime_dir: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    exited: bool,
}

/// The socket name the example listens on, inside [`Minimal::runtime_dir`].
pub const SOCKET_NAME: &str = "wayland-minimal-test";

impl Drop for Minimal {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the example with `--exit-after-frames frames` (and `--syncobj-device`) and waits
/// until it listens.
pub fn start_minimal(name: &str, frames: u64, syncobj_device: Option<&Path>) -> Minimal {
    let dir = runtime_dir(&format!("minimal-{name}"));
    let socket = dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&socket);
    let stdout = scratch().join(format!("minimal-{name}.out"));
    let stderr = scratch().join(format!("minimal-{name}.log"));
    let mut cmd = Command::new(minimal_compositor_bin());
    cmd.args(["--socket", SOCKET_NAME, "--exit-after-frames"])
        .arg(frames.to_string());
    if let Some(dev) = syncobj_device {
        cmd.arg("--syncobj-device").arg(dev);
    }
    cmd.env("XDG_RUNTIME_DIR", &dir)
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    let child = cmd.spawn().expect("start minimal_compositor");
    let mut mc = Minimal {
        child,
        socket,
        runtime_dir: dir,
        stdout,
        stderr,
        exited: false,
    };
    // A hang detector, not a speed check (TCG on a loaded machine is slow).
    let deadline = Instant::now() + Duration::from_secs(120);
    while !mc.socket.exists() {
        assert!(
            Instant::now() < deadline && matches!(mc.child.try_wait(), Ok(None)),
            "minimal_compositor never listened; {}",
            mc.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    mc
}

/// What the example printed when it exited: `key=value` pairs.
#[derive(Debug, Clone)]
pub struct Summary(HashMap<String, String>);

impl Summary {
    /// A numeric field (panics, with the summary, if absent).
    pub fn get(&self, key: &str) -> u64 {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {key} in the summary {self:?}"))
    }

    /// A text field (panics if absent).
    pub fn text(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in the summary {self:?}"))
    }
}

impl Minimal {
    /// Its stdout and stderr so far, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits until it exited on its own (`--exit-after-frames`; `limit` is a hang
    /// detector), checks it exited 0, and parses its summary line.
    pub fn wait_exit(mut self, limit: Duration) -> Summary {
        let deadline = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => panic!(
                    "minimal_compositor did not exit within {limit:?}; {}",
                    self.output()
                ),
                Err(e) => panic!("waiting for minimal_compositor: {e}"),
            }
        };
        self.exited = true;
        let out = self.output();
        assert!(status.success(), "minimal_compositor exit {status}; {out}");
        let line = std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("frames_presented="))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no summary line; {out}"));
        Summary(
            line.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}
