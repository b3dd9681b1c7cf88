//! dma-buf implicit fences <-> [`SyncFile`]: `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` and
//! `DMA_BUF_IOCTL_IMPORT_SYNC_FILE` (Linux 6.0+), for single- and multi-plane buffers, plus
//! the `poll()` fallback for kernels without them.
//!
//! * **Export** takes a *snapshot*: the returned [`SyncFile`] holds the fences on the buffer
//!   at the time of the call; fences added later do not delay it. [`Access::Read`] returns
//!   the fences a reader must wait for (the writers); [`Access::Write`] returns all fences.
//!   A buffer without fences gives an already-signalled stub.
//! * **Import** adds a fence to the buffer (never replaces): [`Access::Read`] adds it as a
//!   read fence (later writers wait for it), [`Access::Write`] as a write fence (everyone
//!   waits).
//!
//! Ownership: every function here *borrows* the dma-buf fds ([`BorrowedFd`]); the caller
//! keeps them. Exported fences are returned as owned [`SyncFile`]s. Each function first checks
//! that the fd lives on the dma-buf filesystem (`fstatfs`), so no other driver ever sees
//! these ioctls, and a wrong fd is [`ErrorKind::BadInput`].
//!
//! ```no_run
//! use std::os::fd::BorrowedFd;
//! use syncbridge_bridge::dmabuf::{self, Access, DmabufFenceSupport};
//!
//! # fn planes() -> Vec<BorrowedFd<'static>> { unimplemented!() }
//! let planes = planes(); // e.g. smithay's `Dmabuf::handles()`
//! match DmabufFenceSupport::probe() {
//!     DmabufFenceSupport::ExportImport => {
//!         // Acquire: what must finish before we may read the client's buffer.
//!         let acquire = dmabuf::export_planes(&planes, Access::Read).expect("export");
//!         // ... wait for `acquire` with a `source::SyncFileSource`, then render ...
//!         // Release: make the client's next write wait for our read.
//!         # let render_done = acquire;
//!         dmabuf::import_planes(&planes, &render_done, Access::Read).expect("import");
//!     }
//!     DmabufFenceSupport::PollFallback { reason } => {
//!         tracing::info!("dma-buf fence export/import unavailable ({reason}); polling");
//!         let _ready = dmabuf::poll_readable(&planes).expect("poll");
//!     }
//! }
//! ```

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::error::{errno_is_bad_fd, errno_is_unsupported, ErrorKind};
use crate::stats::{bump, COUNTERS};
use crate::sync_file::{SyncFile, SyncFileError};
use crate::sys;

/// Which side of the buffer's reservation object a fence belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Export: the fences a reader must wait for (writers only). Import: add a read fence.
    Read,
    /// Export: all fences (readers and writers). Import: add a write fence.
    Write,
}

impl Access {
    /// The `DMA_BUF_SYNC_*` flag bits for this access.
    pub fn flags(self) -> u32 {
        match self {
            Access::Read => sys::DMA_BUF_SYNC_READ,
            Access::Write => sys::DMA_BUF_SYNC_WRITE,
        }
    }

    /// Parses `DMA_BUF_SYNC_READ` (1), `DMA_BUF_SYNC_WRITE` (2) or both (3, same as Write).
    /// Anything else is [`DmabufFenceError::BadFlags`].
    pub fn from_flags(flags: u32) -> Result<Access, DmabufFenceError> {
        match flags {
            sys::DMA_BUF_SYNC_READ => Ok(Access::Read),
            f if f == sys::DMA_BUF_SYNC_WRITE
                || f == sys::DMA_BUF_SYNC_READ | sys::DMA_BUF_SYNC_WRITE =>
            {
                Ok(Access::Write)
            }
            other => Err(DmabufFenceError::BadFlags { flags: other }),
        }
    }
}

