//! Fault injection for tests (`--kms-inject-out-fence-lag-ms MS` with
//! `--kms-inject-out-fence-lag-commits N`): the out-fences of the first N commits signal
//! MS after their page flip, as on a driver whose out-fence lags the flip.
//!
//! VKMS and virtio-gpu signal the out-fence at the flip; the lagging case cannot be
//! provoked from outside. So each of those commits' out-fence is merged
//! (`SYNC_IOC_MERGE`) with a real unsignalled vgem fence, and that vgem fence is
//! signalled MS after the commit's page-flip event. The merged fence then is the
//! commit's out-fence everywhere: what early release hands to clients (they do wait for
//! it) and what the per-CRTC delay measurement reads. Everything after the merge is the
//! production path, including `--release-mode auto` switching the CRTC to releasing at
//! the flip, and back once the injection ends.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use smithay::reexports::drm::{self, buffer::DrmFourcc, control::Device as _};
use syncbridge_bridge::{dmabuf::Access, SyncFile};

use super::vgem;

/// Why the injection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OutFenceLagError {
    /// No vgem device (`modprobe vgem`).
    #[error("no vgem device under /dev/dri (the injection needs its fences)")]
    NoVgem,
    /// Creating or exporting the vgem buffer failed.
    #[error("{what} on {path}: {source}")]
    Os {
        /// The step.
        what: &'static str,
        /// The vgem node.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
}

/// The vgem node, as a DRM device (for the dumb-buffer ioctls).
#[derive(Debug)]
struct VgemCard(OwnedFd);

impl AsFd for VgemCard {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl drm::Device for VgemCard {}
impl drm::control::Device for VgemCard {}

/// The injector: a vgem device and a 1x1 buffer whose reservation object carries the
/// lag fences (read fences: any number may be pending at once).
#[derive(Debug)]
pub struct OutFenceLag {
    /// The vgem node, owned here; closing it frees the buffer's GEM handle.
    card: VgemCard,
    /// GEM handle of the buffer on `card`.
    handle: u32,
    /// The buffer's dma-buf, owned here; the lag fences are exported from it.
    dmabuf: OwnedFd,
    /// How long after the flip event the lag fence signals.
    pub lag: Duration,
    /// Commits still to lag.
    remaining: u32,
    /// Commits lagged so far.
    pub injected: u64,
    /// Lag fences not signalled yet (signalled on drop, so none waits for the kernel's
    /// 10 s vgem timeout).
    outstanding: Vec<u32>,
}

impl OutFenceLag {
    /// Open the first vgem device and make the buffer.
    pub fn open(lag: Duration, commits: u32) -> Result<Self, OutFenceLagError> {
        let (path, card) = crate::device::open_by_driver("vgem").ok_or(OutFenceLagError::NoVgem)?;
        let card = VgemCard(card);
        let os = |what| {
            let path = path.clone();
            move |source| OutFenceLagError::Os { what, path, source }
        };
        let db = card
            .create_dumb_buffer((1, 1), DrmFourcc::Xrgb8888, 32)
            .map_err(os("creating a dumb buffer"))?;
        let handle = drm::buffer::Buffer::handle(&db);
        let flags = (rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::RDWR).bits();
        let dmabuf = card
            .buffer_to_prime_fd(handle, flags)
            .map_err(os("exporting the dumb buffer"))?;
        tracing::warn!(
            vgem = %path.display(),
            lag_ms = lag.as_secs_f64() * 1000.0,
            commits,
            "tty: testing: the out-fences of the first {commits} commits signal {:.1} ms after their page flip",
            lag.as_secs_f64() * 1000.0
        );
        Ok(Self {
            card,
            handle: u32::from(handle),
            dmabuf,
            lag,
            remaining: commits,
            injected: 0,
            outstanding: Vec::new(),
        })
    }

    /// A commit's out-fence: while commits remain to lag, the returned fence is it merged
    /// with a new vgem fence, whose id is returned for [`OutFenceLag::signal`] after the
    /// flip. On any failure the commit keeps its own fence (logged).
    pub fn lag(&mut self, fence: SyncFile) -> (SyncFile, Option<u32>) {
        if self.remaining == 0 {
            return (fence, None);
        }
        let id = match vgem::attach_fence(self.card.as_fd(), self.handle, false) {
            Ok(id) => id,
            Err(err) => {
                tracing::warn!(%err, "out-fence lag: attaching a vgem fence");
                return (fence, None);
            }
        };
        // Write access exports every fence on the buffer, the read fences included.
        let merged =
            syncbridge_bridge::dmabuf::export_sync_file(self.dmabuf.as_fd(), Access::Write)
                .map_err(|e| e.to_string())
                .and_then(|lag| fence.merge(&lag).map_err(|e| e.to_string()));
        match merged {
            Ok(merged) => {
                self.remaining -= 1;
                self.injected += 1;
                self.outstanding.push(id);
                (merged, Some(id))
            }
            Err(err) => {
                tracing::warn!(%err, "out-fence lag: merging");
                self.signal(id);
                (fence, None)
            }
        }
    }

    /// Signal lag fence `id`.
    pub fn signal(&mut self, id: u32) {
        self.outstanding.retain(|o| *o != id);
        if let Err(err) = vgem::signal_fence(self.card.as_fd(), id) {
            tracing::warn!(%err, id, "out-fence lag: signalling the vgem fence");
        }
    }
}

impl Drop for OutFenceLag {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.outstanding) {
            let _ = vgem::signal_fence(self.card.as_fd(), id);
        }
    }
}

/// The page-flip event of a lagged commit came: its vgem fence `id` is signalled
/// `lag` from now (a one-shot timer on the event loop).
pub(crate) fn signal_later(
    handle: &smithay::reexports::calloop::LoopHandle<'static, crate::State>,
    tty: &mut super::TtyBackend,
    id: u32,
) {
    let Some(injector) = tty.inject_lag.as_mut() else {
        return;
    };
    let timer = smithay::reexports::calloop::timer::Timer::from_duration(injector.lag);
    let armed = handle.insert_source(timer, move |_, _, state| {
        if let crate::backend::Backend::Tty(tty) = &mut state.backend {
            if let Some(injector) = tty.inject_lag.as_mut() {
                injector.signal(id);
            }
        }
        smithay::reexports::calloop::timer::TimeoutAction::Drop
    });
    if let Err(err) = armed {
        tracing::warn!(%err, "out-fence lag: arming the timer; signalling now");
        injector.signal(id);
    }
}
