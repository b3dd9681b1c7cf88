//! Installing what the project needs, on Debian and Ubuntu (apt, and pip into a venv in
//! the cache), then checking that it is all there (see `preflight.rs`) before anything
//! slow starts.
//!
//! The package lists here say what to install; `preflight.rs` says, independently, which
//! commands, libraries and files must exist afterwards and which package brings each. A
//! package dropped from a list below therefore shows up as a named missing piece right
//! after this step, not as a failure deep inside a build minutes later.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{cache_dir, have_command, output_of, run_checked};
use crate::{kernel, preflight};

/// -dev packages the smithay build links against.
const BUILD: &[&str] = &[
    "pkg-config",
    "libudev-dev",
    "libseat-dev",
    "libgbm-dev",
    "libinput-dev",
    "libpixman-1-dev",
    "libxkbcommon-dev",
    "libegl-dev",
    "libgles-dev",
    "libdrm-dev",
    "libwayland-dev",
];

/// What the real-kernel VM needs on the host: QEMU; busybox for virtme-ng's initramfs;
/// kmod for depmod; make, xz and pahole (dwarves: the kernel has BTF for modules, so
/// the out-of-tree VKMS build runs it) for the VKMS module; python's venv for
/// virtme-ng; `file` and `strings` (binutils), which virtme-ng runs on the kernel;
/// udev, because the guest's root is the host's and virtme-ng's init starts the host's
/// systemd-udevd, which loads virtio_console (without it vng has no script I/O and
/// exits 255); qemu-system-gui for the virgl card (`virtio-gpu-gl-pci` and the gtk
/// display with GL that it renders through; Debian 13 moves the GL modules into
/// qemu-system-modules-opengl, see `VM_WHERE_AVAILABLE`). The compiler the kernel was built with (gcc-12 for Debian 12's kernel)
/// is added by `install_all`, read from the headers package. The kernel itself is
/// downloaded and extracted into the cache, not installed (see `kernel.rs`).
const VM: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-gui",
    "busybox-static",
    "kmod",
    "make",
    "xz-utils",
    "dwarves",
    "python3-venv",
    "file",
    "binutils",
    "udev",
];

/// VM packages that only some suites have: Debian 13 splits QEMU's GL modules
/// (`virtio-gpu-gl-pci`, the GL displays) out of qemu-system-gui. Installed where apt
/// has them; the preflight checks the module file itself either way.
const VM_WHERE_AVAILABLE: &[&str] = &["qemu-system-modules-opengl"];

/// Real clients and runtime pieces the tests use: seatd for a seat on VKMS, weston's
/// demo clients (and Weston itself, the benchmark peer and a nested-backend host), sway
/// (the benchmark peer on VKMS),
/// wayland-info, Mesa (kms_swrast and virgl in the VM), mesa-utils (eglinfo in the VM),
/// Xvfb for the nested backend and the VM's GL display, python3 with
/// libXtst to drive Xvfb's fake input in the nested input test, and the X11 client
/// libraries winit loads at run time (dlopen, so nothing links against them).
const RUNTIME: &[&str] = &[
    "seatd",
    "weston",
    // The benchmark's peer on VKMS (wlroots' DRM backend with pixman, as a user session).
    "sway",
    "wayland-utils",
    "libgl1-mesa-dri",
    "libegl-mesa0",
    "libegl1",
    "mesa-utils",
    "xvfb",
    "python3",
    "libxtst6",
    "libx11-6",
    "libx11-xcb1",
    "libxcb1",
    "libxcursor1",
    "libxrandr2",
    "libxi6",
    "libxkbcommon-x11-0",
    // WLCS, the Wayland conformance suite's runner (the compositor side is
    // wlcs_syncbridge).
    "wlcs",
];

/// The virtme-ng release the VM is known to boot with (tested on Debian 12 and 13).
/// Installed exactly, into our own venv, whatever `vng` the system may have.
pub const VIRTME_NG_VERSION: &str = "1.42";

/// Every package of the fixed lists (for the clean room's before-install report).
pub fn listed_packages() -> Vec<&'static str> {
    BUILD.iter().chain(VM).chain(RUNTIME).copied().collect()
}