/// Errors of dma-buf fence export/import.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DmabufFenceError {
    /// The fd is not a dma-buf (`f_type` of its filesystem given). No ioctl was sent.
    #[error("fd {fd} is not a dma-buf (filesystem type {fs_type:#x})")]
    NotADmabuf {
        /// The fd number.
        fd: RawFd,
        /// `statfs.f_type` of the fd.
        fs_type: u64,
    },
    /// The fd was closed or invalid.
    #[error("{op} on fd {fd}: fd is closed or invalid ({errno})")]
    BadFd {
        /// The operation.
        op: &'static str,
        /// The fd number.
        fd: RawFd,
        /// The errno (EBADF).
        errno: Errno,
    },
    /// Access flags other than READ, WRITE or both.
    #[error(
        "bad dma-buf sync flags {flags:#x} (want DMA_BUF_SYNC_READ and/or DMA_BUF_SYNC_WRITE)"
    )]
    BadFlags {
        /// The rejected flags.
        flags: u32,
    },
    /// An empty plane list.
    #[error("no dma-buf planes given")]
    NoPlanes,
    /// The kernel has no sync_file export/import on dma-bufs (before Linux 6.0): use
    /// [`poll_readable`] and CPU-side release.
    #[error("{op} is not supported by this kernel (dma-buf fd {fd}): {errno}")]
    Unsupported {
        /// The ioctl.
        op: &'static str,
        /// The dma-buf fd.
        fd: RawFd,
        /// The errno (ENOTTY).
        errno: Errno,
    },
    /// Any other failure (ENOMEM, EMFILE, a driver error).
    #[error("{op} on dma-buf fd {fd} failed: {errno}")]
    Os {
        /// The ioctl or syscall.
        op: &'static str,
        /// The dma-buf fd.
        fd: RawFd,
        /// The errno.
        errno: Errno,
    },
    /// Merging the per-plane fences failed.
    #[error("merging per-plane fences: {0}")]
    Merge(#[from] SyncFileError),
}

impl DmabufFenceError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DmabufFenceError::NotADmabuf { .. }
            | DmabufFenceError::BadFd { .. }
            | DmabufFenceError::BadFlags { .. }
            | DmabufFenceError::NoPlanes => ErrorKind::BadInput,
            DmabufFenceError::Unsupported { .. } => ErrorKind::Unsupported,
            DmabufFenceError::Os { .. } => ErrorKind::Os,
            DmabufFenceError::Merge(e) => e.kind(),
        }
    }

    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            DmabufFenceError::BadFd { errno, .. }
            | DmabufFenceError::Unsupported { errno, .. }
            | DmabufFenceError::Os { errno, .. } => Some(*errno),
            DmabufFenceError::Merge(e) => e.errno(),
            _ => None,
        }
    }

    /// Classifies an errno from an ioctl on an fd already known to be a dma-buf.
    fn from_errno(op: &'static str, fd: RawFd, errno: Errno) -> Self {
        if errno_is_bad_fd(errno) {
            DmabufFenceError::BadFd { op, fd, errno }
        } else if errno_is_unsupported(errno) {
            DmabufFenceError::Unsupported { op, fd, errno }
        } else {
            DmabufFenceError::Os { op, fd, errno }
        }
    }
}

/// Whether `fd` is a dma-buf (its file lives on the dma-buf pseudo filesystem).
pub fn is_dmabuf(fd: BorrowedFd<'_>) -> Result<bool, DmabufFenceError> {
    match sys::fs_type(fd) {
        Ok(t) => Ok(t == sys::DMA_BUF_MAGIC),
        Err(errno) => Err(DmabufFenceError::from_errno(
            "fstatfs",
            fd.as_raw_fd(),
            errno,
        )),
    }
}

fn check_dmabuf(fd: BorrowedFd<'_>) -> Result<(), DmabufFenceError> {
    match sys::fs_type(fd) {
        Ok(sys::DMA_BUF_MAGIC) => Ok(()),
        Ok(fs_type) => Err(DmabufFenceError::NotADmabuf {
            fd: fd.as_raw_fd(),
            fs_type,
        }),
        Err(errno) => Err(DmabufFenceError::from_errno(
            "fstatfs",
            fd.as_raw_fd(),
            errno,
        )),
    }
}

fn export_raw(dmabuf: BorrowedFd<'_>, flags: u32) -> Result<OwnedFd, Errno> {
    let mut arg = sys::DmaBufSyncFile { flags, fd: -1 };
    // SAFETY: DMA_BUF_IOCTL_EXPORT_SYNC_FILE takes a `struct dma_buf_export_sync_file` in and
    // out, no pointers; on success `fd` is a new sync_file fd that we take ownership of below.
    unsafe { sys::ioctl_rw::<{ sys::DMA_BUF_IOCTL_EXPORT_SYNC_FILE }, _>(dmabuf, &mut arg)? };
    sys::owned_from_kernel(arg.fd)
}

