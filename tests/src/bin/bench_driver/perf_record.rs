//! `perf record -a` around one scenario, for `cargo xtask bench --perf`: where each
//! compositor's CPU per frame goes, the kernel's part and user space's, from samples of the
//! whole system on the same clock as the client's window.
//!
//! perf is the kernel's own profiler (Debian package `linux-perf`); the project does not
//! install it, and the bench only uses it when asked. The samples are taken on
//! `CLOCK_MONOTONIC` (`-k`), the presentation clock every compositor here reports, so
//! `cargo xtask bench` can keep exactly the samples inside the client's measured window.
//!
//! perf starts disabled (`-D -1`) and is enabled through its control fifo, whose `ack`
//! comes only once perf has listed the running processes and is sampling: under QEMU
//! without KVM that listing takes seconds, longer than a scenario when the host is busy,
//! and a recording that started late would hold nothing of the window. It writes to the
//! guest's tmpfs (the host's 9p share is slow to write) without collecting build-ids (the
//! split needs only addresses), and the file is copied out when it stops.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sampling frequency: the same on every scenario. perf may lower it when its interrupt
/// takes too long; the reader sums each sample's period (ns), not the sample count.
const FREQ: &str = "2999";

/// A running `perf record -a`; [`PerfRecord::stop`] ends it and copies its file out.
#[must_use = "perf keeps recording until stopped"]
#[derive(Debug)]
pub struct PerfRecord {
    child: Child,
    /// perf's file in the guest's tmpfs, and where it goes when stopped.
    local: PathBuf,
    data: PathBuf,
    dir: PathBuf,
}

/// Opens `path` (a fifo) without blocking, for writing or reading, retrying while a
/// writer finds no reader yet (`ENXIO`), until `deadline`.
fn open_fifo(path: &Path, write: bool, deadline: Instant) -> Result<std::fs::File, String> {
    loop {
        let r = std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        match r {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
}

impl PerfRecord {
    /// Starts recording every CPU, to end up in `data`, perf's own output in `log`, and
    /// returns once perf says it is sampling.
    pub fn start(data: &Path, log: &Path) -> Result<PerfRecord, String> {
        let dir = std::env::temp_dir().join(format!("bench-perf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (ctl, ack) = (dir.join("ctl"), dir.join("ack"));
        for fifo in [&ctl, &ack] {
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                fifo,
                rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            )
            .map_err(|e| format!("mkfifo {}: {e}", fifo.display()))?;
        }
        let local = dir.join("perf.data");
        let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("perf")
            .args([
                "record",
                "-a",
                "-q",
                "-B",
                "-N",
                "-e",
                "cpu-clock",
                "-F",
                FREQ,
            ])
            .args(["-k", "CLOCK_MONOTONIC", "-D", "-1"])
            .arg(format!(
                "--control=fifo:{},{}",
                ctl.display(),
                ack.display()
            ))
            .arg("-o")
            .arg(&local)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("perf not runnable ({e}): Debian package linux-perf"))?;
        let mut rec = PerfRecord {
            child,
            local,
            data: data.to_owned(),
            dir,
        };
        match rec.enable() {
            Ok(()) => Ok(rec),
            Err(e) => {
                super::terminate(&mut rec.child);
                Err(e)
            }
        }
    }

    /// Sends `enable` on the control fifo and waits (60 s at most) for perf's `ack`.
    fn enable(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ack = open_fifo(&self.dir.join("ack"), false, deadline)?;
        let mut ctl = open_fifo(&self.dir.join("ctl"), true, deadline)?;
        ctl.write_all(b"enable\n")
            .map_err(|e| format!("writing perf's control fifo: {e}"))?;
        let mut got = Vec::new();
        while !got.starts_with(b"ack") {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("perf record exited ({status}); see its log"));
            }
            if Instant::now() > deadline {
                return Err("perf record did not start sampling in 60 s".into());
            }
            let mut buf = [0u8; 16];
            match ack.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("reading perf's ack fifo: {e}")),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGINT (perf's way to end a recording and write its header), waits up to two
    /// minutes for it to finish writing, and copies the file out. Its exit status after
    /// SIGINT varies between perf versions; what counts is a file with samples in it.
    pub fn stop(mut self) -> Result<(), String> {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        let status = super::try_wait_for(&mut self.child, Duration::from_secs(120));
        if status.is_none() {
            super::terminate(&mut self.child);
            return Err("perf record did not finish writing in 120 s".into());
        }
        let copied = match std::fs::metadata(&self.local) {
            Ok(m) if m.len() > 0 => std::fs::copy(&self.local, &self.data)
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", self.data.display())),
            Ok(_) => Err(format!(
                "perf record left an empty file (status {status:?})"
            )),
            Err(e) => Err(format!("{}: {e}", self.local.display())),
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        copied
    }
}
