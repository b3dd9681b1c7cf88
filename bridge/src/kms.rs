//! KMS fence helpers: receiving a CRTC's `OUT_FENCE_PTR` fence as a [`SyncFile`], and
//! deciding what may go into a plane's `IN_FENCE_FD`.
//!
//! * [`OutFenceSlot`] is the `i32` the kernel writes the out-fence fd into. Its storage lives
//!   for the rest of the process (4 bytes, leaked on purpose), so the address handed to the
//!   kernel can never dangle, whatever safe code does with the slot. Create one per CRTC and
//!   reuse it for every commit.
//! * [`in_fence_value`] hands out a fence for `IN_FENCE_FD` only if the compositor made it
//!   or it has already signalled: a client fence that never signals must not stall a CRTC
//!   (the kernel waits for `IN_FENCE_FD` inside the commit, for the whole CRTC).
//!
//! Ownership: the out-fence becomes an owned [`SyncFile`] on [`OutFenceSlot::take`]; an
//! out-fence never taken is closed when the slot is dropped or reused.
//! [`in_fence_value`] borrows the fence: keep the `SyncFile` alive until the commit ioctl
//! returned (the kernel takes its own reference during the call).
//!
//! ```no_run
//! use drm::control::{atomic::AtomicModeReq, property, AtomicCommitFlags, Device};
//! use syncbridge_bridge::kms::OutFenceSlot;
//! # fn demo(card: &impl Device, crtc: drm::control::crtc::Handle, out_fence_prop: property::Handle) -> Result<(), Box<dyn std::error::Error>> {
//! let mut slot = OutFenceSlot::new(); // once per CRTC
//! let mut req = AtomicModeReq::new();
//! // ... planes, FB_ID ...
//! req.add_property(crtc, out_fence_prop, property::Value::SignedRange(slot.arm()));
//! card.atomic_commit(AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT, req)?;
//! if let Some(out_fence) = slot.take()? {
//!     // signals when this commit's frame starts scanning out, i.e. when the previous
//!     // frame's buffers are no longer read: the release fence for those buffers.
//!     # drop(out_fence);
//! }
//! # Ok(()) }
//! ```

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::sync_file::{SyncFile, SyncFileError};

/// Where the kernel writes a CRTC's out-fence fd (`OUT_FENCE_PTR`).
#[derive(Debug)]
pub struct OutFenceSlot {
    /// Never freed: the kernel may write here during any commit that got [`arm`]'s value.
    cell: &'static AtomicI32,
}

impl Default for OutFenceSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl OutFenceSlot {
    /// A fresh slot (leaks 4 bytes for the life of the process; make one per CRTC).
    pub fn new() -> Self {
        OutFenceSlot {
            cell: Box::leak(Box::new(AtomicI32::new(-1))),
        }
    }

    /// Prepares the slot for one commit and returns the value for the CRTC's
    /// `OUT_FENCE_PTR` property (the slot's address). An out-fence from an earlier commit
    /// that was never taken is closed.
    pub fn arm(&mut self) -> i64 {
        self.close_pending();
        self.cell as *const AtomicI32 as usize as i64
    }

    /// After the commit ioctl returned: the out-fence, if the kernel wrote one (a failed or
    /// `TEST_ONLY` commit leaves -1, giving `None`). Resets the slot.
    pub fn take(&mut self) -> Result<Option<SyncFile>, SyncFileError> {
        let raw = self.cell.swap(-1, Ordering::AcqRel);
        if raw < 0 {
            return Ok(None);
        }
        // SAFETY: only the kernel stores a non-negative value here: the slot's address is
        // handed out solely as an OUT_FENCE_PTR value, and the kernel writes either -1 or the
        // number of a sync_file fd it has just installed for this process. We swapped it out,
        // so this is the only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Some(SyncFile::from_kernel(fd)))
    }

    fn close_pending(&mut self) {
        if let Ok(Some(stale)) = self.take() {
            tracing::debug!("closing an out-fence that was never taken");
            drop(stale);
        }
    }
}

impl Drop for OutFenceSlot {
    fn drop(&mut self) {
        self.close_pending();
    }
}

/// Who made a fence, for [`in_fence_value`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceOrigin {
    /// The compositor's own renderer or KMS: trusted to signal.
    Compositor,
    /// A client (acquire fences): may never signal.
    Client,
}

/// The value for a plane's `IN_FENCE_FD` property, or `None` when the fence must not be
/// given to KMS yet: a [`FenceOrigin::Client`] fence that has not signalled (wait for it
/// with a [`SyncFileSource`](crate::source::SyncFileSource) and keep showing the previous
/// frame). The fence is borrowed and must stay open until the commit ioctl returns.
pub fn in_fence_value(fence: &SyncFile, origin: FenceOrigin) -> Result<Option<i64>, SyncFileError> {
    use std::os::fd::AsRawFd;
    match origin {
        FenceOrigin::Compositor => Ok(Some(i64::from(fence.as_fd().as_raw_fd()))),
        FenceOrigin::Client if fence.is_signaled()? => {
            Ok(Some(i64::from(fence.as_fd().as_raw_fd())))
        }
        FenceOrigin::Client => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_slot_takes_nothing() {
        let mut slot = OutFenceSlot::new();
        let v = slot.arm();
        assert!(v > 0);
        assert_eq!(slot.arm(), v, "the address is stable");
        assert!(slot.take().expect("take").is_none());
        let other = OutFenceSlot::new();
        let mut other = other;
        assert_ne!(other.arm(), v);
    }
}