fn import_raw(dmabuf: BorrowedFd<'_>, fence: BorrowedFd<'_>, flags: u32) -> Result<(), Errno> {
    let arg = sys::DmaBufSyncFile {
        flags,
        fd: fence.as_raw_fd(),
    };
    // SAFETY: DMA_BUF_IOCTL_IMPORT_SYNC_FILE reads a `struct dma_buf_import_sync_file`, no
    // pointers; `fd` is borrowed for the duration of the call and the kernel takes its own
    // reference to the fence.
    unsafe { sys::ioctl_w::<{ sys::DMA_BUF_IOCTL_IMPORT_SYNC_FILE }, _>(dmabuf, arg) }
}

/// Exports a snapshot of the dma-buf's fences for `access` as a [`SyncFile`].
///
/// `dmabuf` is borrowed. Errors: not a dma-buf / closed fd → [`ErrorKind::BadInput`]; kernel
/// before 6.0 → [`ErrorKind::Unsupported`].
pub fn export_sync_file(
    dmabuf: BorrowedFd<'_>,
    access: Access,
) -> Result<SyncFile, DmabufFenceError> {
    check_dmabuf(dmabuf)?;
    let fd = export_raw(dmabuf, access.flags()).map_err(|errno| {
        DmabufFenceError::from_errno("DMA_BUF_IOCTL_EXPORT_SYNC_FILE", dmabuf.as_raw_fd(), errno)
    })?;
    bump(&COUNTERS.fences_exported);
    Ok(SyncFile::from_kernel(fd))
}

/// Adds `fence` to the dma-buf as a read ([`Access::Read`]) or write ([`Access::Write`])
/// fence. Both fds are borrowed. The kernel adds, never replaces.
pub fn import_sync_file(
    dmabuf: BorrowedFd<'_>,
    fence: &SyncFile,
    access: Access,
) -> Result<(), DmabufFenceError> {
    check_dmabuf(dmabuf)?;
    import_raw(dmabuf, fence.as_fd(), access.flags()).map_err(|errno| {
        DmabufFenceError::from_errno("DMA_BUF_IOCTL_IMPORT_SYNC_FILE", dmabuf.as_raw_fd(), errno)
    })?;
    bump(&COUNTERS.fences_imported);
    Ok(())
}

/// Raw-flag variant of [`export_sync_file`] for callers holding `DMA_BUF_SYNC_*` bits
/// (bad flags → [`DmabufFenceError::BadFlags`]).
pub fn export_sync_file_flags(
    dmabuf: BorrowedFd<'_>,
    flags: u32,
) -> Result<SyncFile, DmabufFenceError> {
    export_sync_file(dmabuf, Access::from_flags(flags)?)
}

/// Raw-flag variant of [`import_sync_file`].
pub fn import_sync_file_flags(
    dmabuf: BorrowedFd<'_>,
    fence: &SyncFile,
    flags: u32,
) -> Result<(), DmabufFenceError> {
    import_sync_file(dmabuf, fence, Access::from_flags(flags)?)
}

/// The planes with duplicates removed: the same fd number, or another fd on the same dma-buf
/// (same inode), appears once. Every plane is checked to be a dma-buf.
pub fn distinct_planes<'a>(
    planes: &[BorrowedFd<'a>],
) -> Result<Vec<BorrowedFd<'a>>, DmabufFenceError> {
    if planes.is_empty() {
        return Err(DmabufFenceError::NoPlanes);
    }
    if let [only] = planes {
        check_dmabuf(*only)?;
        return Ok(vec![*only]);
    }
    let mut seen: Vec<(u64, u64)> = Vec::with_capacity(planes.len());
    let mut out = Vec::with_capacity(planes.len());
    for &plane in planes {
        check_dmabuf(plane)?;
        let st = rustix::fs::fstat(plane)
            .map_err(|errno| DmabufFenceError::from_errno("fstat", plane.as_raw_fd(), errno))?;
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let key = (st.st_dev as u64, st.st_ino as u64);
        if !seen.contains(&key) {
            seen.push(key);
            out.push(plane);
        }
    }
    Ok(out)
}

