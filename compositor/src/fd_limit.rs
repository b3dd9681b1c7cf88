//! The process's open-file limit (RLIMIT_NOFILE).
//!
//! A compositor holds fds for every client (the connection, its buffers' dma-bufs, the
//! fences and eventfds the sync bridge waits on), so the usual 1024-fd soft limit is far
//! too low: at start-up [`raise_to_hard_limit`] raises the soft limit to the hard limit,
//! and remembers the original soft limit so that commands the compositor starts get it
//! back ([`restore_for_child`], called between fork and exec): many programs still use
//! `select()`, which breaks on fds above 1023.
//!
//! The per-client budget of the sync bridge (`Limits::max_fds_per_client`) keeps one
//! client from using the raised limit up; EMFILE that still happens (many clients at
//! once) is survived: see [`crate::listener`].
//!
//! ```no_run
//! let limits = syncbridge_compositor::fd_limit::raise_to_hard_limit();
//! println!("fd limit {} (was {})", limits.raised, limits.original);
//! ```

use std::sync::OnceLock;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The soft limit before and after [`raise_to_hard_limit`] (`u64::MAX`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimits {
    /// The soft limit the process started with (what children get back).
    pub original: u64,
    /// The soft limit now.
    pub raised: u64,
    /// The hard limit.
    pub hard: u64,
}

/// The limit the process started with, recorded once by the first raise.
static ORIGINAL: OnceLock<Rlimit> = OnceLock::new();

fn value(v: Option<u64>) -> u64 {
    v.unwrap_or(u64::MAX)
}

/// Raises the RLIMIT_NOFILE soft limit to the hard limit (idempotent). A failure to raise
/// is logged and leaves the limit as it was: the compositor still runs, with less room.
pub fn raise_to_hard_limit() -> NofileLimits {
    let now = getrlimit(Resource::Nofile);
    let original = *ORIGINAL.get_or_init(|| now);
    let raised = if now.current == now.maximum {
        now
    } else {
        let want = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, want) {
            Ok(()) => want,
            Err(err) => {
                tracing::warn!(%err, soft = value(now.current), "cannot raise RLIMIT_NOFILE");
                now
            }
        }
    };
    let limits = NofileLimits {
        original: value(original.current),
        raised: value(raised.current),
        hard: value(raised.maximum),
    };
    tracing::info!(
        soft = limits.raised,
        was = limits.original,
        hard = limits.hard,
        "RLIMIT_NOFILE"
    );
    limits
}

/// The soft limit a started command gets: the one the compositor started with, or `None`
/// if it was never raised.
pub fn original_for_children() -> Option<Rlimit> {
    ORIGINAL.get().copied()
}

/// Puts `original` back as the RLIMIT_NOFILE of the calling process. Meant for
/// `CommandExt::pre_exec`: it only makes the `setrlimit` system call (async-signal-safe).
pub fn restore_for_child(original: &Rlimit) -> std::io::Result<()> {
    setrlimit(Resource::Nofile, *original).map_err(std::io::Error::from)
}
