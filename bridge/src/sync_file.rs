//! [`SyncFile`]: an owned `sync_file` fd, the kernel's explicit fence.
//!
//! A `sync_file` wraps one or more `dma_fence`s. It polls readable once every fence in it has
//! signalled (successfully or with an error). The bridge gets them from
//! [`dmabuf::export_sync_file`](crate::dmabuf::export_sync_file), from timeline points
//! ([`Timeline::export_point`](crate::syncobj::Timeline::export_point)), from KMS out-fences
//! and from clients (`zwp_linux_explicit_synchronization_v1` acquire fences).
//!
//! Ownership: a `SyncFile` owns its fd ([`OwnedFd`]) and closes it on drop. [`SyncFile::from_fd`]
//! takes ownership of the fd it is given, even when it refuses it (the fd is then closed).
//! [`SyncFile::as_fd`] lends the fd without giving it up; [`SyncFile::into_fd`] gives it up.
//!
//! ```no_run
//! use std::os::fd::OwnedFd;
//! use std::time::Duration;
//! use syncbridge_bridge::{ErrorKind, SyncFile};
//!
//! # fn from_client() -> OwnedFd { unimplemented!() }
//! // An fd a client sent us as its acquire fence.
//! let fence = match SyncFile::from_fd(from_client()) {
//!     Ok(fence) => fence,
//!     Err(e) if e.kind() == ErrorKind::BadInput => { /* protocol error */ return; }
//!     Err(e) => { tracing::warn!("{e}"); return; }
//! };
//! if !fence.is_signaled().unwrap_or(true) {
//!     // Never block a compositor on a client fence; this is for tests and tools.
//!     // In the compositor use `source::SyncFileSource` instead.
//!     let _ = fence.wait(Duration::from_millis(16));
//! }
//! let info = fence.info().expect("FILE_INFO");
//! for f in &info.fences {
//!     println!("{} / {}: {:?} at {} ns", f.driver_name, f.timeline_name, f.status, f.timestamp_ns);
//! }
//! ```

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::error::{errno_is_bad_fd, errno_is_unsupported, ErrorKind};
use crate::stats::{bump, COUNTERS};
use crate::sys;

/// The most fences [`SyncFile::info`] is willing to describe (the kernel itself bounds a
/// merged sync_file to one fence per context; this only guards the allocation).
pub const MAX_INFO_FENCES: u32 = 1 << 16;

/// The most fences [`SyncFile::signaled_at_ns`] reads (on the stack); a sync_file with more
/// (a client can merge thousands) has no timestamp from it.
pub const MAX_TIMESTAMP_FENCES: usize = 16;

/// Errors of [`SyncFile`] operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncFileError {
    /// The fd is not a sync_file (a pipe, a dma-buf, a syncobj fd, ...). The fd was closed.
    #[error("fd {fd} is not a sync_file ({reason})")]
    NotASyncFile {
        /// The fd number it had (for logs only; it is closed now).
        fd: RawFd,
        /// Why: which check failed, with the errno if an ioctl failed.
        reason: NotASyncFileReason,
    },
    /// The fd was closed or invalid (EBADF).
    #[error("{op} on fd {fd}: fd is closed or invalid ({errno})")]
    BadFd {
        /// The operation that found out.
        op: &'static str,
        /// The fd number.
        fd: RawFd,
        /// The errno (EBADF).
        errno: Errno,
    },
    /// [`SyncFile::wait`] gave up before the fence signalled.
    #[error("sync_file fd {fd} did not signal within {timeout:?}")]
    Timeout {
        /// The fd number.
        fd: RawFd,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The kernel has no such ioctl (e.g. `SYNC_IOC_SET_DEADLINE` before Linux 6.4).
    #[error("{op} is not supported by this kernel (sync_file fd {fd}): {errno}")]
    Unsupported {
        /// The ioctl.
        op: &'static str,
        /// The fd number.
        fd: RawFd,
        /// The errno (usually ENOTTY).
        errno: Errno,
    },
    /// Any other failure of an ioctl or syscall (ENOMEM, EMFILE, ...).
    #[error("{op} on sync_file fd {fd} failed: {errno}")]
    Os {
        /// The ioctl or syscall.
        op: &'static str,
        /// The fd number.
        fd: RawFd,
        /// The errno.
        errno: Errno,
    },
}

