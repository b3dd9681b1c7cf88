//! syncbridge's core: implicit <-> explicit GPU synchronization, with no Wayland dependency.
//!
//! Modules:
//! - [`sync_file`]: [`SyncFile`], an owned kernel fence fd (poll, wait, merge, info,
//!   deadline).
//! - [`dmabuf`]: export a dma-buf's implicit fences as a [`SyncFile`] and import one back
//!   (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`/`IMPORT_SYNC_FILE`), per plane, with a one-time support
//!   probe and the `poll()` fallback.
//! - [`syncobj`]: DRM timeline syncobjs: import, query, CPU signal, eventfd, and
//!   SyncFile <-> point conversion through one scratch binary syncobj.
//! - [`source`]: calloop event sources that fire once when a fence signals.
//! - [`kms`]: `OUT_FENCE_PTR` storage and the `IN_FENCE_FD` policy.
//! - [`release`]: the release merger, which folds every reader's fence of a buffer into one
//!   bounded release fence.
//! - [`error`]: [`ErrorKind`], shared by every subsystem's error enum.
//! - [`stats`](mod@stats): process-wide counters ([`stats()`](fn@stats)).
//! - [`percentile`]: the nearest-rank percentile every latency figure uses.
//!
//! Every `unsafe` block is a raw ioctl with its argument layout documented next to it
//! (module `sys`, private); the DRM syncobj ioctls come from the `drm` crate, but for the
//! one it gets wrong (module `syncobj_ioctl`, private). Nothing here panics on input a client or the kernel controls.
//!
//! ```no_run
//! use syncbridge_bridge::{dmabuf, source::SyncFileSource, Access, DmabufFenceSupport};
//! # fn plane() -> std::os::fd::BorrowedFd<'static> { unimplemented!() }
//! # let handle: calloop::LoopHandle<'static, ()> = unimplemented!();
//! if DmabufFenceSupport::probe().is_supported() {
//!     let acquire = dmabuf::export_sync_file(plane(), Access::Read)?;
//!     handle.insert_source(SyncFileSource::new(acquire), |_fence, _, _state| {
//!         // the client's buffer is ready: unblock its commit
//!     })?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod dmabuf;
pub mod error;
pub mod kms;
pub mod percentile;
pub mod release;
pub mod source;
pub mod stats;
pub mod sync_file;
pub mod syncobj;
mod syncobj_ioctl;
mod sys;

pub use dmabuf::{Access, DmabufFenceError, DmabufFenceSupport};
pub use error::ErrorKind;
pub use release::{ReleaseError, ReleaseFence, ReleaseMerger};
pub use source::{SyncFileSource, TimelinePointSource};
pub use stats::{stats, Stats};
pub use sync_file::{FenceInfo, FenceStatus, SyncFile, SyncFileError, SyncFileInfo};
pub use syncobj::{SyncobjDevice, SyncobjError, Timeline, WaitMode};

/// Re-exported so callers can name the errno inside errors without depending on rustix.
pub use rustix::io::Errno;

/// The calloop version the event sources implement `EventSource` for (the one smithay 0.7
/// re-exports).
pub use calloop;
