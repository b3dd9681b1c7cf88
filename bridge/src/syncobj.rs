//! DRM syncobj timelines: import a client's timeline, turn points into eventfds, query and
//! signal them, and convert between timeline points and [`SyncFile`]s.
//!
//! A [`SyncobjDevice`] wraps a DRM device fd that has `DRM_CAP_SYNCOBJ_TIMELINE` (render nodes
//! work; vgem and VKMS have no syncobj, virtio_gpu and real GPUs do). It owns one scratch
//! *binary* syncobj that every SyncFile <-> point conversion goes through, so a conversion
//! costs two ioctls (`TRANSFER` + `HANDLE_TO_FD`, or `FD_TO_HANDLE(IMPORT_SYNC_FILE)` on the
//! scratch handle + `TRANSFER`) and creates no syncobj. `SYNCOBJ_EVENTFD` support (Linux 6.6+)
//! is probed once, when the device is created.
//!
//! Ownership: [`SyncobjDevice::new`] takes the DRM fd (an [`OwnedFd`] or an `Arc<OwnedFd>` you
//! share with your renderer/KMS code). [`SyncobjDevice::import_timeline`] takes the client's
//! syncobj fd and closes it after importing: the [`Timeline`] holds a *handle* on the device,
//! not an fd, and destroys it on drop. [`Timeline::eventfd`] returns an owned eventfd.
//!
//! Timelines only move forward: [`Timeline::signal`] and [`Timeline::import_point`] refuse a
//! point at or below the last point this `Timeline` set (point 0 included) with
//! [`SyncobjError::PointWentBackwards`]. The kernel would accept it, but then
//! `dma_fence_chain_find_seqno` no longer finds the later points, so waiters on them hang.
//!
//! ```no_run
//! use std::os::fd::OwnedFd;
//! use syncbridge_bridge::syncobj::{SyncobjDevice, WaitMode};
//!
//! # fn render_node() -> OwnedFd { unimplemented!() }
//! # fn client_timeline_fd() -> OwnedFd { unimplemented!() }
//! let device = SyncobjDevice::new(render_node())?;      // refuses devices without timelines
//! let timeline = device.import_timeline(client_timeline_fd())?;
//! // Acquire: wake up when point 5 has a fence, then turn it into a SyncFile.
//! let _efd = timeline.eventfd(5, WaitMode::Available)?;  // register with calloop
//! let acquire = timeline.export_point(5)?;
//! // Release: point 6 signals when our renderer is done reading.
//! # let render_fence = acquire;
//! timeline.import_point(6, &render_fence)?;
//! # Ok::<(), syncbridge_bridge::SyncobjError>(())
//! ```

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use drm::control::syncobj::Handle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::io::Errno;

use crate::error::{errno_is_bad_fd, errno_is_unsupported, ErrorKind};
use crate::stats::{bump, COUNTERS};
use crate::sync_file::{monotonic_now_ns, SyncFile, SyncFileError};
use crate::syncobj_ioctl::{self as ioctl, raw};

/// The character-device major number of every DRM node on Linux.
const DRM_MAJOR: u32 = 226;

