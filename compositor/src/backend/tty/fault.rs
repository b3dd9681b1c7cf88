//! Fault injection for tests (`--kms-inject-ebusy-every N`): provoke a genuine EBUSY from
//! the kernel on the real frame path.
//!
//! Right after every N-th page-flip event, before the next frame is committed, an extra
//! non-blocking page flip re-shows the framebuffer already on the plane. The frame's own
//! commit, made a moment later, then finds the CRTC busy with that flip and the kernel
//! refuses it with EBUSY ("busy with a previous commit"), exactly as it would after a lost
//! page-flip event or a commit made too early. What follows is the production path:
//! nothing on screen changes, no client buffer is released, and the frame is retried one
//! refresh later.

use smithay::reexports::drm::control::{AtomicCommitFlags, Device as _};

use super::{
    kms::{
        atomic::{self, CommitPlan},
        scanout::Shown,
    },
    TtyBackend,
};

impl TtyBackend {
    /// Whether flip number `flips` of output `index` is one to follow with an injected
    /// flip; if so, submit it. Returns whether the kernel accepted it.
    pub(crate) fn maybe_inject_busy_flip(&mut self, index: usize) -> bool {
        let Some(every) = self.inject_ebusy_every else {
            return false;
        };
        if !self.stats.flips.is_multiple_of(u64::from(every.get())) {
            return false;
        }
        let Some(out) = self.outputs.get(index).filter(|o| o.alive) else {
            return false;
        };
        let fb = match &out.shown {
            Shown::Client(c) => c.fb.fb,
            Shown::Composited(i) => match out.slots.get(*i) {
                Some(slot) => *slot.fb.as_ref(),
                None => return false,
            },
            Shown::Nothing => return false,
        };
        let size = out.size();
        let plan = CommitPlan {
            modeset: None,
            fb: Some(fb),
            src: size,
            dst: size,
        };
        let req = match atomic::build(
            out.crtc,
            &out.crtc_props,
            out.plane,
            &out.plane_props,
            &plan,
            None,
            None,
        ) {
            Ok(req) => req,
            Err(err) => {
                tracing::warn!(%err, "injected flip: building the request");
                return false;
            }
        };
        let flags = AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT;
        match self.device.fd.atomic_commit(flags, req) {
            Ok(()) => {
                self.stats.injected_busy_flips += 1;
                tracing::debug!(
                    output = index,
                    "injected a flip: the next commit should get EBUSY"
                );
                true
            }
            Err(err) => {
                tracing::warn!(%err, "injected flip refused");
                false
            }
        }
    }
}
