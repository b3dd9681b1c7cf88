//! What the two README commands need, checked before anything slow starts.
//!
//! Each requirement is something concrete that a later step uses (a command, a shared
//! library loaded at run time, a pkg-config module the build links against, a file),
//! with the Debian package that brings it and the step that needs it. The list is kept
//! apart from the install lists in `install.rs` on purpose: it is what must be true
//! after installing, so a package missing from those lists is reported here by name,
//! in one message, instead of minutes later as `pahole: not found` inside a kernel
//! module build.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd::have_command;
use crate::install;

/// One thing a later step needs.
enum Need {
    /// An executable on PATH (or in /usr/sbin, /sbin).
    Cmd(&'static str),
    /// A shared library that ldconfig knows (loaded with dlopen at run time).
    Lib(&'static str),
    /// A pkg-config module (the build links against it).
    PkgConfig(&'static str),
    /// A file, given as a path relative to a multiarch library directory
    /// (`/usr/lib/<triplet>/...`).
    MultiarchFile(&'static str),
    /// An absolute path.
    File(&'static str),
    /// A Python module of the system's python3.
    PyModule(&'static str),
}

struct Requirement {
    need: Need,
    package: &'static str,
    used_by: &'static str,
}

const fn req(need: Need, package: &'static str, used_by: &'static str) -> Requirement {
    Requirement {
        need,
        package,
        used_by,
    }
}

const BUILD: &str = "the build";
const VKMS: &str = "the VKMS module build";
const VNG: &str = "booting the VM (virtme-ng)";
const CLIENTS: &str = "the tests' clients";
const NESTED: &str = "the nested backend (winit under Xvfb)";
const VIRGL: &str = "the VM's virgl card (QEMU's gtk GL display on Xvfb)";

const REQUIREMENTS: &[Requirement] = &[
    req(Need::Cmd("pkg-config"), "pkg-config", BUILD),
    req(Need::PkgConfig("libudev"), "libudev-dev", BUILD),
    req(Need::PkgConfig("libseat"), "libseat-dev", BUILD),
    req(Need::PkgConfig("gbm"), "libgbm-dev", BUILD),
    req(Need::PkgConfig("libinput"), "libinput-dev", BUILD),
    req(Need::PkgConfig("pixman-1"), "libpixman-1-dev", BUILD),
    req(Need::PkgConfig("xkbcommon"), "libxkbcommon-dev", BUILD),
    req(Need::PkgConfig("egl"), "libegl-dev", BUILD),
    req(Need::PkgConfig("glesv2"), "libgles-dev", BUILD),
    req(Need::PkgConfig("libdrm"), "libdrm-dev", BUILD),
    req(Need::PkgConfig("wayland-server"), "libwayland-dev", BUILD),
    req(Need::Cmd("make"), "make", VKMS),
    req(Need::Cmd("pahole"), "dwarves", VKMS),
    req(Need::Cmd("depmod"), "kmod", VKMS),
    req(Need::Cmd("xz"), "xz-utils", VKMS),
    req(Need::Cmd("qemu-system-x86_64"), "qemu-system-x86", VNG),
    req(
        Need::MultiarchFile("qemu/ui-gtk.so"),
        "qemu-system-gui",
        VIRGL,
    ),
    // Debian 12: in qemu-system-gui; Debian 13: in qemu-system-modules-opengl (installed
    // where apt has it).
    req(
        Need::MultiarchFile("qemu/hw-display-virtio-gpu-gl.so"),
        "qemu-system-gui",
        VIRGL,
    ),
    req(Need::Cmd("Xvfb"), "xvfb", VIRGL),
    req(
        Need::MultiarchFile("dri/swrast_dri.so"),
        "libgl1-mesa-dri",
        "Xvfb's GLX and QEMU's GL display (Mesa llvmpipe)",
    ),
    req(Need::Cmd("busybox"), "busybox-static", VNG),
    req(Need::Cmd("file"), "file", VNG),
    req(Need::Cmd("strings"), "binutils", VNG),
    req(
        Need::File("/lib/systemd/systemd-udevd"),
        "udev",
        "the VM guest (loads virtio_console for vng's script I/O)",
    ),
    req(Need::Cmd("python3"), "python3", VNG),
    req(Need::PyModule("ensurepip"), "python3-venv", VNG),
    req(
        Need::Cmd("seatd-launch"),
        "seatd",
        "the tty tests and the demo",
    ),
    req(
        Need::Cmd("weston"),
        "weston",
        "the benchmark peer and nested tests",
    ),
    req(
        Need::Cmd("sway"),
        "sway",
        "the benchmark's peer on VKMS (sway 1.7, wlroots)",
    ),
    req(Need::Cmd("weston-simple-dmabuf-egl"), "weston", CLIENTS),
    req(
        Need::Cmd("weston-simple-shm"),
        "weston",
        "the minimal_compositor example's host test",
    ),
    req(Need::Cmd("wayland-info"), "wayland-utils", CLIENTS),
    req(
        Need::Cmd("eglinfo"),
        "mesa-utils",
        "the guest's EGL listing (vm_virgl)",
    ),
    req(
        Need::MultiarchFile("dri/virtio_gpu_dri.so"),
        "libgl1-mesa-dri",
        "GL clients on the VM's virgl card (Mesa virgl)",
    ),
    req(
        Need::MultiarchFile("dri/kms_swrast_dri.so"),
        "libgl1-mesa-dri",
        "GL clients in the VM (Mesa kms_swrast)",
    ),
    req(Need::Lib("libEGL_mesa.so.0"), "libegl-mesa0", CLIENTS),
    req(Need::Lib("libEGL.so.1"), "libegl1", CLIENTS),
    req(Need::Cmd("Xvfb"), "xvfb", NESTED),
    req(
        Need::Lib("libXtst.so.6"),
        "libxtst6",
        "the nested input test",
    ),
    req(Need::Lib("libX11.so.6"), "libx11-6", NESTED),
    req(Need::Lib("libX11-xcb.so.1"), "libx11-xcb1", NESTED),
    req(Need::Lib("libxcb.so.1"), "libxcb1", NESTED),
    req(Need::Lib("libXcursor.so.1"), "libxcursor1", NESTED),
    req(Need::Lib("libXrandr.so.2"), "libxrandr2", NESTED),
    req(Need::Lib("libXi.so.6"), "libxi6", NESTED),
    req(
        Need::Lib("libxkbcommon-x11.so.0"),
        "libxkbcommon-x11-0",
        NESTED,
    ),
    req(
        Need::MultiarchFile(crate::wlcs::RUNNER_IN_LIBDIR),
        "wlcs",
        "the WLCS conformance run",
    ),
];

/// Checks every requirement (plus the VM kernel's compiler, `compiler`, e.g. `gcc-12`,
/// and the pinned virtme-ng) and fails with one message that names every missing piece
/// and the package that brings it.
pub fn check(compiler: &str) -> Result<()> {
    let ldconfig = ldconfig_cache();
    let (mut missing, mut packages) = missing_pieces(REQUIREMENTS, &ldconfig);
    if !have_command(compiler) {
        missing.push(format!(
            "{compiler} (Debian package {compiler}; the compiler the VM kernel was built with, needed by {VKMS})"
        ));
        packages.push(compiler.to_string());
    }
    for tool in ["vng", "virtme-run"] {
        if !install::venv_dir().join("bin").join(tool).is_file() {
            missing.push(format!(
                "{tool} in {} (PyPI virtme-ng=={}; needed by {VNG})",
                install::venv_dir().join("bin").display(),
                install::VIRTME_NG_VERSION
            ));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!("{}", message(&missing, &packages))
}

/// The requirements of `reqs` that are not met, described, and their packages (each
/// once, in order).
fn missing_pieces(reqs: &[Requirement], ldconfig: &str) -> (Vec<String>, Vec<String>) {
    let mut missing = Vec::new();
    let mut packages: Vec<String> = Vec::new();
    for r in reqs.iter().filter(|r| !present(&r.need, ldconfig)) {
        missing.push(format!(
            "{} (Debian package {}; needed by {})",
            describe(&r.need),
            r.package,
            r.used_by
        ));
        if !packages.iter().any(|p| p == r.package) {
            packages.push(r.package.to_string());
        }
    }
    (missing, packages)
}

fn message(missing: &[String], packages: &[String]) -> String {
    format!(
        "missing before anything slow starts ({} piece(s)):\n  - {}\n\
         On Debian/Ubuntu: apt-get install --no-install-recommends {}\n\
         (cargo xtask install installs them; virtme-ng goes into a venv in the cache.)",
        missing.len(),
        missing.join("\n  - "),
        packages.join(" ")
    )
}

fn describe(need: &Need) -> String {
    match need {
        Need::Cmd(c) => format!("command `{c}`"),
        Need::Lib(l) => format!("library {l}"),
        Need::PkgConfig(m) => format!("pkg-config module {m}"),
        Need::MultiarchFile(f) => format!("/usr/lib/<arch>/{f}"),
        Need::File(f) => f.to_string(),
        Need::PyModule(m) => format!("python3 module {m}"),
    }
}

/// `ldconfig -p`: the libraries the dynamic loader finds.
fn ldconfig_cache() -> String {
    ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]
        .iter()
        .find_map(|p| Command::new(p).arg("-p").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// On `PATH`, or in an sbin directory that a non-root `PATH` often lacks.
fn have_executable(name: &str) -> bool {
    have_command(name)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(name).is_file())
}

fn present(need: &Need, ldconfig: &str) -> bool {
    match need {
        Need::Cmd(c) => have_executable(c),
        Need::Lib(l) => ldconfig
            .lines()
            .any(|line| line.trim_start().starts_with(&format!("{l} "))),
        Need::PkgConfig(m) => Command::new("pkg-config")
            .args(["--exists", m])
            .status()
            .is_ok_and(|s| s.success()),
        Need::MultiarchFile(f) => std::fs::read_dir("/usr/lib")
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .any(|e| e.path().join(f).is_file())
            })
            .unwrap_or(false),
        Need::File(f) => Path::new(f).exists(),
        Need::PyModule(m) => Command::new("python3")
            .args(["-c", &format!("import {m}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_piece_and_its_package_once() {
        let reqs = [
            req(Need::Cmd("sh"), "dash", "a shell"),
            req(Need::Cmd("syncbridge-no-such-tool"), "fake-tools", "test A"),
            req(Need::Lib("libsyncbridge-none.so.9"), "fake-tools", "test B"),
            req(
                Need::File("/nonexistent/syncbridge"),
                "fake-files",
                "test C",
            ),
        ];
        let (missing, packages) = missing_pieces(&reqs, &ldconfig_cache());
        assert_eq!(missing.len(), 3, "{missing:?}");
        assert!(
            missing[0].contains("`syncbridge-no-such-tool`") && missing[0].contains("fake-tools")
        );
        assert!(missing[1].contains("libsyncbridge-none.so.9"));
        assert!(
            missing[2].contains("/nonexistent/syncbridge") && missing[2].contains("fake-files")
        );
        assert_eq!(packages, ["fake-tools", "fake-files"]);
        let text = message(&missing, &packages);
        assert!(text.contains("apt-get install --no-install-recommends fake-tools fake-files"));
        assert!(!text.contains("dash"));
    }
}