/// Errors of syncobj and timeline operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncobjError {
    /// The fd given to [`SyncobjDevice::new`] is not a DRM device node.
    #[error("fd {fd} is not a DRM device ({detail})")]
    NotADrmDevice {
        /// The fd number.
        fd: RawFd,
        /// What was found instead.
        detail: String,
    },
    /// The device has no timeline syncobjs (`DRM_CAP_SYNCOBJ_TIMELINE` is 0, e.g. vgem).
    #[error("DRM device {driver:?} has no timeline syncobjs (DRM_CAP_SYNCOBJ={syncobj}, DRM_CAP_SYNCOBJ_TIMELINE=0)")]
    TimelinesUnsupported {
        /// The driver name (`DRM_IOCTL_VERSION`).
        driver: String,
        /// Whether it has binary syncobjs at least.
        syncobj: bool,
    },
    /// The kernel has no `DRM_IOCTL_SYNCOBJ_EVENTFD` (before Linux 6.6): the probe on handle
    /// 0 answered this errno instead of ENOENT.
    #[error("DRM_IOCTL_SYNCOBJ_EVENTFD is not supported here (probe answered {errno})")]
    EventfdUnsupported {
        /// What the probe answered.
        errno: Errno,
    },
    /// The fd given to [`SyncobjDevice::import_timeline`] is not a syncobj fd (or is closed).
    #[error("fd {fd} is not a DRM syncobj fd (DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE: {errno})")]
    NotASyncobj {
        /// The fd number.
        fd: RawFd,
        /// The errno (EINVAL for a wrong or closed fd).
        errno: Errno,
    },
    /// A point at or below the last point set on this timeline (or point 0).
    #[error("timeline point {point} does not move forward (last point set: {last})")]
    PointWentBackwards {
        /// The refused point.
        point: u64,
        /// The last point this `Timeline` set.
        last: u64,
    },
    /// The point has no fence yet (nobody submitted work for it): wait for it with
    /// [`WaitMode::Available`] before converting it.
    #[error("timeline point {point} of syncobj {handle} is not materialized yet")]
    PointNotMaterialized {
        /// Syncobj handle.
        handle: u32,
        /// The point.
        point: u64,
    },
    /// [`Timeline::wait`] gave up.
    #[error("timeline point {point} of syncobj {handle} not reached within {timeout:?}")]
    Timeout {
        /// Syncobj handle.
        handle: u32,
        /// The point.
        point: u64,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// An ioctl failed for another reason.
    #[error("{op} (syncobj {handle}, point {point}) failed: {errno}")]
    Ioctl {
        /// The ioctl.
        op: &'static str,
        /// Syncobj handle (0 if none).
        handle: u32,
        /// Timeline point (0 if none).
        point: u64,
        /// The errno.
        errno: Errno,
    },
    /// A sync_file operation failed.
    #[error(transparent)]
    SyncFile(#[from] SyncFileError),
}

impl SyncobjError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SyncobjError::NotADrmDevice { .. }
            | SyncobjError::NotASyncobj { .. }
            | SyncobjError::PointWentBackwards { .. }
            | SyncobjError::PointNotMaterialized { .. } => ErrorKind::BadInput,
            SyncobjError::TimelinesUnsupported { .. } | SyncobjError::EventfdUnsupported { .. } => {
                ErrorKind::Unsupported
            }
            SyncobjError::Timeout { .. } => ErrorKind::Os,
            SyncobjError::Ioctl { errno, .. } => {
                if errno_is_bad_fd(*errno) {
                    ErrorKind::BadInput
                } else if errno_is_unsupported(*errno) {
                    ErrorKind::Unsupported
                } else {
                    ErrorKind::Os
                }
            }
            SyncobjError::SyncFile(e) => e.kind(),
        }
    }

    /// True for [`SyncobjError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, SyncobjError::Timeout { .. })
    }

    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SyncobjError::EventfdUnsupported { errno }
            | SyncobjError::NotASyncobj { errno, .. }
            | SyncobjError::Ioctl { errno, .. } => Some(*errno),
            SyncobjError::SyncFile(e) => e.errno(),
            _ => None,
        }
    }
}

/// What a timeline-point eventfd or wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitMode {
    /// The point's fence has signalled.
    Signaled,
    /// The point has a fence (it *materialized*: work was submitted), signalled or not
    /// (`DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE`).
    Available,
}

#[derive(Debug)]
struct DeviceInner {
    fd: Arc<OwnedFd>,
    /// The scratch binary syncobj; the mutex keeps a conversion's two ioctls together.
    scratch: Mutex<Handle>,
    eventfd_probe: Result<(), Errno>,
    driver: String,
}

