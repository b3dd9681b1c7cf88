//! The X display with GLX that QEMU's GL display (`-display gtk,gl=on`) draws on, so the
//! VM's virgl card (`virtio-gpu-gl-pci`) has the host's Mesa (llvmpipe) to render with.
//!
//! Each VM boot starts its own Xvfb: Xvfb picks a free display number itself
//! (`-displayfd`, so several VMs can run at once without racing for one) and writes it
//! once it accepts connections. [`GlDisplay`] owns the Xvfb process and kills it when
//! dropped, on every exit path of the boot (success, error, panic); Xvfb also gets
//! SIGKILL from the kernel if xtask itself dies without unwinding (parent-death signal).
//! A Ctrl-C reaches it directly (same process group).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long Xvfb may take to accept connections (it is up in well under a second on an
/// idle machine; the bound is for a heavily loaded one).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Xvfb with GLX, owned: dropping it kills the server.
#[derive(Debug)]
pub struct GlDisplay {
    child: Child,
    display: String,
    log: PathBuf,
}

impl GlDisplay {
    /// Starts `Xvfb -displayfd 1 +extension GLX` and waits until it reports its display
    /// number. Fails, with Xvfb's own messages, when it cannot start.
    pub fn start(log: PathBuf) -> Result<GlDisplay> {
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("creating the Xvfb log {}", log.display()))?;
        let mut cmd = Command::new("Xvfb");
        cmd.args(["-displayfd", "1", "+extension", "GLX", "-nolisten", "tcp"])
            .args(["-screen", "0", "1280x1024x24"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .context("starting Xvfb for the VM's GL display (Debian package xvfb)")?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("Xvfb: no stdout pipe");
        };
        // The display number comes as one line on stdout (fd 1) when the server is ready;
        // read it on a thread so a hung Xvfb cannot hang the boot.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
        });
        let number = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line.trim().parse::<u32>().ok(),
            _ => None,
        };
        let mut display = GlDisplay {
            child,
            display: String::new(),
            log,
        };
        let Some(number) = number else {
            let status = display.child.try_wait().ok().flatten();
            let messages = std::fs::read_to_string(&display.log).unwrap_or_default();
            bail!(
                "Xvfb (the X server QEMU's GL display draws on, for the VM's virgl card) did not start \
                 within {}s ({}). Its messages:\n{}",
                START_TIMEOUT.as_secs(),
                status.map_or("still running".to_string(), |s| format!("exited: {s}")),
                messages.trim_end()
            );
        };
        display.display = format!(":{number}");
        Ok(display)
    }

    /// The `DISPLAY` value for clients, e.g. `:3`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The last `lines` lines Xvfb (and the GL clients on it) wrote to its log so far.
    pub fn messages_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// CPU time (user + system) Xvfb has used so far, from `/proc`.
    pub fn cpu_time(&self) -> Option<Duration> {
        proc_cpu_time(self.child.id())
    }
}

impl Drop for GlDisplay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Utime + stime of process `pid`, from `/proc/PID/stat` (clock ticks of 1/100 s, the
/// value every Linux architecture xtask runs on uses for USER_HZ).
fn proc_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// CPU time (user + system) of this process's waited-for children so far (QEMU and
/// virtme-ng once a VM run has ended), from `/proc/self/stat`.
pub fn children_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17.
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(Duration::from_millis((cutime + cstime) * 10))
}

/// Asks the kernel to SIGKILL the child when the thread that spawned it exits, so an
/// xtask killed outright (SIGKILL, no unwinding, no Drop) leaves no Xvfb behind.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; it only makes one
    // prctl(PR_SET_PDEATHSIG) system call, which is async-signal-safe, touches no
    // memory shared with the parent and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_parses() {
        assert!(proc_cpu_time(std::process::id()).is_some());
        assert!(children_cpu_time().is_some());
    }
}
