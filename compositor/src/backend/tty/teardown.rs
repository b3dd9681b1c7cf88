//! When scanout ends without the usual proof, on [`State`]: the device goes away, a
//! vanished connector's output is switched off (maybe while the session is paused, when
//! the kernel refuses with EACCES), and the session comes back with a flip whose event
//! has not been seen. The rules are in [`handover`](super::handover): a buffer on a
//! plane is released once, and only when a commit that stops showing it succeeded (with
//! its out-fence or at its flip) or the device can no longer read it.

use std::rc::Rc;

use smithay::{
    backend::renderer::utils::Buffer,
    reexports::drm::control::{
        atomic::AtomicModeReq, property::Value, AtomicCommitFlags, Device as _,
    },
};
use syncbridge_protocols::BufferId;

use super::{
    handover::Carried,
    kms::{
        atomic::set_plane,
        cursor::CursorPlan,
        device::KmsDevice,
        planes::ClientFb,
        scanout::{Shown, TtyOutput},
    },
    presentation::discard_pending,
    release::ActiveRelease,
};
use crate::{backend::Backend, state::State};

/// Client buffers a plane may still read, with their framebuffers.
pub type Held = Carried<(Vec<BufferId>, Buffer), Rc<ClientFb>>;

/// Everything `out`'s plane may still read: the buffer on it, the buffers of a flip
/// still waiting for its event, and what a resume carried. The output forgets them.
fn take_plane_buffers(out: &mut TtyOutput) -> Held {
    let mut held = out.handover.take_all();
    if let Some(p) = out.pending.take() {
        held.buffers.extend(p.release_at_flip);
        held.fbs.extend(p.retiring);
    }
    if let Shown::Client(c) = std::mem::replace(&mut out.shown, Shown::Nothing) {
        held.buffers.push((c.ids, c.buffer));
        held.fbs.push(c.fb);
    }
    for plane in &mut out.overlays {
        if let Some((c, _)) = plane.shown.take() {
            held.buffers.push((c.ids, c.buffer));
            held.fbs.push(c.fb);
        }
    }
    if let Some(cursor) = out.cursor.as_mut() {
        cursor.forget();
    }
    held
}

/// Switch `out`'s connector, CRTC and planes off in one blocking commit: when it
/// returns `Ok`, the CRTC no longer scans out anything of ours. Kernel errors keep
/// their errno (EACCES while another DRM master is in front).
fn switch_off(device: &KmsDevice, out: &TtyOutput) -> std::io::Result<()> {
    let mut req = AtomicModeReq::new();
    req.add_property(out.connector, out.connector_crtc_id, Value::CRTC(None));
    req.add_property(out.crtc, out.crtc_props.active, Value::Boolean(false));
    req.add_property(out.crtc, out.crtc_props.mode_id, Value::Blob(0));
    req.add_property(out.plane, out.plane_props.fb_id, Value::Framebuffer(None));
    req.add_property(out.plane, out.plane_props.crtc_id, Value::CRTC(None));
    for plane in &out.overlays {
        set_plane(&mut req, plane.handle, &plane.props, out.crtc, None, None);
    }
    if let Some(cursor) = &out.cursor {
        cursor.add_to_request(&mut req, out.crtc, CursorPlan::Clear);
    }
    device
        .fd
        .atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req)
}

/// A vanished connector's output (already not alive): switch it off and hand back what
/// its plane held. When the kernel refuses (EACCES while the session is paused), its
/// plane may still be scanned out: everything stays held and the switch-off is due.
pub fn switch_off_vanished(device: &KmsDevice, out: &mut TtyOutput) -> Held {
    match switch_off(device, out) {
        Ok(()) => {
            out.handover.set_disable_due(false);
            take_plane_buffers(out)
        }
        Err(err) => {
            tracing::warn!(
                output = %out.output.name(),
                %err,
                "switching off a vanished connector's CRTC failed: its plane's buffers stay held until a switch-off succeeds"
            );
            out.handover.set_disable_due(true);
            Held::default()
        }
    }
}

/// Retry the switch-off of vanished outputs that still owe one; what each success frees.
pub fn retry_due_switch_offs(device: &KmsDevice, outputs: &mut [TtyOutput]) -> Held {
    let mut freed = Held::default();
    for out in outputs
        .iter_mut()
        .filter(|o| !o.alive && o.handover.disable_due())
    {
        freed.append(switch_off_vanished(device, out));
    }
    freed
}

/// Whether the kernel says the device is gone (unplugged: every ioctl answers ENODEV).
fn device_is_gone(device: &KmsDevice) -> bool {
    match device.fd.resource_handles() {
        Ok(_) => false,
        Err(err) => err.raw_os_error() == Some(libc::ENODEV),
    }
}

