//! Small process helpers shared by the xtask commands.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{bail, Context, Result};

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Where downloaded kernels, the built VKMS module and the virtme-ng venv live:
/// `$SYNCBRIDGE_CACHE`, else `$XDG_CACHE_HOME/syncbridge`, else `~/.cache/syncbridge`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYNCBRIDGE_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("syncbridge");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("syncbridge")
}

/// Runs `cmd`, inheriting stdio; fails with the command line on a non-zero exit.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout as a string (stderr inherited).
pub fn output_of(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with stdout and stderr merged line by line through `on_line` (which
/// also echoes them), returning the exit code (-1 when killed by a signal).
// std::io::pipe is Rust 1.87. xtask builds with the development toolchain only; the MSRV
// (clippy.toml, checked by `msrv.rs`) covers the library crates adopters build.
#[allow(clippy::incompatible_msrv)]
pub fn run_streaming(cmd: &mut Command, on_line: impl FnMut(&str)) -> Result<i32> {
    Ok(run_streaming_spawned(cmd, |_| {}, on_line)?
        .code()
        .unwrap_or(-1))
}

/// [`run_streaming`], calling `on_spawn` with the child's pid once it runs, and returning
/// the whole exit status (to tell a signal from a code).
#[allow(clippy::incompatible_msrv)]
pub fn run_streaming_spawned(
    cmd: &mut Command,
    on_spawn: impl FnOnce(u32),
    mut on_line: impl FnMut(&str),
) -> Result<ExitStatus> {
    let (reader, writer) = std::io::pipe().context("pipe")?;
    let writer2 = writer.try_clone().context("dup pipe")?;
    cmd.stdout(writer).stderr(writer2);
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    on_spawn(child.id());
    // Drop our copies of the write ends (held by `cmd`) so EOF arrives when the child exits.
    drop(std::mem::replace(cmd, Command::new("true")));
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap_or_default();
        println!("{line}");
        on_line(&line);
    }
    child.wait().context("waiting for child")
}

/// How a process ended, in words: `exit code 3`, or `killed by signal 11 (SIGSEGV)`.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => {
            let name = match sig {
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("killed by signal {sig}{name}")
        }
        (None, None) => format!("{status}"),
    }
}

/// Whether `name` is an executable on PATH.
pub fn have_command(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false)
}
