//! Error classification shared by every subsystem.
//!
//! Each subsystem has its own `thiserror` enum ([`SyncFileError`](crate::SyncFileError),
//! [`DmabufFenceError`](crate::DmabufFenceError), [`SyncobjError`](crate::SyncobjError),
//! [`ReleaseError`](crate::ReleaseError)) that keeps the errno and the context (which ioctl,
//! which fd or point). All of them answer [`kind()`](crate::SyncFileError::kind) with an
//! [`ErrorKind`], which is what a caller branches on:
//!
//! ```
//! use syncbridge_bridge::{ErrorKind, SyncFile};
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // A pipe is not a sync_file: the client sent the wrong kind of fd.
//! let (reader, _writer) = rustix::pipe::pipe()?;
//! match SyncFile::from_fd(reader) {
//!     Ok(_) => unreachable!(),
//!     Err(e) => match e.kind() {
//!         ErrorKind::BadInput => { /* post a protocol error to the client */ }
//!         ErrorKind::Unsupported => { /* probe once, switch to the fallback path */ }
//!         ErrorKind::Os => { /* log and recover (e.g. treat the fence as signalled) */ }
//!     },
//! }
//! # Ok(()) }
//! # demo().unwrap();
//! ```

use rustix::io::Errno;

/// What kind of failure an error is, i.e. what the caller should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The kernel or device does not have this feature. Probe once, then use the fallback
    /// (poll the dma-buf, CPU-signal the release point, ...). Not the client's fault.
    Unsupported,
    /// The input was wrong: a non-dma-buf fd, a non-syncobj fd, a closed fd, bad flags, a
    /// timeline point that goes backwards or does not exist. When the input came from a
    /// client this is the client's fault: answer with a protocol error.
    BadInput,
    /// The OS failed (out of memory, out of fds, a driver error) or a wait timed out. Log
    /// it and recover; do not blame the client.
    Os,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Unsupported => "unsupported here",
            ErrorKind::BadInput => "bad input",
            ErrorKind::Os => "OS failure",
        })
    }
}

/// Errnos that mean "the fd/argument handed to us was wrong", whatever the ioctl.
pub(crate) fn errno_is_bad_fd(errno: Errno) -> bool {
    errno == Errno::BADF
}

/// Errnos that mean "this kernel or driver has no such ioctl or feature".
pub(crate) fn errno_is_unsupported(errno: Errno) -> bool {
    errno == Errno::NOTTY || errno == Errno::OPNOTSUPP || errno == Errno::NOSYS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_human() {
        assert_eq!(ErrorKind::Unsupported.to_string(), "unsupported here");
        assert_eq!(ErrorKind::BadInput.to_string(), "bad input");
        assert_eq!(ErrorKind::Os.to_string(), "OS failure");
    }

    #[test]
    fn errno_classes() {
        assert!(errno_is_bad_fd(Errno::BADF));
        assert!(!errno_is_bad_fd(Errno::INVAL));
        assert!(errno_is_unsupported(Errno::NOTTY));
        assert!(errno_is_unsupported(Errno::OPNOTSUPP));
        assert!(!errno_is_unsupported(Errno::NOENT));
    }
}
