//! `cargo xtask clean-room -- COMMAND`: runs an xtask command (`test`, `run`, ...) the
//! way a new user's machine would, inside a Debian root made for this run.
//!
//! The root is built with mmdebstrap (`--variant=minbase` plus gcc and libc6-dev, the C
//! linker the Rust toolchain needs; nothing else). It gets the machine's configuration
//! and nothing of its software: resolv.conf, the locally added CA certificates
//! (`/usr/local/share/ca-certificates`, then update-ca-certificates), `/etc/pip.conf`, apt
//! configuration files that no package owns, and the environment this command was given
//! (less the variables that point at host paths). The Rust toolchain (`RUSTUP_HOME` and
//! the cargo binaries) is bind-mounted read-only; cargo's download cache
//! (`$CARGO_HOME/registry`) is shared; the workspace is bind-mounted read-write and the
//! build goes to a target directory of its own, `target/clean-room/<suite>`, emptied at
//! the start. The host's /usr, its packages and its `~/.cache/syncbridge` never enter.
//!
//! All mounts live in a private mount namespace (`unshare --mount`): they disappear with
//! the last process in it, whatever happened (a failure, a kill), so the root can be
//! deleted afterwards without ever reaching through a bind mount into the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cmd::{have_command, run_checked, run_streaming, workspace_root};
use crate::install;

#[derive(Args, Debug, Clone)]
pub struct CleanRoomArgs {
    /// Debian release of the clean root (bookworm = Debian 12, trixie = Debian 13).
    #[arg(long, default_value = "bookworm")]
    pub suite: String,
    /// Keep the root afterwards (in /var/tmp/syncbridge-clean-room) for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Reuse the clean room's target directory from an earlier run instead of emptying
    /// it (faster iterations; not what CI does).
    #[arg(long)]
    pub keep_target: bool,
    /// The xtask command to run inside, e.g. `test` or `run` (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

const BASE: &str = "/var/tmp/syncbridge-clean-room";

/// Host environment variables that must not follow into the root: they name host
/// paths, or are set by cargo and rustup for this very process.
fn leaks_host_paths(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "PWD",
        "OLDPWD",
        "SHELL",
        "TMPDIR",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "PKG_CONFIG_PATH",
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "SYNCBRIDGE_CACHE",
        "DISPLAY",
        "WAYLAND_DISPLAY",
    ];
    const PREFIXES: &[&str] = &["CARGO", "RUSTUP", "RUSTC", "PYENV", "XDG_", "SSH_", "DBUS_"];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// The toolchain to lend the root: rustup's home and the directory of the `cargo` on
/// PATH (rustup's proxies).
fn toolchain() -> Result<(PathBuf, PathBuf, PathBuf)> {
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".rustup"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"));
    let cargo_bin = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .find(|d| d.join("cargo").is_file() && d.join("rustc").is_file())
        })
        .context("no cargo on PATH")?;
    if !rustup_home.join("toolchains").is_dir() {
        bail!(
            "the clean room lends the host's rustup toolchain, but {} has none (set RUSTUP_HOME)",
            rustup_home.display()
        );
    }
    Ok((rustup_home, cargo_home, cargo_bin))
}

/// Mount points under `root` that this process can see (there should be none: the
/// command's mounts live in their own namespace).
fn mounts_under(root: &Path) -> Vec<String> {
    let prefix = root.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

/// Ends every process whose root directory is `root` (daemons a test left behind keep
/// the namespace, and so its mounts, alive).
fn kill_processes_in(root: &Path) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if std::fs::read_link(entry.path().join("root")).is_ok_and(|r| r == root) {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

fn remove_root(root: &Path) -> Result<()> {
    kill_processes_in(root);
    let mounts = mounts_under(root);
    if !mounts.is_empty() {
        bail!(
            "not removing {}: still mounted there: {}",
            root.display(),
            mounts.join(", ")
        );
    }
    std::fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))
}

/// Removes roots of earlier runs whose process is gone (a run killed before its cleanup).
fn sweep_stale_roots() {
    let Ok(dir) = std::fs::read_dir(BASE) else {
        return;
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().to_string();
        let pid = name.rsplit('-').next().unwrap_or_default();
        if !pid.is_empty() && Path::new("/proc").join(pid).exists() {
            continue;
        }
        if name.ends_with("-kept") {
            continue;
        }
        match remove_root(&entry.path()) {
            Ok(()) => println!(
                "xtask: clean-room: removed a stale root {}",
                entry.path().display()
            ),
            Err(e) => eprintln!("xtask: clean-room: {e:#}"),
        }
    }
}