impl DeviceInner {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn lock_scratch(&self) -> MutexGuard<'_, Handle> {
        // A poisoned lock only means another thread panicked mid-conversion; the scratch
        // syncobj is still a valid handle (each conversion overwrites its fence).
        self.scratch.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for DeviceInner {
    fn drop(&mut self) {
        let handle = *self.scratch.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Err(errno) = ioctl::destroy(self.fd.as_fd(), handle) {
            tracing::warn!(handle = raw(handle), %errno, "destroying the scratch syncobj failed");
        }
    }
}

/// A DRM device with timeline syncobjs. Cheap to clone (shared inside).
#[derive(Debug, Clone)]
pub struct SyncobjDevice {
    inner: Arc<DeviceInner>,
}

/// A timeline syncobj imported on a [`SyncobjDevice`]. Holds a handle (no fd); destroys it on
/// drop. The kernel keeps the syncobj alive while the client or a GPU job still refers to it.
#[must_use = "dropping a Timeline destroys its handle"]
#[derive(Debug)]
pub struct Timeline {
    dev: Arc<DeviceInner>,
    handle: Handle,
    last_set: AtomicU64,
}

/// The driver name of a DRM device (`DRM_IOCTL_VERSION`), e.g. `"virtio_gpu"`, `"vgem"`.
/// The fd is borrowed. Fails with the errno for a non-DRM fd.
pub fn drm_driver_name(fd: BorrowedFd<'_>) -> Result<String, Errno> {
    ioctl::driver_name(fd)
}

fn check_drm_node(fd: BorrowedFd<'_>) -> Result<(), SyncobjError> {
    let raw = fd.as_raw_fd();
    let st = rustix::fs::fstat(fd).map_err(|errno| SyncobjError::NotADrmDevice {
        fd: raw,
        detail: format!("fstat: {errno}"),
    })?;
    let ty = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if ty != rustix::fs::FileType::CharacterDevice {
        return Err(SyncobjError::NotADrmDevice {
            fd: raw,
            detail: format!("a {ty:?}, not a character device"),
        });
    }
    #[allow(clippy::useless_conversion)]
    let major = rustix::fs::major(st.st_rdev.into());
    if major != DRM_MAJOR {
        return Err(SyncobjError::NotADrmDevice {
            fd: raw,
            detail: format!("character device major {major}, DRM is {DRM_MAJOR}"),
        });
    }
    Ok(())
}

impl SyncobjDevice {
    /// Wraps a DRM device fd (taken, or shared through an `Arc`). Checks that it is a DRM
    /// node ([`SyncobjError::NotADrmDevice`], bad input) with timeline syncobjs
    /// ([`SyncobjError::TimelinesUnsupported`], unsupported), creates the scratch binary
    /// syncobj and probes `SYNCOBJ_EVENTFD` once (on handle 0, expecting ENOENT).
    pub fn new(drm_fd: impl Into<Arc<OwnedFd>>) -> Result<Self, SyncobjError> {
        let fd: Arc<OwnedFd> = drm_fd.into();
        let b = fd.as_fd();
        check_drm_node(b)?;
        let driver = drm_driver_name(b).unwrap_or_else(|e| format!("<unknown: {e}>"));
        let cap = |c| {
            ioctl::get_cap(b, c).map_err(|errno| SyncobjError::Ioctl {
                op: "DRM_IOCTL_GET_CAP",
                handle: 0,
                point: 0,
                errno,
            })
        };
        if cap(drm::DriverCapability::TimelineSyncObj)? == 0 {
            let syncobj = cap(drm::DriverCapability::SyncObj)? != 0;
            return Err(SyncobjError::TimelinesUnsupported { driver, syncobj });
        }
        let scratch = ioctl::create(b, false).map_err(|errno| SyncobjError::Ioctl {
            op: "DRM_IOCTL_SYNCOBJ_CREATE",
            handle: 0,
            point: 0,
            errno,
        })?;
        let eventfd_probe = ioctl::probe_eventfd(b);
        tracing::debug!(%driver, scratch = raw(scratch), eventfd = ?eventfd_probe, "syncobj device ready");
        Ok(SyncobjDevice {
            inner: Arc::new(DeviceInner {
                fd,
                scratch: Mutex::new(scratch),
                eventfd_probe,
                driver,
            }),
        })
    }

    /// The DRM fd (still owned by the device).
    pub fn drm_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd()
    }

    /// The DRM driver's name (`DRM_IOCTL_VERSION`).
    pub fn driver_name(&self) -> &str {
        &self.inner.driver
    }

    /// Whether `DRM_IOCTL_SYNCOBJ_EVENTFD` works here (probed once in [`new`](Self::new)).
    pub fn supports_eventfd(&self) -> bool {
        self.inner.eventfd_probe.is_ok()
    }