/// Installs every package group and virtme-ng, then checks that every requirement is
/// met. Idempotent and quick when nothing is missing.
pub fn install_all() -> Result<()> {
    let t = std::time::Instant::now();
    let debian = is_debian_like();
    // The kernel's compiler comes from the headers package of the VM kernel; without
    // apt there is nothing to read it from and the check below names gcc-12.
    let compiler = if debian {
        Some(kernel::compiler_package().context("finding the VM kernel's compiler")?)
    } else {
        None
    };
    let mut all: Vec<String> = listed_packages().iter().map(|s| s.to_string()).collect();
    all.extend(compiler.clone());
    if debian {
        let optional: Vec<String> = VM_WHERE_AVAILABLE.iter().map(|s| s.to_string()).collect();
        if optional.iter().any(|p| !is_installed(p)) {
            apt_update()?;
            let unknown = without_candidate(&optional);
            all.extend(optional.into_iter().filter(|p| !unknown.contains(p)));
        }
        apt_install(&all)?;
        ensure_virtme_ng()?;
    } else {
        eprintln!(
            "xtask: install: not a Debian/Ubuntu system (no apt-get/dpkg-query); checking for the equivalents of: {}",
            all.join(" ")
        );
    }
    preflight::check(compiler.as_deref().unwrap_or("gcc-12"))?;
    println!(
        "xtask: install: everything present ({:.1}s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn is_debian_like() -> bool {
    have_command("apt-get") && have_command("dpkg-query")
}

/// Whether dpkg has `pkg` installed.
pub fn is_installed(pkg: &str) -> bool {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", pkg])
        .output();
    matches!(out, Ok(o) if o.status.success() && o.stdout.starts_with(b"ii"))
}

/// The command prefix that gives us root for apt: nothing when we are root, `sudo -n`
/// when it works without a password prompt.
fn root_prefix() -> Result<Vec<String>> {
    if is_root() {
        return Ok(vec![]);
    }
    if have_command("sudo") {
        return Ok(vec!["sudo".into(), "-n".into()]);
    }
    bail!("installing packages needs root: run as root or install sudo")
}

pub fn is_root() -> bool {
    // `id -u` avoids a libc dependency in xtask.
    output_of(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

/// Runs `apt-get ARGS` as root (directly or through `sudo -n`), non-interactively.
fn apt(args: &[&str]) -> Result<()> {
    let mut argv = root_prefix()?;
    argv.push("apt-get".into());
    argv.extend(args.iter().map(|s| s.to_string()));
    run_checked(
        Command::new(&argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Set once this process has run `apt-get update`.
static APT_UPDATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `apt-get update`, as root (directly or through `sudo -n`), at most once per run.
pub fn apt_update() -> Result<()> {
    use std::sync::atomic::Ordering;
    if APT_UPDATED.load(Ordering::Relaxed) {
        return Ok(());
    }
    apt(&["update", "-q"]).context("apt-get update")?;
    APT_UPDATED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Packages in `pkgs` that apt has no installation candidate for (wrong distribution,
/// missing sources).
fn without_candidate(pkgs: &[String]) -> Vec<String> {
    // One `apt-cache policy` for all of them; unknown packages are simply absent from it.
    let policy = output_of(Command::new("apt-cache").arg("policy").args(pkgs)).unwrap_or_default();
    let with = with_candidate(&policy);
    pkgs.iter()
        .filter(|p| !with.iter().any(|w| w == *p))
        .cloned()
        .collect()
}

/// The packages of an `apt-cache policy` output that have an installation candidate.
fn with_candidate(policy: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<&str> = None;
    for line in policy.lines() {
        if !line.starts_with(char::is_whitespace) {
            current = line.strip_suffix(':');
        } else if let Some(c) = line.trim().strip_prefix("Candidate:") {
            if let (Some(p), true) = (current, c.trim() != "(none)") {
                out.push(p.to_string());
            }
        }
    }
    out
}

pub fn apt_install(pkgs: &[String]) -> Result<()> {
    let missing: Vec<String> = pkgs.iter().filter(|p| !is_installed(p)).cloned().collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: install: apt-get install {}", missing.join(" "));
    apt_update()?;
    let unknown = without_candidate(&missing);
    if !unknown.is_empty() {
        bail!(
            "apt has no installation candidate for: {} (this system's apt sources do not carry them; \
             the project is tried on Debian 12 and 13, see the README)",
            unknown.join(" ")
        );
    }
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    apt(&args).context("apt-get install")
}

/// The venv that holds the pinned virtme-ng.
pub fn venv_dir() -> PathBuf {
    cache_dir().join("venv")
}

/// Path of our `vng`. Call it with `venv_dir()/bin` first on PATH: vng runs
/// `virtme-run` and friends through PATH.
pub fn vng_path() -> PathBuf {
    venv_dir().join("bin").join("vng")
}

/// PATH with the venv's bin directory in front, for running vng.
pub fn vng_search_path() -> std::ffi::OsString {
    let mut dirs = vec![venv_dir().join("bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

fn ensure_virtme_ng() -> Result<()> {
    let venv = venv_dir();
    let stamp = venv.join(".virtme-ng-version");
    let installed = std::fs::read_to_string(&stamp).unwrap_or_default();
    if installed.trim() == VIRTME_NG_VERSION && vng_path().is_file() {
        return Ok(());
    }
    println!(
        "xtask: install: virtme-ng=={VIRTME_NG_VERSION} from PyPI into {}",
        venv.display()
    );
    std::fs::create_dir_all(cache_dir())?;
    if !venv.join("bin/pip").is_file() {
        run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("python3 -m venv (Debian: apt-get install python3-venv)")?;
    }
    run_checked(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        &format!("virtme-ng=={VIRTME_NG_VERSION}"),
    ]))
    .context("pip install virtme-ng")?;
    std::fs::write(&stamp, VIRTME_NG_VERSION)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::with_candidate;

    #[test]
    fn apt_cache_policy_of_several_packages() {
        let policy = "udev:\n  Installed: (none)\n  Candidate: 252.30-1~deb12u2\n  Version table:\n     252.30-1~deb12u2 500\n\
                      ghost:\n  Installed: (none)\n  Candidate: (none)\n\
                      file:\n  Installed: 1:5.44-3\n  Candidate: 1:5.44-3\n";
        assert_eq!(with_candidate(policy), ["udev", "file"]);
    }
}