/// Copies the machine's configuration (not its software) into the root.
fn copy_machine_config(root: &Path) -> Result<()> {
    let mut copied = Vec::new();
    let mut copy = |from: &Path| -> Result<()> {
        let to = root.join(from.strip_prefix("/").unwrap_or(from));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // resolv.conf may be a symlink into /run: copy the content.
        std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
        copied.push(from.display().to_string());
        Ok(())
    };
    copy(Path::new("/etc/resolv.conf"))?;
    for file in ["/etc/pip.conf"] {
        if Path::new(file).is_file() {
            copy(Path::new(file))?;
        }
    }
    if let Ok(dir) = std::fs::read_dir("/usr/local/share/ca-certificates") {
        for entry in dir.filter_map(|e| e.ok()).filter(|e| e.path().is_file()) {
            copy(&entry.path())?;
        }
    }
    // apt settings of this machine (proxies, date checks): files no package owns.
    if let Ok(dir) = std::fs::read_dir("/etc/apt/apt.conf.d") {
        for entry in dir.filter_map(|e| e.ok()).filter(|e| e.path().is_file()) {
            let owned = Command::new("dpkg")
                .arg("-S")
                .arg(entry.path())
                .output()
                .is_ok_and(|o| o.status.success());
            if !owned {
                copy(&entry.path())?;
            }
        }
    }
    println!(
        "xtask: clean-room: machine configuration copied: {}",
        copied.join(", ")
    );
    run_checked(
        Command::new("chroot")
            .arg(root)
            .args(["update-ca-certificates", "--fresh"])
            .stdout(std::process::Stdio::null()),
    )
    .context("update-ca-certificates in the root")
}

/// Prints what dpkg has installed in the root of the project's packages: none, but for
/// what the C toolchain itself brings.
fn report_packages(root: &Path) -> Result<()> {
    let admindir = root.join("var/lib/dpkg");
    let out = Command::new("dpkg-query")
        .arg(format!("--admindir={}", admindir.display()))
        .args(["-W", "-f=${db:Status-Abbrev} ${Package} ${Version}\n"])
        .output()
        .context("dpkg-query on the root")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text.lines().filter(|l| l.starts_with("ii")).collect();
    let ours: Vec<String> = installed
        .iter()
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip(1);
            let (name, version) = (words.next()?, words.next().unwrap_or("?"));
            install::listed_packages()
                .contains(&name)
                .then(|| format!("{name} {version}"))
        })
        .collect();
    println!(
        "xtask: clean-room: before the install step: {} packages installed (dpkg -l); of the project's {} packages: {}",
        installed.len(),
        install::listed_packages().len(),
        if ours.is_empty() {
            "none".to_string()
        } else {
            format!("{} (brought by gcc, the toolchain's C linker)", ours.join(", "))
        }
    );
    Ok(())
}

