//! Where a buffer's release goes: a syncobj release point or an explicit-sync-v1 release
//! object. Both are "deliver exactly once" handles.
//!
//! [`SyncobjRelease::deliver`] transfers a fence into the point (or signals it on the CPU
//! when there is no fence); [`ExplicitRelease::deliver`] sends `fenced_release` or
//! `immediate_release`. If a handle is dropped undelivered (its commit was replaced before
//! being applied, or its surface died), `Drop` releases at once: the CPU signal for a point,
//! `immediate_release` for an object. That is always safe for those cases, because
//! syncbridge never read a buffer whose release was not delivered through `deliver`.
//!
//! ```no_run
//! # use syncbridge_protocols::release_target::SyncobjRelease;
//! # fn demo(release: SyncobjRelease, fence: Option<&syncbridge_bridge::sync_file::SyncFile>) {
//! match release.deliver(fence) {
//!     Ok(how) => println!("released: {how:?}"),
//!     Err((err, _release)) => eprintln!("could not transfer fence: {err}"),
//! }
//! # }
//! ```

use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1;
use smithay::reexports::wayland_server::Resource;
use syncbridge_bridge::sync_file::SyncFile;
use syncbridge_bridge::syncobj::SyncobjError;

use crate::drm_syncobj::SyncobjPoint;

/// How a release was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// A fence was transferred into a syncobj release point.
    PointFenced,
    /// A syncobj release point was signalled on the CPU (no fence to carry).
    PointCpuSignalled,
    /// The point was not signalled: it would have moved its timeline backwards (the client
    /// reused a timeline out of order) or the signal failed; logged.
    PointSkipped,
    /// `zwp_linux_buffer_release_v1.fenced_release` was sent.
    ExplicitFenced,
    /// `zwp_linux_buffer_release_v1.immediate_release` was sent.
    ExplicitImmediate,
    /// The release object's client is gone; nothing to send.
    ExplicitGone,
}

impl Delivered {
    /// What went out, in words (for the timeline and logs).
    pub fn name(self) -> &'static str {
        match self {
            Self::PointFenced => "release point (fence transferred)",
            Self::PointCpuSignalled => "release point (signalled)",
            Self::PointSkipped => "release point (skipped)",
            Self::ExplicitFenced => "fenced_release",
            Self::ExplicitImmediate => "immediate_release",
            Self::ExplicitGone => "release object gone",
        }
    }
}

/// A syncobj release point, to be signalled exactly once.
#[must_use = "a release point must be delivered, or the client waits forever (Drop signals it on the CPU)"]
#[derive(Debug)]
pub struct SyncobjRelease {
    point: Option<SyncobjPoint>,
}

impl SyncobjRelease {
    /// Wraps a point set by `set_release_point`.
    pub fn new(point: SyncobjPoint) -> Self {
        Self { point: Some(point) }
    }

    /// The point.
    pub fn point(&self) -> Option<&SyncobjPoint> {
        self.point.as_ref()
    }

    /// Makes the point signal with `fence`, or now when `fence` is None. On an import
    /// error the handle is given back (still undelivered) so the caller can wait for the
    /// fence on the CPU side and call `deliver(None)` later.
    pub fn deliver(
        mut self,
        fence: Option<&SyncFile>,
    ) -> Result<Delivered, (SyncobjError, SyncobjRelease)> {
        let Some(p) = self.point.take() else {
            return Ok(Delivered::PointSkipped);
        };
        match fence {
            Some(fence) => match p.timeline.timeline().import_point(p.point, fence) {
                Ok(()) => Ok(Delivered::PointFenced),
                Err(err) if matches!(err, SyncobjError::PointWentBackwards { .. }) => {
                    tracing::debug!(%err, "release point not moved: timeline reused out of order");
                    Ok(Delivered::PointSkipped)
                }
                Err(err) => Err((err, SyncobjRelease { point: Some(p) })),
            },
            None => Ok(signal_now(&p)),
        }
    }
}

fn signal_now(p: &SyncobjPoint) -> Delivered {
    match p.timeline.timeline().signal(p.point) {
        Ok(()) => Delivered::PointCpuSignalled,
        Err(err) => {
            tracing::debug!(%err, point = p.point, "CPU signal of release point failed");
            Delivered::PointSkipped
        }
    }
}

impl Drop for SyncobjRelease {
    fn drop(&mut self) {
        if let Some(p) = self.point.take() {
            signal_now(&p);
        }
    }
}

/// A `zwp_linux_buffer_release_v1` object, to get exactly one release event.
#[must_use = "a release object must be delivered (Drop sends immediate_release)"]
#[derive(Debug)]
pub struct ExplicitRelease {
    object: Option<ZwpLinuxBufferReleaseV1>,
}

impl ExplicitRelease {
    /// Wraps an object created by `get_release`.
    pub fn new(object: ZwpLinuxBufferReleaseV1) -> Self {
        Self {
            object: Some(object),
        }
    }

    /// Sends `fenced_release(fence)` (the fd is duplicated into the message) or
    /// `immediate_release`. Destroys the object, as the protocol says.
    pub fn deliver(mut self, fence: Option<&SyncFile>) -> Delivered {
        let Some(object) = self.object.take() else {
            return Delivered::ExplicitGone;
        };
        send(object, fence)
    }
}

fn send(object: ZwpLinuxBufferReleaseV1, fence: Option<&SyncFile>) -> Delivered {
    if !object.is_alive() {
        return Delivered::ExplicitGone;
    }
    match fence {
        Some(fence) => {
            object.fenced_release(fence.as_fd());
            Delivered::ExplicitFenced
        }
        None => {
            object.immediate_release();
            Delivered::ExplicitImmediate
        }
    }
}

impl Drop for ExplicitRelease {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            send(object, None);
        }
    }
}

/// Either kind of release target a buffer can carry.
#[must_use = "a release target must be delivered"]
#[derive(Debug)]
pub enum ReleaseTarget {
    /// linux-drm-syncobj-v1 release point.
    Syncobj(SyncobjRelease),
    /// zwp_linux_explicit_synchronization_v1 release object.
    Explicit(ExplicitRelease),
}