/// [`export_sync_file`] for every distinct plane, merged into one [`SyncFile`].
pub fn export_planes(
    planes: &[BorrowedFd<'_>],
    access: Access,
) -> Result<SyncFile, DmabufFenceError> {
    if let [only] = planes {
        return export_sync_file(*only, access);
    }
    let distinct = distinct_planes(planes)?;
    let mut acc: Option<SyncFile> = None;
    for plane in distinct {
        let fence = export_sync_file(plane, access)?;
        acc = Some(match acc {
            None => fence,
            Some(prev) => prev.merge(&fence)?,
        });
    }
    acc.ok_or(DmabufFenceError::NoPlanes)
}

/// [`import_sync_file`] into every distinct plane.
pub fn import_planes(
    planes: &[BorrowedFd<'_>],
    fence: &SyncFile,
    access: Access,
) -> Result<(), DmabufFenceError> {
    if let [only] = planes {
        return import_sync_file(*only, fence, access);
    }
    for plane in distinct_planes(planes)? {
        import_sync_file(plane, fence, access)?;
    }
    Ok(())
}

/// Fallback readiness check: whether every plane polls readable (its write fences have
/// signalled, so reading is safe). Zero timeout; never blocks. Planes are borrowed.
pub fn poll_readable(planes: &[BorrowedFd<'_>]) -> Result<bool, DmabufFenceError> {
    if planes.is_empty() {
        return Err(DmabufFenceError::NoPlanes);
    }
    for &p in planes {
        check_dmabuf(p)?;
    }
    let mut fds: Vec<PollFd<'_>> = planes
        .iter()
        .map(|p| PollFd::from_borrowed_fd(*p, PollFlags::IN))
        .collect();
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(errno) => {
                return Err(DmabufFenceError::from_errno(
                    "poll",
                    planes.first().map_or(-1, |p| p.as_raw_fd()),
                    errno,
                ))
            }
        }
    }
    let mut all = true;
    for (i, p) in fds.iter().enumerate() {
        let rev = p.revents();
        if rev.contains(PollFlags::NVAL) {
            let fd = planes.get(i).map_or(-1, |f| f.as_raw_fd());
            return Err(DmabufFenceError::BadFd {
                op: "poll",
                fd,
                errno: Errno::BADF,
            });
        }
        all &= rev.contains(PollFlags::IN);
    }
    Ok(all)
}

/// Whether this kernel can export/import sync_files on dma-bufs. Decided once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmabufFenceSupport {
    /// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`/`IMPORT_SYNC_FILE` work.
    ExportImport,
    /// They do not (or could not be verified to): wait for buffers by polling the dma-buf fds
    /// ([`poll_readable`]) and release on the CPU.
    PollFallback {
        /// Why, for logs.
        reason: String,
    },
}

static SUPPORT: OnceLock<(DmabufFenceSupport, String)> = OnceLock::new();

/// The probe's private one-page dma-buf (never shared, so it only ever holds signalled
/// fences), kept for [`signaled_stub`].
static PRIVATE_BUF: OnceLock<Option<(OwnedFd, &'static str)>> = OnceLock::new();

fn private_buf() -> Option<BorrowedFd<'static>> {
    PRIVATE_BUF
        .get_or_init(probe_dmabuf)
        .as_ref()
        .map(|(fd, _)| fd.as_fd())
}

/// An already-signalled [`SyncFile`], exported from a private dma-buf that no one else can
/// add fences to (one ioctl). Needs access to `/dev/dma_heap/system` or `/dev/udmabuf`
/// ([`ErrorKind::Unsupported`] otherwise; a [`SyncobjDevice`](crate::SyncobjDevice) offers
/// [`signaled_sync_file`](crate::SyncobjDevice::signaled_sync_file) too).
pub fn signaled_stub() -> Result<SyncFile, DmabufFenceError> {
    let Some(buf) = private_buf() else {
        return Err(DmabufFenceError::Unsupported {
            op: "signaled_stub (no dma-heap or udmabuf access for a private dma-buf)",
            fd: -1,
            errno: Errno::NODEV,
        });
    };
    export_sync_file(buf, Access::Write)
}

impl DmabufFenceSupport {
    /// Probes once per process (cached): creates a one-page dma-buf from the `system`
    /// dma-heap or from udmabuf when either is accessible and tries export+import on it;
    /// otherwise decides by kernel version (6.0+). The first call costs a few syscalls.
    pub fn probe() -> DmabufFenceSupport {
        SUPPORT.get_or_init(probe_uncached).0.clone()
    }

