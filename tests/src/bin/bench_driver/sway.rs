//! sway 1.7 (wlroots' DRM backend, pixman renderer) on VKMS: the peer of syncbridge's tty
//! backend in the same boot, on the same device.
//!
//! It runs the way a user session does: as an unprivileged user (`nobody`), with a seatd
//! of its own (started as root, its socket given to that user) opening the DRM device
//! for it through libseat, and a runtime directory that user owns.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{terminate, Res};

/// The bench's sway: no bar, no borders, no Xwayland, nothing but the client's windows
/// (tiled). Written to the runtime directory and passed with `-c`.
const CONFIG: &str = "\
default_border none
default_floating_border none
xwayland disable
";

const SEATD_SOCK: &str = "/run/seatd.sock";

/// A running sway and its seatd. Stopped (sway first, then seatd) by [`Sway::stop`].
pub struct Sway {
    seatd: Child,
    sway: Child,
    runtime: PathBuf,
    /// sway's Wayland socket, for the client's `--socket`.
    pub socket: PathBuf,
}

/// The uid and gid of `nobody` from /etc/passwd.
fn nobody() -> Res<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"nobody"))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .ok_or_else(|| "no user nobody in /etc/passwd".to_string())
}

fn wait_for(what: &str, child: &mut Child, mut ready: impl FnMut() -> bool) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited ({status}) before it was ready"));
        }
        if Instant::now() > deadline {
            return Err(format!("{what} was not ready within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The first `wayland-N` socket (not its `.lock`) in `dir`.
fn wayland_socket(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("wayland-") && !n.ends_with(".lock"))
        })
}

impl Sway {
    /// Starts seatd and sway on `card`; `log` takes both programs' output.
    pub fn start(name: &str, card: &Path, log: &std::fs::File) -> Res<Sway> {
        let (uid, gid) = nobody()?;
        let runtime = std::env::temp_dir().join(format!("bench-sway-{name}"));
        let _ = std::fs::remove_dir_all(&runtime);
        std::fs::create_dir_all(&runtime).map_err(|e| format!("{}: {e}", runtime.display()))?;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&runtime, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", runtime.display()))?;
        let config = runtime.join("config");
        std::fs::write(&config, CONFIG).map_err(|e| e.to_string())?;
        // seatd 0.7 (Debian 12) has no socket option: always /run/seatd.sock, as for the
        // scenarios' `seatd-launch`, which run one at a time.
        let seatd_sock = Path::new(SEATD_SOCK);
        let _ = std::fs::remove_file(seatd_sock);
        let out = || -> Res<(Stdio, Stdio)> {
            let a = log.try_clone().map_err(|e| e.to_string())?;
            let b = log.try_clone().map_err(|e| e.to_string())?;
            Ok((Stdio::from(a), Stdio::from(b)))
        };

        let (so, se) = out()?;
        let mut seatd = Command::new("seatd")
            .args(["-u", "nobody", "-g", "nogroup"])
            .stdin(Stdio::null())
            .stdout(so)
            .stderr(se)
            .spawn()
            .map_err(|e| format!("spawning seatd: {e}"))?;
        if let Err(e) = wait_for("seatd", &mut seatd, || seatd_sock.exists()) {
            terminate(&mut seatd);
            return Err(e);
        }

        let (so, se) = out()?;
        let spawned = Command::new("sway")
            .arg("-c")
            .arg(&config)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &runtime)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("LIBSEAT_BACKEND", "seatd")
            .env("SEATD_SOCK", seatd_sock)
            .env("WLR_BACKENDS", "drm")
            .env("WLR_RENDERER", "pixman")
            .env("WLR_LIBINPUT_NO_DEVICES", "1")
            .env("WLR_DRM_DEVICES", card)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(so)
            .stderr(se)
            .spawn();
        let mut sway = match spawned {
            Ok(c) => c,
            Err(e) => {
                terminate(&mut seatd);
                return Err(format!("spawning sway: {e}"));
            }
        };
        let mut socket = None;
        if let Err(e) = wait_for("sway", &mut sway, || {
            socket = wayland_socket(&runtime);
            socket.is_some()
        }) {
            terminate(&mut sway);
            terminate(&mut seatd);
            return Err(e);
        }
        Ok(Sway {
            seatd,
            sway,
            socket: socket.unwrap_or_default(),
            runtime,
        })
    }

    pub fn pid(&self) -> u32 {
        self.sway.id()
    }

    pub fn stop(mut self) {
        terminate(&mut self.sway);
        terminate(&mut self.seatd);
        let _ = std::fs::remove_dir_all(&self.runtime);
    }
}
