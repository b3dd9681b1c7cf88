//! Fault injection for tests: make the kernel refuse a frame's *real* atomic commit after
//! its TEST_ONLY check passed (`--kms-inject-client-commit-failure`,
//! `--kms-inject-composited-commit-failure-every N`).
//!
//! The injected commit asks for its out-fence at a read-only address. TEST_ONLY never
//! writes the out-fence (the kernel returns before preparing events and fences), so it
//! passes; the real commit fails in `prepare_signaling` when the kernel cannot store the
//! fence fd: a genuine `EFAULT` from the atomic ioctl, after which nothing changed on
//! screen — exactly what a driver that refuses a buffer only when it really pins it
//! (`prepare_fb`) looks like to the compositor. What follows is the production path.

use std::{num::NonZeroU32, ptr::NonNull};

use smithay::reexports::drm::control::{atomic::AtomicModeReq, property};

use super::kms::scanout::TtyOutput;

/// One read-only anonymous page, for the process lifetime of the injector.
#[derive(Debug)]
struct ReadOnlyPage {
    ptr: NonNull<core::ffi::c_void>,
    len: usize,
}

impl ReadOnlyPage {
    fn new() -> std::io::Result<Self> {
        let len = rustix::param::page_size();
        // SAFETY: a fresh private anonymous mapping (no address hint, no fd): it aliases
        // nothing; it is only handed to the kernel as an address and unmapped on drop.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::PRIVATE,
            )
        }?;
        let ptr = NonNull::new(ptr).ok_or(std::io::ErrorKind::OutOfMemory)?;
        Ok(Self { ptr, len })
    }

    fn address(&self) -> i64 {
        self.ptr.as_ptr() as i64
    }
}

impl Drop for ReadOnlyPage {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`; nothing else refers to it.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr(), self.len) };
    }
}

/// Which real commits to make fail.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitFaults {
    /// Every real commit that puts a client buffer on the primary plane.
    pub client: bool,
    /// Every N-th real commit of a composited frame (not modesets).
    pub composited_every: Option<NonZeroU32>,
}

impl CommitFaults {
    /// Whether any injection is asked for.
    pub fn any(&self) -> bool {
        self.client || self.composited_every.is_some()
    }
}

/// Makes the selected real commits fail (see the module docs).
#[derive(Debug)]
pub struct CommitFaultInjector {
    faults: CommitFaults,
    composited_since_last: u32,
    injected: u64,
    page: ReadOnlyPage,
}

impl CommitFaultInjector {
    /// An injector for `faults`; `None` when nothing is asked for.
    pub fn new(faults: CommitFaults) -> std::io::Result<Option<Self>> {
        if !faults.any() {
            return Ok(None);
        }
        Ok(Some(Self {
            faults,
            composited_since_last: 0,
            injected: 0,
            page: ReadOnlyPage::new()?,
        }))
    }

    /// Real commits poisoned so far.
    pub fn injected(&self) -> u64 {
        self.injected
    }

    /// Called with the request of each real frame commit of `out` (not modesets):
    /// `client_fb` when it puts a client buffer on the plane, `composited` when it shows
    /// a composited frame. Returns whether this commit was poisoned.
    pub fn poison(
        &mut self,
        out: &TtyOutput,
        req: &mut AtomicModeReq,
        client_fb: bool,
        composited: bool,
    ) -> bool {
        let due = if client_fb {
            self.faults.client
        } else if composited {
            match self.faults.composited_every {
                Some(every) => {
                    self.composited_since_last += 1;
                    if self.composited_since_last >= every.get() {
                        self.composited_since_last = 0;
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        } else {
            false
        };
        let Some(prop) = out.crtc_props.out_fence_ptr else {
            return false;
        };
        if due {
            self.injected += 1;
            // Overrides the armed OUT_FENCE_PTR of the same CRTC in this request.
            req.add_property(
                out.crtc,
                prop,
                property::Value::SignedRange(self.page.address()),
            );
            tracing::debug!(output = %out.output.name(), client_fb, "injected: this real commit's out-fence pointer is read-only");
        }
        due
    }
}