/// Why [`SyncFile::from_fd`] refused an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotASyncFileReason {
    /// The fd lives on a filesystem other than anon_inode (`f_type` given), so it cannot be a
    /// sync_file; no ioctl was sent to it.
    WrongFilesystem(u64),
    /// `SYNC_IOC_FILE_INFO` refused it with this errno.
    Ioctl(Errno),
}

impl std::fmt::Display for NotASyncFileReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotASyncFileReason::WrongFilesystem(t) => {
                write!(f, "not an anon_inode file (f_type {t:#x})")
            }
            NotASyncFileReason::Ioctl(e) => write!(f, "SYNC_IOC_FILE_INFO: {e}"),
        }
    }
}

impl SyncFileError {
    /// What kind of failure this is. [`Timeout`](Self::Timeout) counts as
    /// [`ErrorKind::Os`] (log and recover); check [`is_timeout`](Self::is_timeout) to tell it
    /// apart.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SyncFileError::NotASyncFile { .. } | SyncFileError::BadFd { .. } => ErrorKind::BadInput,
            SyncFileError::Unsupported { .. } => ErrorKind::Unsupported,
            SyncFileError::Timeout { .. } | SyncFileError::Os { .. } => ErrorKind::Os,
        }
    }

    /// True for [`SyncFileError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, SyncFileError::Timeout { .. })
    }

    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SyncFileError::NotASyncFile {
                reason: NotASyncFileReason::Ioctl(e),
                ..
            } => Some(*e),
            SyncFileError::BadFd { errno, .. }
            | SyncFileError::Unsupported { errno, .. }
            | SyncFileError::Os { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Classifies an errno from an operation on an fd already known to be a sync_file.
    pub(crate) fn from_errno(op: &'static str, fd: RawFd, errno: Errno) -> Self {
        if errno_is_bad_fd(errno) {
            SyncFileError::BadFd { op, fd, errno }
        } else if errno_is_unsupported(errno) {
            SyncFileError::Unsupported { op, fd, errno }
        } else {
            SyncFileError::Os { op, fd, errno }
        }
    }
}

/// Counts live `SyncFile`s for [`Stats`](crate::Stats); one per `SyncFile`.
#[derive(Debug)]
struct LiveToken(());

impl LiveToken {
    fn new() -> Self {
        COUNTERS.live_sync_files.fetch_add(1, Ordering::Relaxed);
        LiveToken(())
    }
}

impl Drop for LiveToken {
    fn drop(&mut self) {
        COUNTERS.live_sync_files.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An owned `sync_file` fd: a fence (or set of fences) from the kernel.
///
/// Dropping it closes the fd; the fences live on in the kernel as long as something else
/// (a dma-buf, a syncobj, a GPU job) holds them.
#[must_use = "dropping a SyncFile throws the fence away; wait for it, import it or hand it on"]
#[derive(Debug)]
pub struct SyncFile {
    fd: OwnedFd,
    _live: LiveToken,
}

/// Status of a fence or sync_file as `SYNC_IOC_FILE_INFO` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceStatus {
    /// Not signalled yet.
    Active,
    /// Signalled successfully.
    Signaled,
    /// Signalled with an error (the producer's job failed, was cancelled or timed out).
    Error(Errno),
}

impl FenceStatus {
    fn from_raw(status: i32) -> Self {
        match status {
            0 => FenceStatus::Active,
            s if s > 0 => FenceStatus::Signaled,
            // Kernel errors are -1..=-4095; anything else (a driver bug) becomes EIO rather
            // than an out-of-range Errno.
            s => match s.checked_neg() {
                Some(e @ 1..=4095) => FenceStatus::Error(Errno::from_raw_os_error(e)),
                _ => FenceStatus::Error(Errno::IO),
            },
        }
    }

    /// Signalled, with or without error.
    pub fn is_signaled(self) -> bool {
        !matches!(self, FenceStatus::Active)
    }
}

/// One fence inside a sync_file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceInfo {
    /// Name of the driver that created the fence (`"vgem"`, `"virtio_gpu"`, `"drm_sched"`...).
    pub driver_name: String,
    /// Name of the fence's timeline (`obj_name` in the UAPI).
    pub timeline_name: String,
    /// Whether it signalled, and with what error.
    pub status: FenceStatus,
    /// When it signalled, in CLOCK_MONOTONIC nanoseconds; 0 while active.
    pub timestamp_ns: u64,
}

