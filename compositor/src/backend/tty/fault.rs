//! Fault injection for tests (`--kms-inject-ebusy-every N`): provoke a genuine EBUSY from
//! the kernel on the real frame path.
//!
//! Before every N-th frame commit, an extra non-blocking page flip re-shows the
//! framebuffer already on the plane. The frame's own commit, made right after it, finds
//! the CRTC busy with that flip and the kernel refuses it with EBUSY ("busy with a
//! previous commit"), exactly as it would after a lost page-flip event or a commit made
//! too early. What follows is the production path: nothing on screen changes, no client
//! buffer is released, and the frame is retried one refresh later.

use std::num::NonZeroU32;

use smithay::reexports::drm::control::{AtomicCommitFlags, Device as _};

use super::{
    kms::{
        device::KmsDevice,
        scanout::{Shown, TtyOutput},
    },
    release::KmsStats,
};

/// When to inject: every `every`-th frame commit.
#[derive(Debug)]
pub struct BusyInjector {
    every: NonZeroU32,
    since_last: u32,
}

impl BusyInjector {
    /// Inject before every `every`-th frame commit.
    pub fn new(every: NonZeroU32) -> Self {
        Self {
            every,
            since_last: 0,
        }
    }

    /// Called before each frame commit (not modesets) of `out`: if this one is due,
    /// submit the extra flip.
    pub fn before_commit(&mut self, device: &KmsDevice, out: &mut TtyOutput, stats: &mut KmsStats) {
        self.since_last += 1;
        if self.since_last < self.every.get() {
            return;
        }
        self.since_last = 0;
        let fb = match &out.shown {
            Shown::Client(c) => c.fb.fb,
            Shown::Composited(i) => match out.slots.get(*i) {
                Some(slot) => slot.fb.handle(),
                None => return,
            },
            Shown::Nothing => return,
        };
        let req = match out.request(None, Some(fb), false, None) {
            Ok(req) => req,
            Err(err) => {
                tracing::warn!(%err, "injected flip: building the request");
                return;
            }
        };
        let flags = AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT;
        match device.fd.atomic_commit(flags, req) {
            Ok(()) => {
                stats.injected_busy_flips += 1;
                tracing::debug!(output = %out.output.name(), "injected a flip: this commit should get EBUSY");
            }
            Err(err) => tracing::warn!(%err, "injected flip refused"),
        }
    }
}
