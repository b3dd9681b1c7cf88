//! What a real atomic commit that the kernel refused leaves behind, so that the next
//! cycle starts from what is really on screen.
//!
//! Nothing changed on screen: the plane keeps showing [`TtyOutput::shown`]. Two things
//! must follow that truth:
//!
//! - a client buffer that passed TEST_ONLY but failed the real commit is not tried on the
//!   plane again (retrying it each refresh would freeze the output): it is composited
//!   until the client attaches another buffer. Transient refusals that say nothing about
//!   the buffer (the CRTC busy with a previous commit, an interrupted call, a paused
//!   session) keep it eligible.
//! - a composited frame that was rendered into a slot but never shown: the damage tracker
//!   and the slots' ages believe it was. They are reset, so the retry renders the whole
//!   output into a slot and commits it (a damage-based "nothing changed" would otherwise
//!   keep the older slot on screen while presentation feedback says otherwise).
//!
//! The release side needs nothing here: a client buffer that never reached the plane was
//! never reported as shown, so no scanout reader exists to end.

use smithay::backend::{allocator::dmabuf::Dmabuf, renderer::damage::OutputDamageTracker};

use super::{planes::ClientFbCache, scanout::TtyOutput};

/// What the refused commit tried to show.
#[derive(Debug)]
pub enum Attempt<'a> {
    /// A client buffer newly put on the plane (or re-set by a modeset).
    Client(&'a Dmabuf),
    /// A composited frame in one of the output's slots.
    Composited,
    /// Nothing new on the plane (a modeset alone).
    Other,
}

/// Whether `err` says nothing about the buffer: the same commit may pass later.
pub fn is_transient(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::EBUSY
                | libc::EINTR
                | libc::EAGAIN
                | libc::EACCES
                | libc::EPERM
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
        )
    )
}

/// What refused real commits led to.
#[derive(Debug, Default, Clone, Copy)]
pub struct FailedCommitStats {
    /// Client buffers refused for scanout after the kernel refused their real commit.
    pub client_buffers_refused: u64,
    /// Composited frames that never reached the screen (damage history reset).
    pub composited_lost: u64,
}

impl FailedCommitStats {
    /// The `failed_commits` part of the `kms` stats section.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "client_buffers_refused": self.client_buffers_refused,
            "composited_frames_lost": self.composited_lost,
        })
    }
}

/// Bring `out`'s state in line with the screen after the kernel refused the real commit
/// of `attempt` with `err`.
pub fn after_refused_commit(
    out: &mut TtyOutput,
    fbs: &mut ClientFbCache,
    attempt: Attempt<'_>,
    err: &std::io::Error,
    stats: &mut FailedCommitStats,
) {
    match attempt {
        Attempt::Client(dmabuf) if !is_transient(err) => {
            tracing::info!(output = %out.output.name(), %err, "the kernel refused the real commit of a client buffer that passed TEST_ONLY; compositing it until the client attaches another");
            fbs.refuse(dmabuf);
            stats.client_buffers_refused += 1;
        }
        Attempt::Client(_) | Attempt::Other => {}
        Attempt::Composited => {
            tracing::debug!(output = %out.output.name(), %err, "a composited frame was not shown: the next render draws the whole output");
            forget_damage_history(out);
            stats.composited_lost += 1;
        }
    }
}

/// The slots' contents are unknown to the damage tracker from now on: the next render
/// draws everything.
pub fn forget_damage_history(out: &mut TtyOutput) {
    out.damage_tracker = OutputDamageTracker::from_output(&out.output);
    out.last_scene = None;
    out.scene_changed = true;
    for slot in &mut out.slots {
        slot.rendered_at = 0;
    }
}
