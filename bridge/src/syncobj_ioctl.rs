//! The syncobj ioctls under [`crate::syncobj`], through the `drm` crate (0.14) wherever it
//! wraps them correctly, which is all of them but one:
//!
//! | ioctl | from |
//! |---|---|
//! | `GET_CAP`, `VERSION` | `drm::Device` |
//! | `SYNCOBJ_CREATE`, `_DESTROY`, `_SIGNAL`, `_TRANSFER`, `_QUERY`, `_TIMELINE_SIGNAL`, `_TIMELINE_WAIT`, `_EVENTFD` | `drm::control::Device` |
//! | `SYNCOBJ_HANDLE_TO_FD` (syncobj fd and `EXPORT_SYNC_FILE`) | `drm::control::Device::syncobj_to_fd` |
//! | `SYNCOBJ_FD_TO_HANDLE` (a syncobj fd) | `drm::control::Device::fd_to_syncobj` |
//! | `SYNCOBJ_FD_TO_HANDLE` with `IMPORT_SYNC_FILE` | ours, [`import_sync_file`] (the crate's is wrong, see there) |
//! | `SYNCOBJ_EVENTFD` on handle 0 (the support probe) | `drm_ffi::syncobj::eventfd` (the typed handle cannot be 0) |
//!
//! Two things the crate does not do are done here around every call: EINTR/EAGAIN are retried
//! (bounded, [`sys::retry`]), and its `io::Error`s become the [`Errno`] our errors carry.
//!
//! No fd is owned here: the DRM fd is borrowed for each call; the fds returned are new and
//! owned by the caller.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use drm::control::syncobj::Handle;
use drm::control::Device as _;
use drm::Device as _;
use rustix::io::Errno;

use crate::sys;

/// A borrowed DRM fd as the `drm` crate's device type, whose provided methods are the
/// ioctl wrappers.
struct Card<'a>(BorrowedFd<'a>);

impl AsFd for Card<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0
    }
}
impl drm::Device for Card<'_> {}
impl drm::control::Device for Card<'_> {}