/// What `SYNC_IOC_FILE_INFO` says about a sync_file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFileInfo {
    /// The sync_file's name (derived by the kernel from its fence).
    pub name: String,
    /// Overall status: active until every fence signalled; an error if any fence failed.
    pub status: FenceStatus,
    /// One entry per fence; `fences.len()` is the fence count.
    pub fences: Vec<FenceInfo>,
}

impl SyncFileInfo {
    /// The latest signal timestamp among the fences (CLOCK_MONOTONIC ns), if all signalled.
    pub fn signaled_at_ns(&self) -> Option<u64> {
        if self.fences.iter().all(|f| f.status.is_signaled()) {
            self.fences.iter().map(|f| f.timestamp_ns).max()
        } else {
            None
        }
    }
}

fn file_info_raw(
    fd: BorrowedFd<'_>,
    fences: &mut [sys::SyncFenceInfo],
) -> Result<sys::SyncFileInfo, Errno> {
    let num = u32::try_from(fences.len()).map_err(|_| Errno::INVAL)?;
    let mut info = sys::SyncFileInfo {
        name: [0; 32],
        status: 0,
        flags: 0,
        num_fences: num,
        pad: 0,
        sync_fence_info: fences.as_mut_ptr() as u64,
    };
    // SAFETY: SYNC_IOC_FILE_INFO takes a `struct sync_file_info` in and out. When
    // `num_fences` is non-zero the kernel writes at most `num_fences` `sync_fence_info`
    // records to `sync_fence_info`, which points to exactly that many records we own mutably.
    unsafe { sys::ioctl_rw::<{ sys::SYNC_IOC_FILE_INFO }, _>(fd, &mut info)? };
    Ok(info)
}

