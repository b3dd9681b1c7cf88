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

use syncbridge_tests::bench_scene;
use syncbridge_tests::kernel::card::connectors;

use super::{terminate, Res};

/// The bench's sway: no bar, no borders, no Xwayland, nothing but the client's windows.
const CONFIG: &str = "\
default_border none
default_floating_border none
xwayland disable
";

/// Windows the config places (`bench-client --clients` goes up to 32 in the bench).
const PLACED_WINDOWS: usize = 32;

/// [`CONFIG`] plus a rule per window that floats it where syncbridge's cascade puts it on
/// an output `output_width` wide, so both compositors composite the same scene. Tiled,
/// sway would clip 32 windows of 128 px to columns a quarter as wide, and composite a
/// quarter of the pixels syncbridge does for the same clients. Written to the runtime
/// directory and passed with `-c`.
fn config_for(output_width: i32) -> String {
    let mut c = CONFIG.to_string();
    for i in 0..PLACED_WINDOWS {
        let (x, y) = bench_scene::window_position(i, output_width);
        c.push_str(&format!(
            "for_window [app_id=\"^{}$\"] floating enable, move position {x} px {y} px\n",
            bench_scene::app_id(i)
        ));
    }
    c
}

/// The width of the first mode of `card`'s first connector with one (sysfs lists the
/// preferred mode first): the output sway lights.
fn output_width(card: &Path) -> Res<i32> {
    connectors(card)
        .iter()
        .filter_map(|c| std::fs::read_to_string(c.join("modes")).ok())
        .filter_map(|modes| modes.lines().next()?.split('x').next()?.parse().ok())
        .next()
        .ok_or_else(|| format!("no connector of {} lists a mode in sysfs", card.display()))
}

const SEATD_SOCK: &str = "/run/seatd.sock";

/// A running sway and its seatd. Stopped (sway first, then seatd) by [`Sway::stop`].
pub struct Sway {
    seatd: Child,
    sway: Child,
    runtime: PathBuf,
    /// sway's Wayland socket, for the client's `--socket`.
    pub socket: PathBuf,
    /// The width of the output the config's window places are for.
    output_width: i32,
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

/// The first entry of `dir` whose file name satisfies `pred`.
fn file_in(dir: &Path, pred: impl Fn(&str) -> bool) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
}

/// The first `wayland-N` socket (not its `.lock`) in `dir`.
fn wayland_socket(dir: &Path) -> Option<PathBuf> {
    file_in(dir, |n| n.starts_with("wayland-") && !n.ends_with(".lock"))
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
        let output_width = output_width(card)?;
        std::fs::write(&config, config_for(output_width)).map_err(|e| e.to_string())?;
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
            output_width,
        })
    }

    /// How many of the `windows` bench windows sway shows floating at the place
    /// syncbridge's cascade gives them (from `swaymsg -t get_tree`, over sway's IPC
    /// socket in its runtime directory).
    pub fn windows_in_place(&self, windows: usize) -> Res<usize> {
        let ipc = file_in(&self.runtime, |n| {
            n.starts_with("sway-ipc.") && n.ends_with(".sock")
        })
        .ok_or_else(|| format!("no sway IPC socket in {}", self.runtime.display()))?;
        // Bounded: a sway that stopped answering its IPC socket must not hang the run.
        let out = Command::new("timeout")
            .args(["--kill-after=2", "10", "swaymsg", "-s"])
            .arg(&ipc)
            .args(["-t", "get_tree", "-r"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("swaymsg: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "swaymsg -t get_tree: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let tree: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("swaymsg -t get_tree printed no JSON: {e}"))?;
        let mut floating = Vec::new();
        floating_nodes(&tree, &mut floating);
        Ok((0..windows)
            .filter(|&i| {
                let id = bench_scene::app_id(i);
                let (x, y) = bench_scene::window_position(i, self.output_width);
                floating.iter().any(|n| {
                    n["app_id"].as_str() == Some(id.as_str())
                        && n["rect"]["x"].as_i64() == Some(i64::from(x))
                        && n["rect"]["y"].as_i64() == Some(i64::from(y))
                })
            })
            .count())
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

/// Every node of sway's tree that is a floating window, in `out`.
fn floating_nodes<'a>(node: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    for child in node["floating_nodes"].as_array().into_iter().flatten() {
        out.push(child);
        floating_nodes(child, out);
    }
    for child in node["nodes"].as_array().into_iter().flatten() {
        floating_nodes(child, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_floats_each_window_where_the_cascade_puts_it() {
        let c = config_for(1024);
        assert!(c.starts_with(CONFIG));
        assert!(c.contains(
            "for_window [app_id=\"^bench-client-1$\"] floating enable, move position 32 px 32 px\n"
        ));
        assert_eq!(c.matches("floating enable").count(), PLACED_WINDOWS);
    }

    #[test]
    fn floating_windows_are_found_at_any_depth() {
        let tree = serde_json::json!({"nodes": [{"nodes": [{"floating_nodes": [
            {"app_id": "bench-client-0", "rect": {"x": 0, "y": 0}}]}],
            "floating_nodes": [{"app_id": "bench-client-1"}]}]});
        let mut out = Vec::new();
        floating_nodes(&tree, &mut out);
        assert_eq!(out.len(), 2);
    }
}
