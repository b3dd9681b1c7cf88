//! Raw kernel interfaces the field's crates do not wrap (sync_file, dma-buf fences, dma-heap,
//! udmabuf) or wrap wrongly (one syncobj call, see `syncobj_ioctl.rs`): `#[repr(C)]`
//! argument structs, opcodes and the generic callers. Nothing here interprets errors;
//! callers turn `Errno` into their subsystem's error.
//!
//! Every struct mirrors the kernel UAPI header named next to it (Linux 6.12 `include/uapi`),
//! and the opcodes are checked against the numeric values from those headers in the tests at
//! the bottom of this file.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Opcode, Setter, Updater};

// ---------------------------------------------------------------------------------------
// linux/sync_file.h
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncMergeData {
    pub name: [u8; 32],
    pub fd2: i32,
    pub fence: i32,
    pub flags: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncFenceInfo {
    pub obj_name: [u8; 32],
    pub driver_name: [u8; 32],
    pub status: i32,
    pub flags: u32,
    pub timestamp_ns: u64,
}

impl SyncFenceInfo {
    pub(crate) const ZERO: Self = Self {
        obj_name: [0; 32],
        driver_name: [0; 32],
        status: 0,
        flags: 0,
        timestamp_ns: 0,
    };
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncFileInfo {
    pub name: [u8; 32],
    pub status: i32,
    pub flags: u32,
    pub num_fences: u32,
    pub pad: u32,
    pub sync_fence_info: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncSetDeadline {
    pub deadline_ns: u64,
    pub pad: u64,
}

const SYNC_IOC_MAGIC: u8 = b'>';
pub(crate) const SYNC_IOC_MERGE: Opcode = opcode::read_write::<SyncMergeData>(SYNC_IOC_MAGIC, 3);
pub(crate) const SYNC_IOC_FILE_INFO: Opcode = opcode::read_write::<SyncFileInfo>(SYNC_IOC_MAGIC, 4);
pub(crate) const SYNC_IOC_SET_DEADLINE: Opcode =
    opcode::write::<SyncSetDeadline>(SYNC_IOC_MAGIC, 5);

// ---------------------------------------------------------------------------------------
// linux/dma-buf.h
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct DmaBufSyncFile {
    pub flags: u32,
    pub fd: i32,
}

pub(crate) const DMA_BUF_SYNC_READ: u32 = 1;
pub(crate) const DMA_BUF_SYNC_WRITE: u32 = 2;
const DMA_BUF_BASE: u8 = b'b';
pub(crate) const DMA_BUF_IOCTL_EXPORT_SYNC_FILE: Opcode =
    opcode::read_write::<DmaBufSyncFile>(DMA_BUF_BASE, 2);
pub(crate) const DMA_BUF_IOCTL_IMPORT_SYNC_FILE: Opcode =
    opcode::write::<DmaBufSyncFile>(DMA_BUF_BASE, 3);

/// `DMA_BUF_MAGIC` from linux/magic.h: `f_type` of every dma-buf file (Linux 5.3+).
pub(crate) const DMA_BUF_MAGIC: u64 = 0x444d_4142;
/// `ANON_INODE_FS_MAGIC` from linux/magic.h: `f_type` of sync_file, eventfd, syncobj files.
pub(crate) const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;

// ---------------------------------------------------------------------------------------
// linux/dma-heap.h and linux/udmabuf.h (only used by the one-time support probe)
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct DmaHeapAllocationData {
    pub len: u64,
    pub fd: u32,
    pub fd_flags: u32,
    pub heap_flags: u64,
}
pub(crate) const DMA_HEAP_IOCTL_ALLOC: Opcode =
    opcode::read_write::<DmaHeapAllocationData>(b'H', 0);

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdmabufCreate {
    pub memfd: u32,
    pub flags: u32,
    pub offset: u64,
    pub size: u64,
}
pub(crate) const UDMABUF_FLAGS_CLOEXEC: u32 = 1;
pub(crate) const UDMABUF_CREATE: Opcode = opcode::write::<UdmabufCreate>(b'u', 0x42);

// ---------------------------------------------------------------------------------------
// drm/drm.h: only what the `drm` crate gets wrong (see `syncobj_ioctl.rs`)
// ---------------------------------------------------------------------------------------

/// `DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE` for the `IMPORT_SYNC_FILE` mode, which the `drm` crate
/// cannot do into an existing syncobj. Sized for drm-sys's `struct drm_syncobj_handle`, the
/// struct the crate's own `FD_TO_HANDLE` sends.
pub(crate) const DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE: Opcode =
    opcode::read_write::<drm_ffi::drm_syncobj_handle>(b'd', 0xC2);

// ---------------------------------------------------------------------------------------
// Generic callers
// ---------------------------------------------------------------------------------------

/// How often an ioctl interrupted by a signal (EINTR) or told to retry (EAGAIN) is retried,
/// like libdrm's `drmIoctl`, but bounded so that a misbehaving driver cannot spin us forever.
const MAX_RETRIES: u32 = 64;

/// Runs `f` (one ioctl) again while it fails with EINTR or EAGAIN, at most [`MAX_RETRIES`]
/// times more.
pub(crate) fn retry<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    let mut tries = 0;
    loop {
        match f() {
            Err(Errno::INTR | Errno::AGAIN) if tries < MAX_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// `_IOWR`: the kernel reads and writes `arg`.
///
/// # Safety
/// `OPCODE` must be an ioctl whose argument is exactly a `T` that the kernel reads and writes
/// in place, and any pointers inside `arg` must be valid for the access the ioctl performs.
pub(crate) unsafe fn ioctl_rw<const OPCODE: Opcode, T>(
    fd: BorrowedFd<'_>,
    arg: &mut T,
) -> Result<(), Errno> {
    retry(|| {
        // SAFETY: forwarded from this function's contract: OPCODE takes exactly a `T`, in and
        // out, and embedded pointers are valid. `arg` is a live exclusive borrow.
        unsafe { ioctl(fd, Updater::<OPCODE, T>::new(&mut *arg)) }
    })
}

/// `_IOW`: the kernel only reads `arg`.
///
/// # Safety
/// `OPCODE` must be an ioctl whose argument is exactly a `T` that the kernel only reads, and
/// any pointers inside `arg` must be valid for the access the ioctl performs.
pub(crate) unsafe fn ioctl_w<const OPCODE: Opcode, T: Copy>(
    fd: BorrowedFd<'_>,
    arg: T,
) -> Result<(), Errno> {
    retry(|| {
        // SAFETY: forwarded from this function's contract: OPCODE takes exactly a `T` that the
        // kernel reads; `Setter` passes a pointer to its own copy of `arg`.
        unsafe { ioctl(fd, Setter::<OPCODE, T>::new(arg)) }
    })
}

/// Takes ownership of an fd number the kernel has just returned from an ioctl.
///
/// Returns `Errno::BADF` for a negative number (a kernel that reported success but no fd).
pub(crate) fn owned_from_kernel(raw: RawFd) -> Result<OwnedFd, Errno> {
    if raw < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: the kernel just installed this fd in our table as the result of a successful
    // ioctl that creates a new file descriptor; nothing else owns it yet.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `f_type` of the filesystem an fd lives on.
pub(crate) fn fs_type(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let st = rustix::fs::fstatfs(fd)?;
    // `f_type` is a signed word on some targets; the magic numbers are all positive 32-bit.
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as u64)
}

/// Turns a NUL-padded fixed-size kernel name into a `String` (lossy on bad UTF-8).
pub(crate) fn c_name(bytes: &[u8]) -> String {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unnecessary_cast)] // `Opcode` is u32 on x86-64 but c_ulong elsewhere.
    fn opcodes_match_uapi_headers() {
        // Values from the 6.12 UAPI headers (linux/dma-buf.h, linux/sync_file.h, drm.h).
        assert_eq!(DMA_BUF_IOCTL_EXPORT_SYNC_FILE as u32, 0xC008_6202);
        assert_eq!(DMA_BUF_IOCTL_IMPORT_SYNC_FILE as u32, 0x4008_6203);
        assert_eq!(SYNC_IOC_MERGE as u32, 0xC030_3E03);
        assert_eq!(SYNC_IOC_FILE_INFO as u32, 0xC038_3E04);
        assert_eq!(SYNC_IOC_SET_DEADLINE as u32, 0x4010_3E05);
        // drm.h's is 0xC010_64C2: drm-sys's struct has the `point` member of later headers.
        assert_eq!(DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE as u32, 0xC018_64C2);
        assert_eq!(DMA_HEAP_IOCTL_ALLOC as u32, 0xC018_4800);
        assert_eq!(UDMABUF_CREATE as u32, 0x4018_7542);
    }

    #[test]
    fn c_name_stops_at_nul() {
        let mut buf = [0u8; 32];
        buf[..4].copy_from_slice(b"vgem");
        assert_eq!(c_name(&buf), "vgem");
        assert_eq!(c_name(b"abc"), "abc");
    }
}