impl State {
    /// Release `held` with no fence: the caller proved that nothing reads them any more
    /// (a blocking switch-off succeeded, or the device is gone). Each buffer's scanout
    /// readers end at the bridge, then our holders drop (`wl_buffer.release`).
    pub(crate) fn tty_release_unread(&mut self, held: Held) {
        let ids = super::kms::scanout::ids_of(&held.buffers);
        if !ids.is_empty() {
            tracing::debug!(
                ?ids,
                "scanout ended without a fence: the display no longer reads"
            );
            self.sync_bridge.scanout_committed(None, &[], &ids);
        }
        drop(held);
    }

    /// The session is active again (we are DRM master): switch-offs owed by outputs that
    /// vanished while paused are made now (their buffers go once that succeeded), and a
    /// flip still waiting for its event is not taken as done: its buffers go with the
    /// next commit that succeeds on its output.
    pub fn tty_session_resumed(&mut self) {
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        let due = tty
            .outputs
            .iter()
            .any(|o| !o.alive && o.handover.disable_due());
        let freed = retry_due_switch_offs(&tty.device, &mut tty.outputs);
        for out in tty.outputs.iter_mut().filter(|o| o.alive) {
            // Another master was in front: nothing says this frame was shown.
            discard_pending(out, &mut tty.presentation, "flip event not seen at resume");
            if let Some(p) = out.pending.take() {
                tracing::debug!(
                    output = %out.output.name(),
                    buffers = p.release_at_flip.len(),
                    "a flip's event had not come at resume: its buffers go with the next commit"
                );
                out.handover.carry(Carried {
                    buffers: p.release_at_flip,
                    fbs: p.retiring,
                });
            }
        }
        self.tty_release_unread(freed);
        if due {
            // A connector that came back while paused may have found its CRTC owing a
            // switch-off: look again now that it is free.
            self.tty_rescan_connectors();
        }
    }

    /// A commit on output `index` succeeded (its pending flip is set): it takes over what
    /// a resume carried. Early mode with an out-fence: returned, for the caller to report
    /// as no longer shown with that fence in the same `scanout_committed` call as the
    /// commit's own transition (the bridge takes the one fence; it signals when this
    /// commit's frame replaced whatever was on the plane), then drop; otherwise they are
    /// released at this commit's page-flip event.
    pub(crate) fn tty_commit_takes_over(
        &mut self,
        index: usize,
        mode: ActiveRelease,
        has_out_fence: bool,
    ) -> Vec<(Vec<BufferId>, Buffer)> {
        let Backend::Tty(tty) = &mut self.backend else {
            return Vec::new();
        };
        let Some(out) = tty.outputs.get_mut(index) else {
            return Vec::new();
        };
        let Some(pending) = out.pending.as_mut() else {
            return Vec::new();
        };
        let carried = out.handover.take_carried();
        if carried.is_empty() {
            return Vec::new();
        }
        pending.retiring.extend(carried.fbs);
        if has_out_fence && mode == ActiveRelease::Early {
            tracing::debug!(
                ids = ?carried.buffers.iter().map(|(ids, _)| ids).collect::<Vec<_>>(),
                "buffers carried over a resume: released with the first commit's out-fence"
            );
            carried.buffers
        } else {
            pending.release_at_flip.extend(carried.buffers);
            Vec::new()
        }
    }

    /// Our device is gone (udev `remove`). Once the kernel confirms it (ENODEV), nothing
    /// scans out any more: every buffer its planes held is released, once, and its
    /// outputs are removed. The compositor keeps serving clients.
    pub fn tty_device_removed(&mut self) {
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        if !device_is_gone(&tty.device) {
            tracing::warn!(
                "udev reported our KMS device removed, but it still answers: its planes' buffers stay held"
            );
            return;
        }
        let dh = tty.display_handle().clone();
        let mut freed = Held::default();
        let mut gone = Vec::new();
        for out in &mut tty.outputs {
            if out.alive {
                gone.push(out.output.clone());
            }
            out.alive = false;
            discard_pending(out, &mut tty.presentation, "device gone");
            freed.append(take_plane_buffers(out));
            if let Some(global) = out.global.take() {
                dh.remove_global::<State>(global);
            }
        }
        tracing::info!(
            outputs = gone.len(),
            buffers = freed.buffers.len(),
            "KMS device gone: outputs removed, the buffers on its planes released"
        );
        self.tty_release_unread(freed);
        for output in gone {
            self.space.unmap_output(&output);
        }
    }
}
