//! A syncbridge process on a KMS card under `seatd-launch`, for the VM's tty suites:
//! start it with `--stats-json`, connect test clients, stop it with SIGTERM and read its
//! stats back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::display::LONG;
use crate::client::TestClient;
use crate::kernel::card::{find_nodes, NodeKind};
use crate::kernel::require_vm;
use crate::kernel::virtio_gpu::{self, virtio_gpu_node, VirtioGpu};

pub fn syncbridge_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SYNCBRIDGE_BIN") {
        return PathBuf::from(bin);
    }
    // target/debug/deps/vm_tty-HASH -> target/debug/syncbridge
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("syncbridge"))
        .expect("target dir")
}

pub fn scratch() -> PathBuf {
    let dir = std::env::var_os("SYNCBRIDGE_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The first card of `driver` (e.g. "vkms"). The VM has two virtio_gpu cards: say which
/// with [`virtio_card`] (panics here for "virtio_gpu", so no test gets one by probe order).
pub fn card_of(driver: &str) -> PathBuf {
    assert_ne!(
        driver,
        virtio_gpu::DRIVER,
        "the VM has two virtio_gpu cards: use virtio_card() (the 2D one) or kernel::virtio_gpu::virgl()"
    );
    find_nodes(driver, NodeKind::Primary)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {driver} card in this VM"))
}

/// The 2D (non-virgl) virtio_gpu card: two heads, dumb buffers, the card every tty test
/// on virtio-gpu uses.
pub fn virtio_card() -> PathBuf {
    virtio_gpu_node(VirtioGpu::Plain, NodeKind::Primary)
}

#[derive(Debug)]
pub struct Compositor {
    child: Option<Child>,
    socket: PathBuf,
    stats: PathBuf,
    log: PathBuf,
}

impl Compositor {
    /// Start syncbridge on `card` with extra arguments; wait for its socket.
    pub fn start(name: &str, card: &Path, extra: &[&str]) -> Compositor {
        Self::start_wrapped(name, card, extra, &[])
    }

    /// [`Compositor::start`] with `wrapper` (a command that ends by exec'ing its
    /// arguments, e.g. [`crate::tty::without_private_dmabuf::WRAPPER`]) in front of
    /// `seatd-launch`.
    pub fn start_wrapped(name: &str, card: &Path, extra: &[&str], wrapper: &[&str]) -> Compositor {
        require_vm();
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/xdg-runtime"));
        let _ = std::fs::create_dir_all(&runtime);
        let socket_name = format!("wayland-tty-{name}");
        let socket = runtime.join(&socket_name);
        let _ = std::fs::remove_file(&socket);
        let stats = scratch().join(format!("tty-{name}.json"));
        let log = scratch().join(format!("tty-{name}.log"));
        let _ = std::fs::remove_file(&stats);
        remove_stale_seatd_socket();
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg("seatd-launch");
                cmd
            }
            None => Command::new("seatd-launch"),
        };
        cmd.arg("--")
            .arg(syncbridge_bin())
            .args(["--backend", "tty", "--drm-device"])
            .arg(card)
            .args([
                "--socket",
                &socket_name,
                "--stats-interval",
                "0",
                "--stats-json",
            ])
            .arg(&stats)
            .args(extra)
            .args(["--", "sleep", "600"])
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("RUST_LOG", "info,syncbridge_compositor::backend::tty=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup"))
            .stderr(log_file);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("spawning seatd-launch");
        let mut c = Compositor {
            child: Some(child),
            socket,
            stats,
            log,
        };
        let start = Instant::now();
        // Generous: the emulated VM shares a loaded host (start-up took over 30 s there).
        while !c.socket.exists() {
            if start.elapsed() > Duration::from_secs(120) {
                panic!("syncbridge did not open its socket; log:\n{}", c.log_text());
            }
            if let Some(child) = c.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("syncbridge exited ({status}); log:\n{}", c.log_text());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// Waits until the compositor logged libinput adding the device `name`.
    pub fn wait_device_added(&self, name: &str) {
        let needle = format!("input device added name={name} ");
        let start = Instant::now();
        while !self.log_text().contains(&needle) {
            assert!(
                start.elapsed() < LONG,
                "libinput did not add {name}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The syncbridge process (a child of seatd-launch), once it runs.
    pub fn pid(&self) -> Option<u32> {
        let launcher = self.child.as_ref()?.id();
        child_named(launcher, "syncbridge")
    }

    /// How many fds the syncbridge process has open now (0 if it is not found).
    pub fn fd_count(&self) -> usize {
        self.pid()
            .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
            .map_or(0, |d| d.count())
    }

    pub fn client(&self) -> TestClient {
        TestClient::connect(&self.socket).expect("connecting to syncbridge")
    }

    /// SIGTERM syncbridge (it writes its stats and exits; seatd-launch follows), wait,
    /// and return the stats document.
    pub fn stop(mut self) -> serde_json::Value {
        let child = self.child.take().expect("running");
        let launcher = child.id();
        let target = child_named(launcher, "syncbridge").unwrap_or(launcher);
        if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(target).unwrap_or(0)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        wait_child(child, &self.log);
        let text = std::fs::read_to_string(&self.stats).unwrap_or_else(|e| {
            panic!(
                "no stats at {}: {e}; log:\n{}",
                self.stats.display(),
                self.log_text()
            )
        });
        serde_json::from_str(&text).expect("stats JSON")
    }
}

/// The pid of a child process of `parent` whose command name is `comm`.
pub fn child_named(parent: u32, comm: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if name == comm && ppid == Some(parent) {
            return Some(pid);
        }
    }
    None
}

pub fn wait_child(mut child: Child, log: &Path) {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if start.elapsed() > Duration::from_secs(20) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "syncbridge did not exit on SIGTERM; log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

impl Drop for Compositor {
    fn drop(&mut self) {
        // A failed test: stop syncbridge, then the group (seatd removes its socket on
        // SIGTERM), then make sure.
        if let Some(mut child) = self.child.take() {
            let launcher = child.id();
            if let Some(pid) = child_named(launcher, "syncbridge")
                .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            std::thread::sleep(Duration::from_millis(500));
            if let Some(pid) = rustix::process::Pid::from_raw(launcher as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
                std::thread::sleep(Duration::from_millis(300));
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.wait();
            remove_stale_seatd_socket();
        }
    }
}

/// seatd refuses to start while a socket of a dead seatd is left over.
pub fn remove_stale_seatd_socket() {
    let sock = Path::new("/run/seatd.sock");
    let seatd_running = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "seatd")
            })
        })
        .unwrap_or(false);
    if sock.exists() && !seatd_running {
        let _ = std::fs::remove_file(sock);
    }
}