impl SyncFile {
    /// Takes ownership of `fd` and checks that it is a sync_file (`SYNC_IOC_FILE_INFO`, sent
    /// only to anon_inode files so that no foreign driver sees the ioctl).
    ///
    /// Errors: [`SyncFileError::NotASyncFile`] or [`SyncFileError::BadFd`]
    /// ([`ErrorKind::BadInput`]) for a wrong fd, which is then closed.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, SyncFileError> {
        let raw = fd.as_raw_fd();
        match sys::fs_type(fd.as_fd()) {
            Ok(sys::ANON_INODE_FS_MAGIC) => {}
            Ok(other) => {
                return Err(SyncFileError::NotASyncFile {
                    fd: raw,
                    reason: NotASyncFileReason::WrongFilesystem(other),
                })
            }
            Err(errno) => return Err(SyncFileError::from_errno("fstatfs", raw, errno)),
        }
        match file_info_raw(fd.as_fd(), &mut []) {
            Ok(_) => Ok(Self::from_kernel(fd)),
            Err(errno) if errno == Errno::NOMEM || errno == Errno::FAULT => {
                Err(SyncFileError::Os {
                    op: "SYNC_IOC_FILE_INFO",
                    fd: raw,
                    errno,
                })
            }
            Err(errno) if errno_is_bad_fd(errno) => Err(SyncFileError::BadFd {
                op: "SYNC_IOC_FILE_INFO",
                fd: raw,
                errno,
            }),
            Err(errno) => Err(SyncFileError::NotASyncFile {
                fd: raw,
                reason: NotASyncFileReason::Ioctl(errno),
            }),
        }
    }

    /// Wraps an fd the kernel just returned as a sync_file (no validation).
    pub(crate) fn from_kernel(fd: OwnedFd) -> Self {
        SyncFile {
            fd,
            _live: LiveToken::new(),
        }
    }

    /// An already-signalled sync_file (see [`dmabuf::signaled_stub`](crate::dmabuf::signaled_stub):
    /// needs dma-heap or udmabuf access, else [`ErrorKind::Unsupported`]).
    pub fn signaled_stub() -> Result<SyncFile, crate::DmabufFenceError> {
        crate::dmabuf::signaled_stub()
    }

    /// Lends the fd (still owned by `self`).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Gives up ownership of the fd (e.g. to send it to a client or put it in `IN_FENCE_FD`).
    pub fn into_fd(self) -> OwnedFd {
        let SyncFile { fd, _live } = self;
        fd
    }

    /// A second `SyncFile` on the same fences (a dup'ed fd, `F_DUPFD_CLOEXEC`).
    pub fn try_clone(&self) -> Result<SyncFile, SyncFileError> {
        rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map(Self::from_kernel)
            .map_err(|errno| SyncFileError::from_errno("F_DUPFD_CLOEXEC", self.raw(), errno))
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn poll_once(&self, timeout: Option<&Timespec>) -> Result<bool, SyncFileError> {
        let mut pfd = [PollFd::from_borrowed_fd(self.fd.as_fd(), PollFlags::IN)];
        let n = rustix::event::poll(&mut pfd, timeout)
            .map_err(|errno| SyncFileError::from_errno("poll", self.raw(), errno))?;
        if n == 0 {
            return Ok(false);
        }
        let revents = pfd[0].revents();
        if revents.contains(PollFlags::NVAL) {
            return Err(SyncFileError::BadFd {
                op: "poll",
                fd: self.raw(),
                errno: Errno::BADF,
            });
        }
        Ok(revents.intersects(PollFlags::IN | PollFlags::ERR | PollFlags::HUP))
    }

    /// Whether every fence has signalled (`poll` with a zero timeout; never blocks).
    pub fn is_signaled(&self) -> Result<bool, SyncFileError> {
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            match self.poll_once(Some(&zero)) {
                Err(SyncFileError::Os {
                    errno: Errno::INTR, ..
                }) => continue,
                other => return other,
            }
        }
    }

    /// Blocks the calling thread until the fence signals or `timeout` passes
    /// ([`SyncFileError::Timeout`]). A compositor should not call this on its main thread; use
    /// [`SyncFileSource`](crate::source::SyncFileSource).
    pub fn wait(&self, timeout: Duration) -> Result<(), SyncFileError> {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let ts = Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            match self.poll_once(Some(&ts)) {
                Ok(true) => return Ok(()),
                Ok(false) if left.is_zero() || start.elapsed() >= timeout => {
                    return Err(SyncFileError::Timeout {
                        fd: self.raw(),
                        timeout,
                    })
                }
                Ok(false)
                | Err(SyncFileError::Os {
                    errno: Errno::INTR, ..
                }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A new sync_file that signals when both `self` and `other` have (`SYNC_IOC_MERGE`).
    /// The kernel keeps one fence per fence context (the later one) and drops fences that
    /// already signalled, so merging repeatedly stays bounded.
    pub fn merge(&self, other: &SyncFile) -> Result<SyncFile, SyncFileError> {
        let mut data = sys::SyncMergeData {
            name: *b"syncbridge-merge\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            fd2: other.raw(),
            fence: -1,
            flags: 0,
            pad: 0,
        };
        // SAFETY: SYNC_IOC_MERGE takes a `struct sync_merge_data` in and out with no pointers;
        // `fd2` is an fd we own (borrowed for the call) and the kernel returns a new fd.
        unsafe { sys::ioctl_rw::<{ sys::SYNC_IOC_MERGE }, _>(self.fd.as_fd(), &mut data) }
            .map_err(|errno| SyncFileError::from_errno("SYNC_IOC_MERGE", self.raw(), errno))?;
        let fd = sys::owned_from_kernel(data.fence).map_err(|errno| SyncFileError::Os {
            op: "SYNC_IOC_MERGE",
            fd: self.raw(),
            errno,
        })?;
        bump(&COUNTERS.fences_merged);
        Ok(Self::from_kernel(fd))
    }

    /// Number of fences in this sync_file (one `SYNC_IOC_FILE_INFO` call).
    pub fn fence_count(&self) -> Result<u32, SyncFileError> {
        file_info_raw(self.fd.as_fd(), &mut [])
            .map(|i| i.num_fences)
            .map_err(|errno| SyncFileError::from_errno("SYNC_IOC_FILE_INFO", self.raw(), errno))
    }

    /// Status, name and per-fence details (`SYNC_IOC_FILE_INFO`, two calls). Allocates per
    /// fence (up to [`MAX_INFO_FENCES`]); for the signal time alone use
    /// [`signaled_at_ns`](Self::signaled_at_ns).
    pub fn info(&self) -> Result<SyncFileInfo, SyncFileError> {
        let op = "SYNC_IOC_FILE_INFO";
        let map = |errno| SyncFileError::from_errno(op, self.raw(), errno);
        let head = file_info_raw(self.fd.as_fd(), &mut []).map_err(map)?;
        let n = head.num_fences;
        if n > MAX_INFO_FENCES {
            return Err(SyncFileError::Os {
                op,
                fd: self.raw(),
                errno: Errno::TOOBIG,
            });
        }
        let mut raw_fences = vec![sys::SyncFenceInfo::ZERO; n as usize];
        let full = if n == 0 {
            head
        } else {
            file_info_raw(self.fd.as_fd(), &mut raw_fences).map_err(map)?
        };
        let count = (full.num_fences as usize).min(raw_fences.len());
        let fences = raw_fences[..count]
            .iter()
            .map(|f| FenceInfo {
                driver_name: sys::c_name(&f.driver_name),
                timeline_name: sys::c_name(&f.obj_name),
                status: FenceStatus::from_raw(f.status),
                timestamp_ns: f.timestamp_ns,
            })
            .collect::<Vec<_>>();
        // With num_fences == 0 the kernel reports the real status; with fences it folds the
        // per-fence statuses the same way. Use the header's status when it is the only one.
        let status = if n == 0 {
            FenceStatus::from_raw(head.status)
        } else {
            FenceStatus::from_raw(full.status)
        };
        Ok(SyncFileInfo {
            name: sys::c_name(&full.name),
            status,
            fences,
        })
    }

    /// When the sync_file signalled (the latest fence's timestamp, CLOCK_MONOTONIC ns), if
    /// every fence signalled; without allocating: `None` for a sync_file of more than
    /// [`MAX_TIMESTAMP_FENCES`] fences or without fences (a stub). Meant for every fired
    /// wait, where [`info`](Self::info) would allocate per fence of a client-made sync_file.
    pub fn signaled_at_ns(&self) -> Result<Option<u64>, SyncFileError> {
        // One ioctl with room for MAX_TIMESTAMP_FENCES records: the kernel fills as many as
        // the sync_file holds and says how many, or refuses with EINVAL when it holds more
        // (the only EINVAL here: flags and pad are 0). The count-first query costs a second
        // ioctl on every fired wait and every flip.
        let mut raw = [sys::SyncFenceInfo::ZERO; MAX_TIMESTAMP_FENCES];
        let full = match file_info_raw(self.fd.as_fd(), &mut raw) {
            Ok(info) => info,
            Err(Errno::INVAL) => return Ok(None),
            Err(errno) => {
                return Err(SyncFileError::from_errno(
                    "SYNC_IOC_FILE_INFO",
                    self.raw(),
                    errno,
                ))
            }
        };
        let n = full.num_fences as usize;
        if n == 0 || n > MAX_TIMESTAMP_FENCES {
            return Ok(None);
        }
        let fences = &raw[..n];
        if fences
            .iter()
            .all(|f| FenceStatus::from_raw(f.status).is_signaled())
        {
            Ok(fences.iter().map(|f| f.timestamp_ns).max())
        } else {
            Ok(None)
        }
    }

    /// Tells the fence's driver we would like it signalled by `deadline_ns` (CLOCK_MONOTONIC
    /// nanoseconds), e.g. the next vblank, so it can boost clocks (`SYNC_IOC_SET_DEADLINE`,
    /// Linux 6.4+; ENOTTY before → [`ErrorKind::Unsupported`]). A hint: drivers may ignore it.
    pub fn set_deadline_ns(&self, deadline_ns: u64) -> Result<(), SyncFileError> {
        let arg = sys::SyncSetDeadline {
            deadline_ns,
            pad: 0,
        };
        // SAFETY: SYNC_IOC_SET_DEADLINE reads a `struct sync_set_deadline` (no pointers).
        unsafe { sys::ioctl_w::<{ sys::SYNC_IOC_SET_DEADLINE }, _>(self.fd.as_fd(), arg) }
            .map_err(|errno| SyncFileError::from_errno("SYNC_IOC_SET_DEADLINE", self.raw(), errno))
    }

    /// [`set_deadline_ns`](Self::set_deadline_ns) with a `std::time::Instant` (converted to
    /// CLOCK_MONOTONIC; an instant in the past means "as soon as possible").
    pub fn set_deadline(&self, deadline: Instant) -> Result<(), SyncFileError> {
        self.set_deadline_ns(instant_to_monotonic_ns(deadline))
    }
}

/// Converts a `std::time::Instant` to CLOCK_MONOTONIC nanoseconds (the timebase of fence
/// timestamps, vblank events and deadlines).
pub fn instant_to_monotonic_ns(t: Instant) -> u64 {
    let now_mono = monotonic_now_ns();
    let now = Instant::now();
    if t >= now {
        let ahead = u64::try_from((t - now).as_nanos()).unwrap_or(u64::MAX);
        now_mono.saturating_add(ahead)
    } else {
        let behind = u64::try_from((now - t).as_nanos()).unwrap_or(u64::MAX);
        now_mono.saturating_sub(behind)
    }
}

/// Current CLOCK_MONOTONIC time in nanoseconds.
pub fn monotonic_now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

impl AsFd for SyncFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<SyncFile> for OwnedFd {
    fn from(f: SyncFile) -> OwnedFd {
        f.into_fd()
    }
}

impl TryFrom<OwnedFd> for SyncFile {
    type Error = SyncFileError;
    fn try_from(fd: OwnedFd) -> Result<Self, Self::Error> {
        SyncFile::from_fd(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_is_bad_input_without_ioctl() {
        let (r, _w) = rustix::pipe::pipe().expect("pipe");
        let err = SyncFile::from_fd(r).expect_err("pipe is not a sync_file");
        assert_eq!(err.kind(), ErrorKind::BadInput);
        assert!(matches!(
            err,
            SyncFileError::NotASyncFile {
                reason: NotASyncFileReason::WrongFilesystem(_),
                ..
            }
        ));
    }

    #[test]
    fn eventfd_is_bad_input_via_ioctl() {
        // An eventfd is an anon_inode file like a sync_file, so this takes the ioctl path.
        let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd");
        let err = SyncFile::from_fd(efd).expect_err("eventfd is not a sync_file");
        assert_eq!(err.kind(), ErrorKind::BadInput);
        assert!(
            matches!(
                err,
                SyncFileError::NotASyncFile {
                    reason: NotASyncFileReason::Ioctl(Errno::NOTTY),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn memfd_is_bad_input() {
        let fd = rustix::fs::memfd_create("not-a-fence", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd");
        let err = SyncFile::from_fd(fd).expect_err("memfd");
        assert_eq!(err.kind(), ErrorKind::BadInput);
    }

    #[test]
    fn fence_status_from_raw() {
        assert_eq!(FenceStatus::from_raw(0), FenceStatus::Active);
        assert_eq!(FenceStatus::from_raw(1), FenceStatus::Signaled);
        assert_eq!(
            FenceStatus::from_raw(-110),
            FenceStatus::Error(Errno::TIMEDOUT)
        );
        assert_eq!(
            FenceStatus::from_raw(i32::MIN),
            FenceStatus::Error(Errno::IO)
        );
        assert_eq!(FenceStatus::from_raw(-5000), FenceStatus::Error(Errno::IO));
        assert!(FenceStatus::Error(Errno::IO).is_signaled());
        assert!(!FenceStatus::Active.is_signaled());
    }

    #[test]
    fn error_kinds() {
        let e = SyncFileError::from_errno("x", 3, Errno::NOTTY);
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        let e = SyncFileError::from_errno("x", 3, Errno::BADF);
        assert_eq!(e.kind(), ErrorKind::BadInput);
        let e = SyncFileError::from_errno("x", 3, Errno::MFILE);
        assert_eq!(e.kind(), ErrorKind::Os);
        assert_eq!(e.errno(), Some(Errno::MFILE));
        let t = SyncFileError::Timeout {
            fd: 3,
            timeout: Duration::from_millis(5),
        };
        assert!(t.is_timeout());
        assert_eq!(t.kind(), ErrorKind::Os);
    }

    #[test]
    fn monotonic_conversion_is_consistent() {
        let now = monotonic_now_ns();
        let later = instant_to_monotonic_ns(Instant::now() + Duration::from_secs(1));
        assert!(later >= now + 900_000_000, "{later} vs {now}");
        assert!(later <= now + 1_500_000_000);
    }
}
