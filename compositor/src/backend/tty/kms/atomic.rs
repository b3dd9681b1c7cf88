//! Our own atomic commits: every real commit asks for the CRTC's out-fence
//! (`OUT_FENCE_PTR`) and a page-flip event. smithay's `DrmCompositor` never asks for an
//! out-fence, so we build the `AtomicModeReq` ourselves.
//!
//! `IN_FENCE_FD` only ever carries a fence the compositor made (an already-signalled
//! stub exported from its own KMS buffer, see [`in_fence`](super::in_fence)), which also
//! tells the kernel to ignore the buffer's implicit fences: a client that attaches a
//! never-signalling fence to a buffer after the bridge waited for its acquire fence (or a
//! syncobj client, whose implicit fences the protocol ignores) cannot stall the CRTC.

use smithay::reexports::drm::control::{
    atomic::AtomicModeReq, connector, crtc, framebuffer, plane, property, AtomicCommitFlags,
};
use syncbridge_bridge::{
    kms::{in_fence_value, FenceOrigin, OutFenceSlot},
    SyncFile,
};

use super::{device::PropMap, scanout::PlaneProps};
use crate::backend::tty::TtyError;

/// What one commit changes on a CRTC.
#[derive(Debug)]
pub struct CommitPlan {
    /// Full modeset (first frame, after a VT switch).
    pub modeset: Option<Modeset>,
    /// New framebuffer for the primary plane (`None`: keep what is there).
    pub fb: Option<framebuffer::Handle>,
    /// Source size of `fb` in pixels.
    pub src: (u32, u32),
    /// Destination size on the CRTC.
    pub dst: (u32, u32),
}

/// Modeset part of a commit.
#[derive(Debug, Clone, Copy)]
pub struct Modeset {
    /// Connector to route to the CRTC.
    pub connector: connector::Handle,
    /// Its CRTC_ID property.
    pub connector_crtc_id: property::Handle,
    /// The mode blob id.
    pub mode_blob: u64,
}

/// Handles of one CRTC's properties.
#[derive(Debug, Clone)]
pub struct CrtcProps {
    /// MODE_ID.
    pub mode_id: property::Handle,
    /// ACTIVE.
    pub active: property::Handle,
    /// OUT_FENCE_PTR (absent on drivers without out-fences).
    pub out_fence_ptr: Option<property::Handle>,
}

impl CrtcProps {
    /// Look up the properties of a CRTC.
    pub fn new(props: &PropMap) -> Result<Self, TtyError> {
        Ok(Self {
            mode_id: props.require("MODE_ID")?,
            active: props.require("ACTIVE")?,
            out_fence_ptr: props.get("OUT_FENCE_PTR"),
        })
    }
}

/// Build the request for `plan` on (`crtc`, its primary `plane`). `out_fence` arms OUT_FENCE_PTR;
/// `in_fence` (compositor-made only) goes into IN_FENCE_FD when the plane changes.
pub fn build(
    crtc: crtc::Handle,
    crtc_props: &CrtcProps,
    plane: plane::Handle,
    plane_props: &PlaneProps,
    plan: &CommitPlan,
    out_fence: Option<&mut OutFenceSlot>,
    in_fence: Option<&SyncFile>,
) -> Result<AtomicModeReq, TtyError> {
    let mut req = AtomicModeReq::new();
    if let Some(m) = &plan.modeset {
        req.add_property(
            m.connector,
            m.connector_crtc_id,
            property::Value::CRTC(Some(crtc)),
        );
        req.add_property(crtc, crtc_props.mode_id, property::Value::Blob(m.mode_blob));
        req.add_property(crtc, crtc_props.active, property::Value::Boolean(true));
    }
    if let Some(fb) = plan.fb {
        let state = PlaneState {
            fb,
            src: plan.src,
            dst: (0, 0),
            dst_size: plan.dst,
        };
        set_plane(&mut req, plane, plane_props, crtc, Some(state), in_fence);
    }
    if let (Some(prop), Some(slot)) = (crtc_props.out_fence_ptr, out_fence) {
        req.add_property(crtc, prop, property::Value::SignedRange(slot.arm()));
    }
    Ok(req)
}

/// What a plane shows: all of `fb` (`src` pixels) at `dst` on the CRTC, `dst_size` big.
#[derive(Debug, Clone, Copy)]
pub struct PlaneState {
    /// The framebuffer.
    pub fb: framebuffer::Handle,
    /// Its size in pixels.
    pub src: (u32, u32),
    /// Where its top-left corner goes (may be negative: a cursor half off the screen).
    pub dst: (i32, i32),
    /// How big it is on the CRTC.
    pub dst_size: (u32, u32),
}

/// Set `plane` to `state` on `crtc` (`None`: switch it off). `in_fence` (compositor-made
/// only) goes into IN_FENCE_FD with a new framebuffer.
pub fn set_plane(
    req: &mut AtomicModeReq,
    plane: plane::Handle,
    p: &PlaneProps,
    crtc: crtc::Handle,
    state: Option<PlaneState>,
    in_fence: Option<&SyncFile>,
) {
    let Some(state) = state else {
        req.add_property(plane, p.fb_id, property::Value::Framebuffer(None));
        req.add_property(plane, p.crtc_id, property::Value::CRTC(None));
        return;
    };
    req.add_property(plane, p.fb_id, property::Value::Framebuffer(Some(state.fb)));
    req.add_property(plane, p.crtc_id, property::Value::CRTC(Some(crtc)));
    let (sw, sh) = state.src;
    let (dw, dh) = state.dst_size;
    req.add_property(plane, p.src_x, property::Value::UnsignedRange(0));
    req.add_property(plane, p.src_y, property::Value::UnsignedRange(0));
    req.add_property(
        plane,
        p.src_w,
        property::Value::UnsignedRange(u64::from(sw) << 16),
    );
    req.add_property(
        plane,
        p.src_h,
        property::Value::UnsignedRange(u64::from(sh) << 16),
    );
    req.add_property(
        plane,
        p.crtc_x,
        property::Value::SignedRange(i64::from(state.dst.0)),
    );
    req.add_property(
        plane,
        p.crtc_y,
        property::Value::SignedRange(i64::from(state.dst.1)),
    );
    req.add_property(plane, p.crtc_w, property::Value::SignedRange(i64::from(dw)));
    req.add_property(plane, p.crtc_h, property::Value::SignedRange(i64::from(dh)));
    if let (Some(prop), Some(fence)) = (p.in_fence_fd, in_fence) {
        // Compositor-made: always allowed (see the module docs).
        if let Ok(Some(v)) = in_fence_value(fence, FenceOrigin::Compositor) {
            req.add_property(plane, prop, property::Value::SignedRange(v));
        }
    }
}

/// The flags of a real (non-test) commit.
pub fn commit_flags(modeset: bool) -> AtomicCommitFlags {
    if modeset {
        // Blocking: the first frame after a modeset is in place when this returns.
        AtomicCommitFlags::ALLOW_MODESET | AtomicCommitFlags::PAGE_FLIP_EVENT
    } else {
        AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT
    }
}

/// Test `req` (TEST_ONLY). Errors keep the kernel's errno.
pub fn test(
    dev: &impl smithay::reexports::drm::control::Device,
    req: AtomicModeReq,
    modeset: bool,
) -> std::io::Result<()> {
    let mut flags = AtomicCommitFlags::TEST_ONLY;
    if modeset {
        flags |= AtomicCommitFlags::ALLOW_MODESET;
    }
    dev.atomic_commit(flags, req)
}