/// The errno inside an error from the `drm` crate (its ioctls fail with
/// `io::Error::from_raw_os_error`); EIO if, against that, it carries none.
fn errno(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

/// Runs one `drm` crate call on `fd`, retrying EINTR/EAGAIN like libdrm's `drmIoctl` (the
/// crate does not).
fn call<T>(
    fd: BorrowedFd<'_>,
    mut f: impl FnMut(&Card<'_>) -> std::io::Result<T>,
) -> Result<T, Errno> {
    let card = Card(fd);
    sys::retry(|| f(&card).map_err(|e| errno(&e)))
}

/// A handle number from our errors and logs (the kernel never hands out 0).
pub(crate) fn raw(handle: Handle) -> u32 {
    handle.into()
}

/// `DRM_IOCTL_GET_CAP`.
pub(crate) fn get_cap(fd: BorrowedFd<'_>, cap: drm::DriverCapability) -> Result<u64, Errno> {
    call(fd, |c| c.get_driver_capability(cap))
}

/// The driver name (`DRM_IOCTL_VERSION`, twice: sizes, then the strings).
pub(crate) fn driver_name(fd: BorrowedFd<'_>) -> Result<String, Errno> {
    let driver = call(fd, |c| c.get_driver())?;
    Ok(driver.name().to_string_lossy().into_owned())
}

/// `DRM_IOCTL_SYNCOBJ_CREATE`. (The crate unwraps the handle into a `NonZeroU32`: the kernel
/// allocates handles from 1, so that cannot panic.)
pub(crate) fn create(fd: BorrowedFd<'_>, signaled: bool) -> Result<Handle, Errno> {
    call(fd, |c| c.create_syncobj(signaled))
}

/// `DRM_IOCTL_SYNCOBJ_DESTROY`.
pub(crate) fn destroy(fd: BorrowedFd<'_>, handle: Handle) -> Result<(), Errno> {
    call(fd, |c| c.destroy_syncobj(handle))
}

/// `DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD`: the syncobj itself as an fd, or (`export_sync_file`)
/// its current fence as a sync_file. The fd is new and the caller's.
pub(crate) fn handle_to_fd(
    fd: BorrowedFd<'_>,
    handle: Handle,
    export_sync_file: bool,
) -> Result<OwnedFd, Errno> {
    call(fd, |c| c.syncobj_to_fd(handle, export_sync_file))
}

/// `DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE` of a syncobj fd (borrowed; the kernel takes its own
/// reference to the syncobj): a new handle.
pub(crate) fn fd_to_handle(fd: BorrowedFd<'_>, obj: BorrowedFd<'_>) -> Result<Handle, Errno> {
    call(fd, |c| c.fd_to_syncobj(obj, false))
}

/// `DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE` with `IMPORT_SYNC_FILE`: replaces the fence of the
/// *existing* syncobj `handle` with the sync_file `fence` (borrowed).
///
/// Ours, not the crate's: in that mode the kernel reads `handle` as the syncobj to import
/// into, and `drm_ffi::syncobj::fd_to_handle` always sends `handle: 0`, so
/// `fd_to_syncobj(fd, true)` can only fail (ENOENT); it would also unwrap the unchanged 0 as
/// the "new" handle. The argument struct and its values are drm-sys's.
pub(crate) fn import_sync_file(
    fd: BorrowedFd<'_>,
    handle: Handle,
    fence: BorrowedFd<'_>,
) -> Result<(), Errno> {
    let mut arg = drm_ffi::drm_syncobj_handle {
        handle: raw(handle),
        flags: drm_ffi::DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
        fd: fence.as_raw_fd(),
        pad: 0,
        point: 0,
    };
    // SAFETY: DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE takes a `struct drm_syncobj_handle` in and out
    // (drm-sys's, with the `point` member of newer UAPI headers: the opcode names its size and
    // the DRM core copies that size, so a kernel whose struct ends before `point` ignores it);
    // no pointers; `fence` is borrowed for the call and the kernel takes its own reference.
    unsafe { sys::ioctl_rw::<{ sys::DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE }, _>(fd, &mut arg) }
}

/// `DRM_IOCTL_SYNCOBJ_TRANSFER` of `src` (handle, point) to `dst`; point 0 is the binary
/// payload.
pub(crate) fn transfer(
    fd: BorrowedFd<'_>,
    src: (Handle, u64),
    dst: (Handle, u64),
) -> Result<(), Errno> {
    call(fd, |c| {
        c.syncobj_timeline_transfer(src.0, dst.0, src.1, dst.1)
    })
}

/// `DRM_IOCTL_SYNCOBJ_SIGNAL` of one binary syncobj.
pub(crate) fn signal_binary(fd: BorrowedFd<'_>, handle: Handle) -> Result<(), Errno> {
    call(fd, |c| c.syncobj_signal(&[handle]))
}

/// `DRM_IOCTL_SYNCOBJ_QUERY`: the last signalled point, or (`last_submitted`) the last
/// point that has a fence.
pub(crate) fn query(
    fd: BorrowedFd<'_>,
    handle: Handle,
    last_submitted: bool,
) -> Result<u64, Errno> {
    let mut points = [0u64];
    call(fd, |c| {
        c.syncobj_timeline_query(&[handle], &mut points, last_submitted)
    })?;
    Ok(points[0])
}

/// `DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL` of one point.
pub(crate) fn timeline_signal(fd: BorrowedFd<'_>, handle: Handle, point: u64) -> Result<(), Errno> {
    call(fd, |c| c.syncobj_timeline_signal(&[handle], &[point]))
}

/// `DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT` on one point with `WAIT_FOR_SUBMIT`, and
/// `WAIT_AVAILABLE` when `available`, until the absolute CLOCK_MONOTONIC `deadline_ns`.
pub(crate) fn timeline_wait(
    fd: BorrowedFd<'_>,
    handle: Handle,
    point: u64,
    available: bool,
    deadline_ns: i64,
) -> Result<(), Errno> {
    call(fd, |c| {
        c.syncobj_timeline_wait(&[handle], &[point], deadline_ns, false, true, available)
    })
    .map(drop)
}

/// `DRM_IOCTL_SYNCOBJ_EVENTFD`: `eventfd` (borrowed; the kernel takes a reference to its
/// context) is signalled when `point` signals or, with `available`, materializes.
pub(crate) fn eventfd(
    fd: BorrowedFd<'_>,
    handle: Handle,
    point: u64,
    eventfd: BorrowedFd<'_>,
    available: bool,
) -> Result<(), Errno> {
    call(fd, |c| c.syncobj_eventfd(handle, point, eventfd, available))
}

/// Whether the kernel has `DRM_IOCTL_SYNCOBJ_EVENTFD` (Linux 6.6+): calls it on handle 0
/// with a real eventfd; ENOENT ("no such syncobj") means the ioctl exists,
/// EINVAL/ENOTTY/EOPNOTSUPP that it does not. Through `drm_ffi` because the crate's typed
/// [`Handle`] cannot be 0, the one handle that never exists.
pub(crate) fn probe_eventfd(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
    let res = sys::retry(|| {
        drm_ffi::syncobj::eventfd(fd, 0, 0, efd.as_fd(), false)
            .map(drop)
            .map_err(|e| errno(&e))
    });
    match res {
        Err(Errno::NOENT) => Ok(()),
        Ok(()) => Ok(()), // cannot happen (handle 0 never exists), but it clearly works
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_of_drm_crate_errors() {
        let e = std::io::Error::from_raw_os_error(Errno::NOENT.raw_os_error());
        assert_eq!(errno(&e), Errno::NOENT);
        let e = std::io::Error::other("no errno");
        assert_eq!(errno(&e), Errno::IO);
    }

    #[test]
    fn handle_numbers_round_trip() {
        let h = Handle::from(std::num::NonZeroU32::new(7).expect("7 is not 0"));
        assert_eq!(raw(h), 7);
    }
}