    /// Imports a client's syncobj fd (taken and closed; the kernel keeps the syncobj).
    /// A fd that is not a syncobj (a sync_file, a pipe, a dma-buf, ...) is
    /// [`SyncobjError::NotASyncobj`] (bad input).
    pub fn import_timeline(&self, fd: OwnedFd) -> Result<Timeline, SyncobjError> {
        let handle = ioctl::fd_to_handle(self.inner.fd(), fd.as_fd()).map_err(|errno| {
            if errno == Errno::INVAL || errno_is_bad_fd(errno) {
                SyncobjError::NotASyncobj {
                    fd: fd.as_raw_fd(),
                    errno,
                }
            } else {
                SyncobjError::Ioctl {
                    op: "DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE",
                    handle: 0,
                    point: 0,
                    errno,
                }
            }
        })?;
        Ok(self.wrap(handle))
    }

    /// Creates a new, empty syncobj to use as a timeline (what a client does before sending
    /// it; handy in tests and for compositor-owned timelines).
    pub fn create_timeline(&self) -> Result<Timeline, SyncobjError> {
        let handle =
            ioctl::create(self.inner.fd(), false).map_err(|errno| SyncobjError::Ioctl {
                op: "DRM_IOCTL_SYNCOBJ_CREATE",
                handle: 0,
                point: 0,
                errno,
            })?;
        Ok(self.wrap(handle))
    }

    fn wrap(&self, handle: Handle) -> Timeline {
        COUNTERS.live_timelines.fetch_add(1, Ordering::Relaxed);
        Timeline {
            dev: self.inner.clone(),
            handle,
            last_set: AtomicU64::new(0),
        }
    }

    /// An already-signalled [`SyncFile`] (the kernel's stub fence), via the scratch syncobj:
    /// `SYNCOBJ_SIGNAL` + `HANDLE_TO_FD(EXPORT_SYNC_FILE)`.
    pub fn signaled_sync_file(&self) -> Result<SyncFile, SyncobjError> {
        let dev = &self.inner;
        let scratch = dev.lock_scratch();
        ioctl::signal_binary(dev.fd(), *scratch).map_err(|errno| SyncobjError::Ioctl {
            op: "DRM_IOCTL_SYNCOBJ_SIGNAL",
            handle: raw(*scratch),
            point: 0,
            errno,
        })?;
        let fd =
            ioctl::handle_to_fd(dev.fd(), *scratch, true).map_err(|errno| SyncobjError::Ioctl {
                op: "DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD",
                handle: raw(*scratch),
                point: 0,
                errno,
            })?;
        Ok(SyncFile::from_kernel(fd))
    }
}

impl Timeline {
    /// The syncobj handle on the device.
    pub fn handle(&self) -> u32 {
        raw(self.handle)
    }

    /// The handle as the `drm` crate's type (for `drm::control::Device` syncobj calls).
    pub fn drm_handle(&self) -> Handle {
        self.handle
    }

    /// The device this timeline lives on.
    pub fn device(&self) -> SyncobjDevice {
        SyncobjDevice {
            inner: self.dev.clone(),
        }
    }

    fn err(&self, op: &'static str, point: u64, errno: Errno) -> SyncobjError {
        SyncobjError::Ioctl {
            op,
            handle: raw(self.handle),
            point,
            errno,
        }
    }

    fn check_forward(&self, point: u64) -> Result<(), SyncobjError> {
        let last = self.last_set.load(Ordering::Relaxed);
        if point == 0 || point <= last {
            return Err(SyncobjError::PointWentBackwards { point, last });
        }
        Ok(())
    }

    /// The last signalled point (`DRM_IOCTL_SYNCOBJ_QUERY`).
    pub fn query(&self) -> Result<u64, SyncobjError> {
        ioctl::query(self.dev.fd(), self.handle, false)
            .map_err(|errno| self.err("DRM_IOCTL_SYNCOBJ_QUERY", 0, errno))
    }

    /// The last submitted (materialized) point, signalled or not
    /// (`DRM_IOCTL_SYNCOBJ_QUERY` with `LAST_SUBMITTED`).
    pub fn last_submitted(&self) -> Result<u64, SyncobjError> {
        ioctl::query(self.dev.fd(), self.handle, true)
            .map_err(|errno| self.err("DRM_IOCTL_SYNCOBJ_QUERY", 0, errno))
    }

