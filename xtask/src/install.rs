//! Installing what the project needs, on Debian and Ubuntu (apt, and pip into a venv in
//! the cache), and saying clearly what is missing elsewhere.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{cache_dir, have_command, output_of, run_checked};

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

/// What the real-kernel VM needs on the host: QEMU, busybox for virtme-ng's initramfs,
/// kmod for depmod, a compiler for the out-of-tree VKMS module, python's venv for
/// virtme-ng. The kernel itself is downloaded and extracted into the cache, not
/// installed (see `kernel.rs`).
const VM: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "gcc-12",
    "make",
    "xz-utils",
    "python3-venv",
];

/// Real clients and runtime pieces the tests use: seatd for a seat on VKMS, weston's
/// demo clients (and Weston 10 itself, the benchmark peer and a nested-backend host),
/// wayland-info, Mesa (kms_swrast in the VM), Xvfb for the nested backend, and python3
/// with libXtst to drive Xvfb's fake input in the nested input test.
const RUNTIME: &[&str] = &[
    "seatd",
    "weston",
    "wayland-utils",
    "libgl1-mesa-dri",
    "libegl-mesa0",
    "libegl1",
    "xvfb",
    "python3",
    "libxtst6",
];

/// Installs every package group and virtme-ng. Idempotent and quick when nothing is
/// missing.
pub fn install_all() -> Result<()> {
    let t = std::time::Instant::now();
    let all: Vec<&str> = BUILD.iter().chain(VM).chain(RUNTIME).copied().collect();
    apt_install(&all)?;
    ensure_virtme_ng()?;
    println!(
        "xtask: install: everything present ({:.1}s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn is_debian_like() -> bool {
    have_command("apt-get") && have_command("dpkg-query")
}

fn missing_packages(pkgs: &[&str]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${db:Status-Abbrev}", p])
                .output();
            !matches!(out, Ok(o) if o.status.success() && o.stdout.starts_with(b"ii"))
        })
        .map(|p| p.to_string())
        .collect()
}

/// The command prefix that gives us root for apt: nothing when we are root, `sudo -n`
/// when it works without a password prompt.
fn root_prefix() -> Result<Vec<String>> {
    if rustix_is_root() {
        return Ok(vec![]);
    }
    if have_command("sudo") {
        return Ok(vec!["sudo".into(), "-n".into()]);
    }
    bail!("installing packages needs root: run as root or install sudo")
}

fn rustix_is_root() -> bool {
    // `id -u` avoids a libc dependency in xtask.
    output_of(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

/// `apt-get update`, as root (directly or through `sudo -n`).
pub fn apt_update() -> Result<()> {
    let mut argv = root_prefix()?;
    argv.extend([
        "apt-get".to_string(),
        "update".to_string(),
        "-q".to_string(),
    ]);
    run_checked(Command::new(&argv[0]).args(&argv[1..])).context("apt-get update")
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    if !is_debian_like() {
        eprintln!(
            "xtask: install: not a Debian/Ubuntu system (no apt-get/dpkg-query). Install the equivalents of these Debian packages yourself:\n  {}\n  and `pip install virtme-ng`. Continuing; steps that need them will fail with their names.",
            pkgs.join(" ")
        );
        return Ok(());
    }
    let missing = missing_packages(pkgs);
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: install: apt-get install {}", missing.join(" "));
    let prefix = root_prefix()?;
    let apt = |args: &[&str]| -> Result<()> {
        let mut argv: Vec<String> = prefix.clone();
        argv.push("apt-get".into());
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_checked(&mut cmd)
    };
    apt(&["update", "-q"]).context("apt-get update")?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    apt(&args).context("apt-get install")?;
    Ok(())
}

/// Path of the `vng` command: on PATH, else in our venv (installed on demand).
pub fn vng_path() -> std::path::PathBuf {
    let venv = cache_dir().join("venv").join("bin").join("vng");
    if venv.is_file() {
        return venv;
    }
    std::path::PathBuf::from("vng")
}

fn ensure_virtme_ng() -> Result<()> {
    if have_command("vng") || cache_dir().join("venv/bin/vng").is_file() {
        return Ok(());
    }
    let venv = cache_dir().join("venv");
    println!(
        "xtask: install: virtme-ng from PyPI into {}",
        venv.display()
    );
    std::fs::create_dir_all(cache_dir())?;
    run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("python3 -m venv (Debian: apt-get install python3-venv)")?;
    run_checked(Command::new(venv.join("bin/pip")).args(["install", "-q", "virtme-ng"]))
        .context("pip install virtme-ng")?;
    Ok(())
}
