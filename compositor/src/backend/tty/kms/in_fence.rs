//! The already-signalled fence that goes into `IN_FENCE_FD` with every plane change.
//!
//! An explicit in-fence makes the kernel ignore the framebuffer's implicit (dma-resv)
//! fences, which a client may add after the fence bridge waited for its acquire fence
//! (or which a linux-drm-syncobj-v1 client's buffer carries and the protocol says to
//! ignore): without one, the commit waits for them inside the kernel and one client's
//! late fence stalls the CRTC.
//!
//! The stub is a sync_file exported (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`) from a dma-buf
//! no one else can fence: the bridge's private dma-heap/udmabuf buffer when the process
//! may open those devices, else one of the compositor's own composition buffers (a KMS
//! dumb buffer, exported with PRIME), made before any commit, so its export holds no
//! unsignalled fence (checked). The second works unprivileged, on every KMS device that
//! exports dumb buffers.
//!
//! Ownership: [`InFenceStub`] owns the sync_file fd for the backend's lifetime; each
//! commit passes it borrowed (the kernel takes its own reference to the fence).

use std::os::fd::AsFd;

use smithay::backend::allocator::dmabuf::Dmabuf;
use syncbridge_bridge::{dmabuf::Access, SyncFile};

/// Where the stub fence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StubSource {
    /// One of our own KMS dumb buffers (composition slots).
    KmsBuffer,
    /// The bridge's private dma-heap or udmabuf buffer.
    PrivateDmabuf,
}

impl StubSource {
    /// For logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            StubSource::KmsBuffer => "own KMS dumb buffer",
            StubSource::PrivateDmabuf => "private dma-heap/udmabuf buffer",
        }
    }
}

/// A signalled fence for `IN_FENCE_FD`, and where it came from.
#[derive(Debug)]
pub struct InFenceStub {
    /// The fence (owned).
    pub fence: SyncFile,
    /// Its source.
    pub source: StubSource,
}

/// The bridge's private buffer's stub when it has one (as before: nothing else can add
/// fences to it), else one exported from `own` (one of our composition buffers, before it
/// was ever committed): so IN_FENCE_FD is set unprivileged too. `None` (logged) when
/// neither works: commits then go without `IN_FENCE_FD`.
pub fn make(own: Option<&Dmabuf>) -> Option<InFenceStub> {
    let mut why = Vec::new();
    match SyncFile::signaled_stub() {
        Ok(fence) => {
            return Some(InFenceStub {
                fence,
                source: StubSource::PrivateDmabuf,
            })
        }
        Err(err) => why.push(format!("private buffer: {err}")),
    }
    match own.and_then(|d| d.handles().next()) {
        Some(fd) => match syncbridge_bridge::dmabuf::export_sync_file(fd.as_fd(), Access::Write) {
            Ok(fence) if fence.is_signaled().unwrap_or(false) => {
                return Some(InFenceStub {
                    fence,
                    source: StubSource::KmsBuffer,
                })
            }
            Ok(_) => why.push("own KMS buffer: its fences have not signalled".to_string()),
            Err(err) => why.push(format!("own KMS buffer: {err}")),
        },
        None => why.push("no composition buffer".to_string()),
    }
    tracing::warn!(why = ?why, "tty: no signalled in-fence stub: IN_FENCE_FD unused, commits wait for client buffers' implicit fences in the kernel");
    None
}

/// Plane changes committed with and without `IN_FENCE_FD`.
#[derive(Debug, Default, Clone, Copy)]
pub struct InFenceStats {
    /// Real commits that changed the plane's framebuffer with `IN_FENCE_FD` set.
    pub with: u64,
    /// ... without it (no stub, or the plane has no such property).
    pub without: u64,
    /// Of `with`: the fence was the composited frame's render fence (GLES).
    pub render_fences: u64,
}