    /// How [`probe`](Self::probe) decided (e.g. "verified on a udmabuf"), for logs.
    pub fn probe_method() -> &'static str {
        SUPPORT.get_or_init(probe_uncached).1.as_str()
    }

    /// Probes with a dma-buf the caller has (e.g. the first client buffer) instead, without
    /// caching: exports its read fences and reads the answer. Borrowed fd.
    pub fn probe_with(dmabuf: BorrowedFd<'_>) -> Result<DmabufFenceSupport, DmabufFenceError> {
        match export_sync_file(dmabuf, Access::Read) {
            Ok(_stub) => Ok(DmabufFenceSupport::ExportImport),
            Err(e) if e.kind() == ErrorKind::Unsupported => Ok(DmabufFenceSupport::PollFallback {
                reason: e.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// True for [`DmabufFenceSupport::ExportImport`].
    pub fn is_supported(&self) -> bool {
        matches!(self, DmabufFenceSupport::ExportImport)
    }
}

fn probe_uncached() -> (DmabufFenceSupport, String) {
    let probe_buf = PRIVATE_BUF.get_or_init(probe_dmabuf).as_ref();
    let result = match probe_buf {
        Some((buf, how)) => match probe_on(buf.as_fd()) {
            Ok(()) => (
                DmabufFenceSupport::ExportImport,
                format!("verified on a {how}"),
            ),
            Err(e) if e.kind() == ErrorKind::Unsupported => (
                DmabufFenceSupport::PollFallback {
                    reason: e.to_string(),
                },
                format!("refused on a {how}"),
            ),
            Err(e) => (
                version_verdict(),
                format!("probe on a {how} failed ({e}); decided by kernel version"),
            ),
        },
        None => (
            version_verdict(),
            "no dma-heap/udmabuf access; decided by kernel version".into(),
        ),
    };
    tracing::info!(support = ?result.0, method = %result.1, "dma-buf sync_file export/import probe");
    result
}

fn probe_on(buf: BorrowedFd<'_>) -> Result<(), DmabufFenceError> {
    let stub = export_sync_file(buf, Access::Write)?;
    import_sync_file(buf, &stub, Access::Read)
}

fn version_verdict() -> DmabufFenceSupport {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy().into_owned();
    match parse_kernel_version(&release) {
        Some(v) if v >= (6, 0) => DmabufFenceSupport::ExportImport,
        Some(_) => DmabufFenceSupport::PollFallback {
            reason: format!("kernel {release} predates Linux 6.0's DMA_BUF_IOCTL_EXPORT_SYNC_FILE"),
        },
        None => DmabufFenceSupport::PollFallback {
            reason: format!("cannot parse kernel release {release:?}"),
        },
    }
}

/// Parses "6.12.117+deb12-amd64" into (6, 12).
pub(crate) fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// A small dma-buf for probing: from the system dma-heap, or from udmabuf.
fn probe_dmabuf() -> Option<(OwnedFd, &'static str)> {
    use rustix::fs::{open, Mode, OFlags};
    if let Ok(heap) = open(
        "/dev/dma_heap/system",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let mut arg = sys::DmaHeapAllocationData {
            len: 4096,
            fd: 0,
            fd_flags: (OFlags::RDWR | OFlags::CLOEXEC).bits(),
            heap_flags: 0,
        };
        // SAFETY: DMA_HEAP_IOCTL_ALLOC takes a `struct dma_heap_allocation_data` in and out,
        // no pointers; on success `fd` is a new dma-buf fd that we take ownership of.
        if unsafe { sys::ioctl_rw::<{ sys::DMA_HEAP_IOCTL_ALLOC }, _>(heap.as_fd(), &mut arg) }
            .is_ok()
        {
            if let Ok(fd) = i32::try_from(arg.fd)
                .map_err(|_| Errno::BADF)
                .and_then(sys::owned_from_kernel)
            {
                return Some((fd, "dma-heap buffer"));
            }
        }
    }
    let dev = open(
        "/dev/udmabuf",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let memfd = rustix::fs::memfd_create(
        "syncbridge-probe",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .ok()?;
    rustix::fs::ftruncate(&memfd, 4096).ok()?;
    rustix::fs::fcntl_add_seals(&memfd, rustix::fs::SealFlags::SHRINK).ok()?;
    let arg = sys::UdmabufCreate {
        memfd: u32::try_from(memfd.as_raw_fd()).ok()?,
        flags: sys::UDMABUF_FLAGS_CLOEXEC,
        offset: 0,
        size: 4096,
    };
    // UDMABUF_CREATE returns the new fd as the ioctl's return value, which rustix's `Setter`
    // pattern discards, so call it through a pattern that keeps the return value.
    let fd = udmabuf_create(dev.as_fd(), arg).ok()?;
    Some((fd, "udmabuf"))
}

fn udmabuf_create(dev: BorrowedFd<'_>, arg: sys::UdmabufCreate) -> Result<OwnedFd, Errno> {
    struct Create(sys::UdmabufCreate);
    // SAFETY: UDMABUF_CREATE is `_IOW('u', 0x42, struct udmabuf_create)`: the kernel reads one
    // `struct udmabuf_create` (no pointers) from the pointer we pass and returns a new fd as
    // the ioctl's return value, which `output_from_ptr` turns into an owned fd.
    unsafe impl rustix::ioctl::Ioctl for Create {
        type Output = OwnedFd;
        const IS_MUTATING: bool = false;
        fn opcode(&self) -> rustix::ioctl::Opcode {
            sys::UDMABUF_CREATE
        }
        fn as_ptr(&mut self) -> *mut core::ffi::c_void {
            (&mut self.0 as *mut sys::UdmabufCreate).cast()
        }
        unsafe fn output_from_ptr(
            out: rustix::ioctl::IoctlOutput,
            _ptr: *mut core::ffi::c_void,
        ) -> rustix::io::Result<OwnedFd> {
            sys::owned_from_kernel(out)
        }
    }
    // SAFETY: `Create` describes UDMABUF_CREATE's argument and return value exactly (above).
    unsafe { rustix::ioctl::ioctl(dev, Create(arg)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_flags_round_trip() {
        assert_eq!(Access::from_flags(1).ok(), Some(Access::Read));
        assert_eq!(Access::from_flags(2).ok(), Some(Access::Write));
        assert_eq!(Access::from_flags(3).ok(), Some(Access::Write));
        for bad in [0, 4, 5, 0xffff_ffff] {
            let e = Access::from_flags(bad).expect_err("bad flags");
            assert_eq!(e.kind(), ErrorKind::BadInput);
            assert!(matches!(e, DmabufFenceError::BadFlags { flags } if flags == bad));
        }
        assert_eq!(Access::Read.flags(), 1);
        assert_eq!(Access::Write.flags(), 2);
    }

    #[test]
    fn non_dmabuf_fds_are_bad_input() {
        let (r, _w) = rustix::pipe::pipe().expect("pipe");
        let memfd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd");
        for fd in [r.as_fd(), memfd.as_fd(), efd.as_fd()] {
            let e = export_sync_file(fd, Access::Read).expect_err("not a dma-buf");
            assert!(matches!(e, DmabufFenceError::NotADmabuf { .. }), "{e:?}");
            assert_eq!(e.kind(), ErrorKind::BadInput);
            let e = poll_readable(&[fd]).expect_err("not a dma-buf");
            assert_eq!(e.kind(), ErrorKind::BadInput);
            let e = export_planes(&[fd, fd], Access::Write).expect_err("not a dma-buf");
            assert_eq!(e.kind(), ErrorKind::BadInput);
        }
        assert!(!is_dmabuf(r.as_fd()).expect("fstatfs"));
    }

    #[test]
    fn no_planes_is_bad_input() {
        assert!(matches!(
            export_planes(&[], Access::Read),
            Err(DmabufFenceError::NoPlanes)
        ));
        assert!(matches!(
            poll_readable(&[]),
            Err(DmabufFenceError::NoPlanes)
        ));
        assert_eq!(DmabufFenceError::NoPlanes.kind(), ErrorKind::BadInput);
    }

    #[test]
    fn errno_classification() {
        let e = DmabufFenceError::from_errno("x", 1, Errno::NOTTY);
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert_eq!(e.errno(), Some(Errno::NOTTY));
        assert_eq!(
            DmabufFenceError::from_errno("x", 1, Errno::BADF).kind(),
            ErrorKind::BadInput
        );
        assert_eq!(
            DmabufFenceError::from_errno("x", 1, Errno::NOMEM).kind(),
            ErrorKind::Os
        );
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.12.117+deb12-amd64"), Some((6, 12)));
        assert_eq!(parse_kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(parse_kernel_version(""), None);
    }

    #[test]
    fn signaled_stub_is_signalled_or_unsupported() {
        match signaled_stub() {
            Ok(stub) => assert!(stub.is_signaled().expect("poll")),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}"),
        }
    }

    #[test]
    fn probe_is_cached_and_does_not_panic() {
        let a = DmabufFenceSupport::probe();
        let b = DmabufFenceSupport::probe();
        assert_eq!(a, b);
        assert!(!DmabufFenceSupport::probe_method().is_empty());
    }
}
