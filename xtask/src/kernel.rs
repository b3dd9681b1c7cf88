//! The VM's kernel: Debian's linux-image-6.12, its headers and source, downloaded with
//! `apt-get download` and extracted into the cache (never installed on the host), plus
//! VKMS built out of tree from `linux-source-6.12` against the matching headers.
//!
//! Layout: `<cache>/kernel/<kver>/root/{boot,lib/modules/<kver>,usr/src/...}`; virtme-ng
//! finds the modules next to the image it boots.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::{cache_dir, have_command, output_of, run_checked};

/// Meta-packages that name the distribution's current 6.12 image: Debian 12 has a
/// 6.12-specific one; Debian 13's default kernel is 6.12, named by the generic one.
const METAS: &[&str] = &["linux-image-6.12-amd64", "linux-image-amd64"];

#[derive(Debug, Clone)]
pub struct VmKernel {
    pub kver: String,
    pub vmlinuz: PathBuf,
}

/// Returns a ready kernel, preparing the cache on first use (about 30 s: download,
/// extract, build VKMS, depmod).
pub fn prepare() -> Result<VmKernel> {
    let kver = kver()?;
    let dir = cache_dir().join("kernel").join(&kver);
    let root = dir.join("root");
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{kver}"));
    if dir.join(".complete").is_file() && vmlinuz.is_file() {
        return Ok(VmKernel { kver, vmlinuz });
    }
    let t = std::time::Instant::now();
    println!("xtask: kernel: preparing {kver} in {}", dir.display());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    std::fs::create_dir_all(&root)?;
    download(&kver, &debs)?;
    for entry in std::fs::read_dir(&debs)? {
        let deb = entry?.path();
        run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    }
    // Debian 13's image ships its modules in /usr/lib/modules (merged /usr); virtme-ng
    // and depmod look in <root>/lib/modules, as on a merged-/usr system.
    if root.join("usr/lib/modules").is_dir() && !root.join("lib").exists() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))
            .context("linking lib -> usr/lib in the kernel tree")?;
    }
    build_vkms(&kver, &dir, &root)?;
    std::fs::remove_dir_all(&debs)?;
    let _ = std::fs::remove_file(root.join("usr/src/linux-source-6.12.tar.xz"));
    std::fs::write(dir.join(".complete"), b"")?;
    println!("xtask: kernel: ready ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(VmKernel { kver, vmlinuz })
}

/// The VM kernel's version: `$SYNCBRIDGE_KVER`, else the distribution's 6.12.
pub fn kver() -> Result<String> {
    match std::env::var("SYNCBRIDGE_KVER") {
        Ok(v) => Ok(v),
        Err(_) => resolve_kver(),
    }
}

/// The compiler package the VM kernel's headers depend on (`gcc-12` for Debian 12's
/// 6.12, `gcc-14` for Debian 13's): the out-of-tree VKMS build must use the compiler
/// the kernel was built with.
pub fn compiler_package() -> Result<String> {
    let kver = kver()?;
    let headers = format!("linux-headers-{kver}");
    let deps = output_of(Command::new("apt-cache").args(["depends", &headers]))
        .with_context(|| format!("apt-cache depends {headers}"))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|d| {
            d.strip_prefix("gcc-")
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{headers} names no gcc-N compiler among its dependencies"))
}

/// `6.12.117+deb12-amd64` from a meta-package's dependency, or the newest one already
/// in the cache when apt is not available.
fn resolve_kver() -> Result<String> {
    if have_command("apt-cache") {
        for attempt in 0..2 {
            if attempt == 1 {
                // Package lists may be missing or stale on a fresh machine.
                crate::install::apt_update()?;
            }
            for meta in METAS {
                // Quietly: Debian 13 has no linux-image-6.12-amd64 (apt says so on stderr).
                let deps = Command::new("apt-cache")
                    .args(["depends", meta])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if let Some(kver) = deps
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
                    .find(|k| k.starts_with("6.12") && k.trim().ends_with("-amd64"))
                {
                    return Ok(kver.trim().to_string());
                }
            }
        }
    }
    let cached = cache_dir().join("kernel");
    if let Ok(dir) = std::fs::read_dir(&cached) {
        let mut found: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(".complete").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        found.sort();
        if let Some(k) = found.pop() {
            return Ok(k);
        }
    }
    bail!(
        "cannot find Debian's 6.12 kernel ({}): the VM needs Debian's 6.12 kernel image, headers and source \
         (apt sources with bookworm-security or bookworm-backports), or set SYNCBRIDGE_KVER to a \
         version already prepared in {}",
        METAS.join(" or "),
        cached.display()
    )
}

/// Downloads image, headers (arch + common), kbuild and source, all pinned to the same
/// Debian version so that the VKMS module matches the kernel.
fn download(kver: &str, debs: &Path) -> Result<()> {
    let image = format!("linux-image-{kver}");
    let show = output_of(Command::new("apt-cache").args(["show", &image]))?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .ok_or_else(|| anyhow!("apt-cache show {image}: no Version"))?
        .trim()
        .to_string();
    let base = kver.strip_suffix("-amd64").unwrap_or(kver);
    let pkgs = [
        image,
        format!("linux-headers-{kver}"),
        format!("linux-headers-{base}-common"),
        format!("linux-kbuild-{base}"),
        "linux-source-6.12".to_string(),
    ];
    let pinned: Vec<String> = pkgs.iter().map(|p| format!("{p}={version}")).collect();
    println!("xtask: kernel: apt-get download {}", pinned.join(" "));
    run_checked(
        Command::new("apt-get")
            .arg("download")
            .arg("-q")
            .args(&pinned)
            .current_dir(debs),
    )
    .context("apt-get download of the 6.12 kernel packages")?;
    Ok(())
}

/// Builds vkms.ko against the extracted headers and installs it into the extracted
/// module tree (`updates/`), then regenerates modules.dep so `modprobe vkms` works.
fn build_vkms(kver: &str, dir: &Path, root: &Path) -> Result<()> {
    let headers = root.join("usr/src").join(format!("linux-headers-{kver}"));
    // The arch headers' Makefile includes the common headers by absolute path; point it
    // at our extracted copy.
    let makefile = headers.join("Makefile");
    let text = std::fs::read_to_string(&makefile)?;
    let fixed = text.replace(
        "include /usr/src/",
        &format!("include {}/", root.join("usr/src").display()),
    );
    std::fs::write(&makefile, fixed)?;
    let src = dir.join("vkms-src");
    std::fs::create_dir_all(&src)?;
    run_checked(
        Command::new("tar")
            .arg("-xf")
            .arg(root.join("usr/src/linux-source-6.12.tar.xz"))
            .arg("-C")
            .arg(&src)
            .arg("linux-source-6.12/drivers/gpu/drm/vkms/"),
    )?;
    let vkms = src.join("linux-source-6.12/drivers/gpu/drm/vkms");
    run_checked(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&headers)
            .arg(format!("M={}", vkms.display()))
            .arg("CONFIG_DRM_VKMS=m")
            .arg("modules"),
    )
    .context("building vkms.ko")?;
    let updates = root.join("lib/modules").join(kver).join("updates");
    std::fs::create_dir_all(&updates)?;
    std::fs::copy(vkms.join("vkms.ko"), updates.join("vkms.ko"))?;
    let depmod = if Path::new("/sbin/depmod").exists() {
        "/sbin/depmod"
    } else {
        "depmod"
    };
    run_checked(Command::new(depmod).arg("-b").arg(root).arg(kver)).context("depmod")?;
    Ok(())
}