    /// Signals `point` from the CPU (`DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL`): the fallback
    /// release when no fence exists. Must move forward (see the module docs).
    pub fn signal(&self, point: u64) -> Result<(), SyncobjError> {
        self.check_forward(point)?;
        ioctl::timeline_signal(self.dev.fd(), self.handle, point)
            .map_err(|errno| self.err("DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL", point, errno))?;
        self.last_set.fetch_max(point, Ordering::Relaxed);
        bump(&COUNTERS.points_cpu_signalled);
        Ok(())
    }

    /// An eventfd (owned by the caller, non-blocking, close-on-exec) that becomes readable
    /// when `point` signals ([`WaitMode::Signaled`]) or materializes ([`WaitMode::Available`]);
    /// at once if that already happened. Until then it costs one small kernel allocation on
    /// the syncobj and no CPU. Needs `SYNCOBJ_EVENTFD` ([`SyncobjError::EventfdUnsupported`]).
    ///
    /// The kernel has no "unregister": closing the eventfd does not remove the registration,
    /// which lives (with a reference to the eventfd's context) until the point fires or the
    /// syncobj is destroyed. So registrations on points that never materialize accumulate on
    /// a long-lived timeline; callers that accept points from clients should bound how many
    /// waits a client may have pending (e.g. one per surface commit in flight).
    pub fn eventfd(&self, point: u64, mode: WaitMode) -> Result<OwnedFd, SyncobjError> {
        if let Err(errno) = self.dev.eventfd_probe {
            return Err(SyncobjError::EventfdUnsupported { errno });
        }
        let efd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|errno| self.err("eventfd", point, errno))?;
        let available = mode == WaitMode::Available;
        ioctl::eventfd(self.dev.fd(), self.handle, point, efd.as_fd(), available)
            .map_err(|errno| self.err("DRM_IOCTL_SYNCOBJ_EVENTFD", point, errno))?;
        bump(&COUNTERS.eventfds_registered);
        Ok(efd)
    }

    /// Blocks until `point` signals or materializes, or `timeout` passes
    /// ([`SyncobjError::Timeout`]). Waits for submission too. For tests and tools; a
    /// compositor uses [`eventfd`](Self::eventfd) or
    /// [`TimelinePointSource`](crate::source::TimelinePointSource).
    pub fn wait(&self, point: u64, mode: WaitMode, timeout: Duration) -> Result<(), SyncobjError> {
        let deadline = monotonic_now_ns()
            .saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        let deadline = i64::try_from(deadline).unwrap_or(i64::MAX);
        let available = mode == WaitMode::Available;
        match ioctl::timeline_wait(self.dev.fd(), self.handle, point, available, deadline) {
            Ok(()) => Ok(()),
            Err(Errno::TIME) | Err(Errno::TIMEDOUT) => Err(SyncobjError::Timeout {
                handle: raw(self.handle),
                point,
                timeout,
            }),
            Err(errno) => Err(self.err("DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT", point, errno)),
        }
    }

    /// The fence of `point` as a [`SyncFile`]: `TRANSFER` into the device's scratch binary
    /// syncobj, then `HANDLE_TO_FD(EXPORT_SYNC_FILE)`. A point that already signalled gives a
    /// signalled stub; one that has no fence yet is [`SyncobjError::PointNotMaterialized`].
    /// (The scratch syncobj keeps a reference to this fence until the next conversion.)
    pub fn export_point(&self, point: u64) -> Result<SyncFile, SyncobjError> {
        let dev = &self.dev;
        let scratch = dev.lock_scratch();
        ioctl::transfer(dev.fd(), (self.handle, point), (*scratch, 0)).map_err(|errno| {
            if errno == Errno::INVAL {
                SyncobjError::PointNotMaterialized {
                    handle: raw(self.handle),
                    point,
                }
            } else {
                self.err("DRM_IOCTL_SYNCOBJ_TRANSFER", point, errno)
            }
        })?;
        let fd = ioctl::handle_to_fd(dev.fd(), *scratch, true)
            .map_err(|errno| self.err("DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD", point, errno))?;
        drop(scratch);
        bump(&COUNTERS.points_exported);
        Ok(SyncFile::from_kernel(fd))
    }

    /// Makes `point` signal when `fence` does: `FD_TO_HANDLE(IMPORT_SYNC_FILE)` into the
    /// device's scratch binary syncobj (an existing handle, unlike the `drm` crate's helper),
    /// then `TRANSFER` to the point. The fence is borrowed. Must move forward.
    pub fn import_point(&self, point: u64, fence: &SyncFile) -> Result<(), SyncobjError> {
        self.check_forward(point)?;
        let dev = &self.dev;
        let scratch = dev.lock_scratch();
        ioctl::import_sync_file(dev.fd(), *scratch, fence.as_fd()).map_err(|errno| {
            self.err(
                "DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE(IMPORT_SYNC_FILE)",
                point,
                errno,
            )
        })?;
        ioctl::transfer(dev.fd(), (*scratch, 0), (self.handle, point))
            .map_err(|errno| self.err("DRM_IOCTL_SYNCOBJ_TRANSFER", point, errno))?;
        drop(scratch);
        self.last_set.fetch_max(point, Ordering::Relaxed);
        bump(&COUNTERS.points_imported);
        Ok(())
    }

    /// Exports the syncobj itself as an fd (owned by the caller), as a client would send it.
    pub fn export_fd(&self) -> Result<OwnedFd, SyncobjError> {
        ioctl::handle_to_fd(self.dev.fd(), self.handle, false)
            .map_err(|errno| self.err("DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD", 0, errno))
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        COUNTERS.live_timelines.fetch_sub(1, Ordering::Relaxed);
        if let Err(errno) = ioctl::destroy(self.dev.fd(), self.handle) {
            tracing::warn!(handle = raw(self.handle), %errno, "DRM_IOCTL_SYNCOBJ_DESTROY failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_drm_fds_are_bad_input() {
        let (r, _w) = rustix::pipe::pipe().expect("pipe");
        let e = SyncobjDevice::new(r).expect_err("a pipe is not a DRM device");
        assert!(matches!(e, SyncobjError::NotADrmDevice { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::BadInput);

        let memfd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        let e = SyncobjDevice::new(memfd).expect_err("memfd");
        assert_eq!(e.kind(), ErrorKind::BadInput);

        // /dev/null is a character device, but not major 226.
        if let Ok(null) = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            let e = SyncobjDevice::new(null).expect_err("/dev/null");
            assert!(matches!(e, SyncobjError::NotADrmDevice { .. }), "{e:?}");
        }
    }

    #[test]
    fn error_kinds() {
        use ErrorKind::*;
        let cases: Vec<(SyncobjError, ErrorKind)> = vec![
            (
                SyncobjError::TimelinesUnsupported {
                    driver: "vgem".into(),
                    syncobj: false,
                },
                Unsupported,
            ),
            (
                SyncobjError::EventfdUnsupported {
                    errno: Errno::INVAL,
                },
                Unsupported,
            ),
            (
                SyncobjError::NotASyncobj {
                    fd: 3,
                    errno: Errno::INVAL,
                },
                BadInput,
            ),
            (
                SyncobjError::PointWentBackwards { point: 3, last: 5 },
                BadInput,
            ),
            (
                SyncobjError::PointNotMaterialized {
                    handle: 1,
                    point: 9,
                },
                BadInput,
            ),
            (
                SyncobjError::Timeout {
                    handle: 1,
                    point: 9,
                    timeout: Duration::ZERO,
                },
                Os,
            ),
            (
                SyncobjError::Ioctl {
                    op: "x",
                    handle: 1,
                    point: 0,
                    errno: Errno::NOMEM,
                },
                Os,
            ),
            (
                SyncobjError::Ioctl {
                    op: "x",
                    handle: 1,
                    point: 0,
                    errno: Errno::BADF,
                },
                BadInput,
            ),
            (
                SyncobjError::Ioctl {
                    op: "x",
                    handle: 1,
                    point: 0,
                    errno: Errno::OPNOTSUPP,
                },
                Unsupported,
            ),
        ];
        for (e, k) in cases {
            assert_eq!(e.kind(), k, "{e}");
        }
    }
}