pub fn run(args: CleanRoomArgs) -> Result<i32> {
    let total = Instant::now();
    if !install::is_root() {
        bail!("the clean room needs root (mmdebstrap, mount namespaces, chroot)");
    }
    if !have_command("mmdebstrap") {
        println!("xtask: clean-room: installing mmdebstrap on the host (it builds the root)");
        install::apt_install(&["mmdebstrap".to_string()])?;
    }
    for tool in ["unshare", "chroot", "mount"] {
        if !have_command(tool) {
            bail!("the clean room needs `{tool}` (Debian: util-linux / coreutils / mount)");
        }
    }
    let (rustup_home, cargo_home, cargo_bin) = toolchain()?;
    let ws = workspace_root().canonicalize()?;
    let target = ws.join("target/clean-room").join(&args.suite);

    sweep_stale_roots();
    std::fs::create_dir_all(BASE)?;
    let root = PathBuf::from(BASE).join(format!("{}-{}", args.suite, std::process::id()));

    let t = Instant::now();
    println!(
        "xtask: clean-room: mmdebstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev {} {}",
        args.suite,
        root.display()
    );
    run_checked(
        Command::new("mmdebstrap")
            .args(["--quiet", "--variant=minbase"])
            .arg("--include=ca-certificates,gcc,libc6-dev")
            .arg(&args.suite)
            .arg(&root),
    )
    .context("mmdebstrap")?;
    copy_machine_config(&root)?;
    let create_secs = t.elapsed().as_secs_f64();
    println!("xtask: clean-room: root ready in {create_secs:.1}s");
    report_packages(&root)?;

    if !args.keep_target && target.exists() {
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("emptying {}", target.display()))?;
    }
    std::fs::create_dir_all(&target)?;
    let registry = cargo_home.join("registry");
    std::fs::create_dir_all(&registry)?;

    // Inside: a fixed PATH with the toolchain's proxies first, the host environment
    // less host paths, and a target directory of the clean room's own.
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !leaks_host_paths(k))
        // A value naming a host file the root does not have (PIP_FIND_LINKS=/opt/wheels)
        // would only point at nothing.
        .filter(|(_, v)| !v.starts_with('/') || root.join(&v[1..]).exists())
        .collect();
    env.extend([
        (
            "PATH".to_string(),
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                cargo_bin.display()
            ),
        ),
        ("HOME".to_string(), home().display().to_string()),
        ("RUSTUP_HOME".to_string(), rustup_home.display().to_string()),
        ("CARGO_HOME".to_string(), cargo_home.display().to_string()),
        ("CARGO_TARGET_DIR".to_string(), target.display().to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("SYNCBRIDGE_CLEAN_ROOM".to_string(), args.suite.clone()),
    ]);
    let env_args: Vec<String> = env
        .iter()
        .map(|(k, v)| sh_quote(&format!("{k}={v}")))
        .collect();
    let inner = format!(
        "cd {} && exec cargo xtask {}",
        sh_quote(&ws.display().to_string()),
        args.command
            .iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let r = |p: &Path| {
        sh_quote(
            &root
                .join(p.strip_prefix("/").unwrap_or(p))
                .display()
                .to_string(),
        )
    };
    let q = |p: &Path| sh_quote(&p.display().to_string());
    let bind = |from: &Path, ro: bool| {
        let mut s = format!(
            "mkdir -p {to} && mount --bind {from} {to}",
            from = q(from),
            to = r(from)
        );
        if ro {
            s.push_str(&format!(" && mount -o remount,bind,ro {}", r(from)));
        }
        s
    };
    let script = [
        format!("mount -t proc proc {}", r(Path::new("/proc"))),
        format!("mount --rbind /sys {}", r(Path::new("/sys"))),
        format!("mount --rbind /dev {}", r(Path::new("/dev"))),
        bind(&ws, false),
        bind(&rustup_home, true),
        bind(&cargo_bin, true),
        bind(&registry, false),
        format!(
            "exec chroot {} /usr/bin/env -i {} /bin/sh -c {}",
            q(&root),
            env_args.join(" "),
            sh_quote(&inner)
        ),
    ]
    .join("\n");

    let t = Instant::now();
    println!(
        "xtask: clean-room: running `cargo xtask {}` in Debian {} (mounts in a private namespace)",
        args.command.join(" "),
        args.suite
    );
    let mut last_summary: Option<String> = None;
    let code = run_streaming(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
            .arg(&script)
            .stdin(std::process::Stdio::null()),
        |line| {
            if crate::summary::is_closing_line(line) {
                last_summary = Some(line.to_string());
            }
        },
    )?;
    let command_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let cleanup = if args.keep {
        let kept = PathBuf::from(BASE).join(format!("{}-kept", args.suite));
        kill_processes_in(&root);
        if kept.exists() {
            let _ = remove_root(&kept);
        }
        std::fs::rename(&root, &kept)
            .map(|_| {
                println!("xtask: clean-room: root kept at {}", kept.display());
            })
            .map_err(anyhow::Error::from)
    } else {
        remove_root(&root)
    };
    if let Err(e) = &cleanup {
        println!("xtask: clean-room: cleanup failed: {e:#}");
    }
    println!(
        "xtask: clean-room: phases: create root {create_secs:.1}s, command {command_secs:.1}s, cleanup {:.1}s, total {:.1}s; command exit {code}",
        t.elapsed().as_secs_f64(),
        total.elapsed().as_secs_f64()
    );
    if let Some(line) = last_summary {
        println!("{line}");
    }
    Ok(if cleanup.is_err() && code == 0 {
        1
    } else {
        code
    })
}
