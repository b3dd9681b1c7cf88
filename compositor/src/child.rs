//! The client command given after `--`: started with WAYLAND_DISPLAY pointing at our
//! socket; its exit ends the compositor with the same status.

use std::{
    ffi::{OsStr, OsString},
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Command, ExitStatus},
};

use smithay::reexports::calloop::{channel, LoopHandle};

use crate::state::{ExitReason, State};

/// Errors starting the command.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// No command.
    #[error("empty command")]
    Empty,
    /// fork/exec failed.
    #[error("starting {command:?}: {source}")]
    Spawn {
        /// argv[0].
        command: OsString,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exit watcher could not be registered.
    #[error("watching the command's exit: {0}")]
    Watch(String),
}

/// The running (or finished) command.
#[derive(Debug, Clone)]
pub struct ChildStatus {
    /// argv, lossily converted for reports.
    pub argv: Vec<String>,
    /// Process id.
    pub pid: u32,
    /// Exit code once it exited (128 + signal number when killed by a signal).
    pub exit_code: Option<i32>,
}

/// Shell-style exit code of a status.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|sig| 128 + sig))
        .unwrap_or(1)
}

/// Start `argv` as a client of `socket_name`.
pub fn spawn(
    loop_handle: &LoopHandle<'static, State>,
    argv: &[OsString],
    socket_name: &OsStr,
) -> Result<ChildStatus, ChildError> {
    let (program, args) = argv.split_first().ok_or(ChildError::Empty)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env("WAYLAND_DISPLAY", socket_name)
        .env_remove("WAYLAND_SOCKET");
    let nofile = crate::fd_limit::original_for_children();
    // The compositor blocks SIGINT/SIGTERM to read them from a signalfd; the mask is
    // inherited across exec, so clear it or the command could not be interrupted.
    // SAFETY: the closure runs between fork and exec and only calls setrlimit, sigemptyset
    // and sigprocmask, which are async-signal-safe (no allocation: the limit is copied in
    // before the fork); `set` lives on the child's stack.
    unsafe {
        command.pre_exec(move || {
            // The compositor raised its RLIMIT_NOFILE; the command gets the original back.
            if let Some(limit) = &nofile {
                crate::fd_limit::restore_for_child(limit)?;
            }
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            if libc::sigemptyset(set.as_mut_ptr()) != 0
                || libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| ChildError::Spawn {
        command: program.clone(),
        source,
    })?;
    let pid = child.id();

    let (sender, receiver) = channel::channel::<std::io::Result<ExitStatus>>();
    loop_handle
        .insert_source(receiver, |event, _, state| {
            if let channel::Event::Msg(result) = event {
                let code = match result {
                    Ok(status) => exit_code(status),
                    Err(err) => {
                        tracing::warn!(%err, "waiting for the command failed");
                        1
                    }
                };
                tracing::info!(code, "command exited");
                if let Some(child) = state.child.as_mut() {
                    child.exit_code = Some(code);
                }
                state.request_exit(ExitReason::ChildExited(code));
            }
        })
        .map_err(|err| ChildError::Watch(err.to_string()))?;
    std::thread::Builder::new()
        .name("syncbridge-child-wait".into())
        .spawn(move || {
            // The receiver may be gone if the compositor is already shutting down.
            let _ = sender.send(child.wait());
        })
        .map_err(|err| ChildError::Watch(err.to_string()))?;

    tracing::info!(pid, command = ?argv, socket = ?socket_name, "started command");
    Ok(ChildStatus {
        argv: argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        pid,
        exit_code: None,
    })
}

/// Ask a still-running command to terminate (SIGTERM).
pub fn terminate(child: &ChildStatus) {
    if child.exit_code.is_some() {
        return;
    }
    let Some(pid) = i32::try_from(child.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    if let Err(err) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
        tracing::debug!(%err, "terminating the command");
    }
}
