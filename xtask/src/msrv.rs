//! The MSRV check of `cargo xtask test`: every workspace crate that declares a
//! `rust-version` (the published ones) is checked with exactly that toolchain, so the
//! number in Cargo.toml stays true when a dependency raises its own.
//!
//! The version is read from the manifests (`cargo metadata`), never written here. The
//! toolchain comes from rustup: the one in `$RUSTUP_HOME` if it is there, else rustup
//! installs it (`--profile minimal`) into `$RUSTUP_HOME` when that is writable, or into
//! `<cache>/rustup` when it is not (the clean room lends the host's rustup read-only).
//! The check builds into `<target>/msrv`, away from the main build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cmd::{cache_dir, output_of, run_checked, target_dir, workspace_root};

/// One `rust-version` and the packages that declare it.
#[derive(Debug, PartialEq, Eq)]
pub struct Msrv {
    pub version: String,
    pub packages: Vec<String>,
}

/// The `rust-version`s declared by workspace members, from `cargo metadata` output:
/// one entry per distinct version, packages sorted.
pub fn declared(metadata: &serde_json::Value) -> Vec<Msrv> {
    let mut out: Vec<Msrv> = Vec::new();
    let packages = metadata["packages"].as_array().map(Vec::as_slice);
    for pkg in packages.unwrap_or_default() {
        let (Some(name), Some(version)) = (pkg["name"].as_str(), pkg["rust_version"].as_str())
        else {
            continue;
        };
        match out.iter_mut().find(|m| m.version == version) {
            Some(m) => m.packages.push(name.to_string()),
            None => out.push(Msrv {
                version: version.to_string(),
                packages: vec![name.to_string()],
            }),
        }
    }
    for m in &mut out {
        m.packages.sort();
    }
    out.sort_by(|a, b| a.version.cmp(&b.version));
    out
}

/// Whether `rustup toolchain list` output names the toolchain `version` (rustup calls
/// `1.86` `1.86-<host triple>`).
fn listed(list: &str, version: &str) -> bool {
    let prefix = format!("{version}-");
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|name| name.starts_with(&prefix))
}

fn rustup(home: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.env("RUSTUP_HOME", home)
        // Set by the rustup proxy that started this xtask: they name the outer toolchain.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .current_dir(workspace_root());
    cmd
}

fn has_toolchain(home: &Path, version: &str) -> bool {
    home.join("toolchains").is_dir()
        && output_of(rustup(home).args(["toolchain", "list"]))
            .is_ok_and(|list| listed(&list, version))
}

/// Whether this process can create files in `dir` (a read-only bind mount cannot).
fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".syncbridge-write-probe-{}", std::process::id()));
    let ok = std::fs::File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// The rustup home that has (or gets) toolchain `version`.
fn toolchain_home(version: &str) -> Result<PathBuf> {
    let default = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
        .context("neither RUSTUP_HOME nor HOME is set")?;
    if has_toolchain(&default, version) {
        return Ok(default);
    }
    let home = if writable(&default) {
        default
    } else {
        let own = cache_dir().join("rustup");
        std::fs::create_dir_all(&own).with_context(|| format!("creating {}", own.display()))?;
        if has_toolchain(&own, version) {
            return Ok(own);
        }
        println!(
            "xtask: msrv: {} is read-only; installing Rust {version} into {}",
            default.display(),
            own.display()
        );
        own
    };
    println!("xtask: msrv: rustup toolchain install {version} --profile minimal");
    run_checked(rustup(&home).args([
        "toolchain",
        "install",
        version,
        "--profile",
        "minimal",
        "--no-self-update",
    ]))
    .with_context(|| format!("installing Rust {version} with rustup"))?;
    Ok(home)
}

/// Checks every crate that declares a `rust-version` with that toolchain. Returns one
/// line per version for the summary.
pub fn check() -> Result<Vec<String>> {
    let metadata = output_of(
        Command::new(env!("CARGO"))
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(workspace_root()),
    )
    .context("cargo metadata")?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).context("parsing cargo metadata")?;
    let declared = declared(&metadata);
    if declared.is_empty() {
        bail!("no workspace crate declares a rust-version");
    }
    let mut lines = Vec::new();
    for msrv in declared {
        let t = Instant::now();
        let home = toolchain_home(&msrv.version)?;
        let install_secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut cmd = rustup(&home);
        cmd.args([
            "run",
            &msrv.version,
            "cargo",
            "check",
            "--locked",
            "--target-dir",
        ])
        .arg(target_dir().join("msrv"))
        .env_remove("CARGO_TARGET_DIR");
        for p in &msrv.packages {
            cmd.args(["-p", p]);
        }
        println!(
            "xtask: msrv: Rust {} (rust-version of {}): cargo check",
            msrv.version,
            msrv.packages.join(", ")
        );
        run_checked(&mut cmd).with_context(|| {
            format!(
                "{} do not build with Rust {}, their rust-version",
                msrv.packages.join(", "),
                msrv.version
            )
        })?;
        let line = format!(
            "Rust {} builds {} (toolchain {:.1}s, check {:.1}s)",
            msrv.version,
            msrv.packages.join(", "),
            install_secs,
            t.elapsed().as_secs_f64()
        );
        println!("xtask: msrv: {line}");
        lines.push(line);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_groups_members_by_rust_version() {
        let meta = serde_json::json!({"packages": [
            {"name": "syncbridge-protocols", "rust_version": "1.86"},
            {"name": "xtask", "rust_version": null},
            {"name": "syncbridge-bridge", "rust_version": "1.86"},
            {"name": "other", "rust_version": "1.80"},
        ]});
        assert_eq!(
            declared(&meta),
            vec![
                Msrv {
                    version: "1.80".into(),
                    packages: vec!["other".into()]
                },
                Msrv {
                    version: "1.86".into(),
                    packages: vec!["syncbridge-bridge".into(), "syncbridge-protocols".into()]
                },
            ]
        );
        assert!(declared(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn toolchain_list_matching() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    1.86-x86_64-unknown-linux-gnu\n";
        assert!(listed(list, "1.86"));
        assert!(!listed(list, "1.8"));
        assert!(!listed(list, "1.85"));
        assert!(!listed("1.86.0-x86_64-unknown-linux-gnu\n", "1.86"));
    }
}
