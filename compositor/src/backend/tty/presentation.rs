//! Presentation feedback and frame callbacks on the tty backend follow the page flip.
//!
//! A refresh cycle that commits takes the feedback of the surfaces its frame shows
//! (smithay's [`OutputPresentationFeedback`], with `zero_copy` for a surface whose buffer
//! is on the plane) and keeps it with the commit's [`PendingFlip`]. Only that commit's
//! page-flip event sends `presented`: the kernel's flip timestamp (CLOCK_MONOTONIC) and
//! vblank sequence, the mode's refresh, and `vsync | hw_clock | hw_completion`. Frame
//! callbacks go out at the same event, with the flip time.
//!
//! What never reaches the screen gets `discarded`: the feedback of a flip whose output
//! vanished or whose device went away, and of a flip whose event had not come when the
//! session came back (another DRM master was in front meanwhile; nothing says our frame
//! was shown). Content replaced before any frame took it is discarded by smithay. A
//! commit the kernel refuses takes no feedback: it stays with the surfaces and goes with
//! the next commit that succeeds, which shows that content (see
//! [`failed_commit`](super::kms::failed_commit)); replaced before that, smithay discards it.
//!
//! A cycle with nothing new to show makes no commit, so no flip will come: it sends the
//! frame callbacks at once (the clients must not stall) and leaves the feedback with the
//! surfaces until a frame that flips.
//!
//! A flip calls back only the surfaces whose commit it shows (see
//! [`shown_commits`](super::shown_commits)). A surface that committed after the frame was
//! rendered waits for a later callback. When the cycle after the flip runs at once (late
//! latching off, not yet measured, or no time left before the next vblank), that cycle
//! draws the surface's commit right away, before any client request is read. So once its
//! atomic commit succeeded, the surfaces whose current commit it drew get their
//! callbacks ([`State::tty_call_back_drawn`]): their commits are in a committed frame
//! and can no longer be replaced unshown. Without this, a client that commits while
//! another client's frame is pending gets a callback only every second flip and draws
//! at half the refresh rate. Deferred cycles keep the rule above: their flip calls back.
//!
//! [`PendingFlip`]: super::kms::scanout::PendingFlip

use std::{collections::VecDeque, time::Duration};

use smithay::{
    backend::renderer::element::RenderElementStates,
    desktop::utils::OutputPresentationFeedback,
    output::Output,
    reexports::{
        drm::control::{Mode, ModeFlags},
        wayland_protocols::wp::presentation_time::server::wp_presentation_feedback::Kind,
    },
    utils::{Monotonic, Time},
    wayland::presentation::Refresh,
};

use super::kms::scanout::TtyOutput;
use crate::{backend::Backend, frame_clock::FrameTick, state::State};

/// How many page flips the stats document lists (the most recent ones).
const RECENT_FLIPS: usize = 64;

/// A page-flip event, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flip {
    /// The CRTC's vblank sequence at the flip.
    pub seq: u32,
    /// The flip's timestamp (CLOCK_MONOTONIC); `None` when the kernel gave none.
    pub time: Option<Duration>,
}

impl Flip {
    /// The flags a `presented` event of this flip carries: the flip event itself says the
    /// frame is on screen (hw_completion) at the vblank (vsync); the time is the
    /// kernel's (hw_clock) unless it gave none.
    pub fn flags(&self) -> Kind {
        let mut flags = Kind::Vsync | Kind::HwCompletion;
        if self.time.is_some() {
            flags |= Kind::HwClock;
        }
        flags
    }
}

/// The refresh interval of `mode` from its timings (pixel clock, totals), not from the
/// rounded vertical refresh; `None` for a mode without a clock.
pub fn mode_refresh(mode: &Mode) -> Option<Duration> {
    let (htotal, vtotal) = (u64::from(mode.hsync().2), u64::from(mode.vsync().2));
    let clock_khz = u64::from(mode.clock());
    if clock_khz == 0 || htotal == 0 || vtotal == 0 {
        return None;
    }
    let mut frame = htotal * vtotal;
    let flags = mode.flags();
    if flags.contains(ModeFlags::INTERLACE) {
        frame /= 2;
    }
    if flags.contains(ModeFlags::DBLSCAN) {
        frame *= 2;
    }
    // As the kernel's frame duration: ns = pixels per frame * 1e9 / (clock_khz * 1000).
    Some(Duration::from_nanos(frame * 1_000_000 / clock_khz))
}

/// The feedback of the surfaces one commit shows, until that commit's page-flip event.
/// Dropped unsent, it is discarded (smithay sends `discarded` for each surface).
#[derive(Debug)]
pub struct FlipFeedback(OutputPresentationFeedback);

/// What happened to the feedback of committed frames, and the last page flips.
#[derive(Debug, Default)]
pub struct PresentationStats {
    /// Frames whose feedback went out as `presented` at their flip.
    pub presented_frames: u64,
    /// Of those, frames whose flip event had no timestamp (time of receipt, no hw_clock).
    pub presented_without_timestamp: u64,
    /// Frames whose feedback was discarded (output or device gone, flip unseen at resume).
    pub discarded_frames: u64,
    /// Cycles that committed nothing: frame callbacks sent at once, feedback left with the
    /// surfaces.
    pub frame_callbacks_without_flip: u64,
    /// Cycles run at once after a flip that called back the surfaces whose commit they
    /// drew, right after their atomic commit (before the flip that shows it).
    pub frame_callbacks_after_commit: u64,
    /// The last page-flip events: (output index, sequence, kernel time in ns).
    recent: VecDeque<(usize, u32, u64)>,
}

impl PresentationStats {
    /// Record a page-flip event of output `index`.
    pub fn record_flip(&mut self, index: usize, flip: &Flip) {
        if self.recent.len() == RECENT_FLIPS {
            self.recent.pop_front();
        }
        let ns = flip
            .time
            .map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        self.recent.push_back((index, flip.seq, ns));
    }

    /// The `presentation` part of the `kms` stats section.
    pub fn json(&self) -> serde_json::Value {
        let recent: Vec<_> = self
            .recent
            .iter()
            .map(|(output, seq, ns)| serde_json::json!({"output": output, "seq": seq, "time_ns": ns}))
            .collect();
        serde_json::json!({
            "presented_frames": self.presented_frames,
            "presented_without_timestamp": self.presented_without_timestamp,
            "discarded_frames": self.discarded_frames,
            "frame_callbacks_without_flip": self.frame_callbacks_without_flip,
            "frame_callbacks_after_commit": self.frame_callbacks_after_commit,
            "recent_flips": recent,
        })
    }
}

/// Discard the feedback of `out`'s flip still waiting for its event, if any: its frame
/// will not be seen (the output vanished, the device went away, or the session came back
/// without the event).
pub fn discard_pending(out: &mut TtyOutput, stats: &mut PresentationStats, why: &'static str) {
    if let Some(mut feedback) = out.pending.as_mut().and_then(|p| p.feedback.take()) {
        tracing::debug!(output = %out.output.name(), why, "presentation feedback discarded");
        feedback.0.discarded();
        stats.discarded_frames += 1;
    }
}

impl State {
    /// Right after a tty render of output `index` succeeded, before any client commit
    /// can be applied: a cycle that committed takes its frame's feedback to its pending
    /// flip; one that committed nothing sends the frame callbacks now.
    pub(crate) fn tty_after_render(
        &mut self,
        index: usize,
        output: &Output,
        states: &RenderElementStates,
    ) {
        let Backend::Tty(tty) = &self.backend else {
            return;
        };
        // Only a cycle that committed has a pending flip: every cycle starts without one.
        let committed = tty
            .outputs
            .get(index)
            .and_then(|o| o.pending.as_ref())
            .is_some_and(|p| p.feedback.is_none());
        if !committed {
            self.tty_call_back_without_flip(output);
            return;
        }
        let feedback = self.take_presentation_feedback(output, states);
        let shown = super::shown_commits::ShownCommits::record(&self.space, states);
        if let Backend::Tty(tty) = &mut self.backend {
            if let Some(p) = tty.outputs.get_mut(index).and_then(|o| o.pending.as_mut()) {
                p.feedback = Some(FlipFeedback(feedback));
                p.shown_commits = shown;
            }
        }
    }

    /// A cycle of `output` that committed nothing, so no flip will come: its surfaces'
    /// frame callbacks now (the clients must not stall).
    fn tty_call_back_without_flip(&mut self, output: &Output) {
        let now = super::kms::scanout::monotonic_now();
        self.send_frame_callbacks(output, now, None);
        if let Backend::Tty(tty) = &mut self.backend {
            tty.presentation.frame_callbacks_without_flip += 1;
        }
    }

    /// A refresh cycle of output `index` that nothing could have changed (see
    /// `TtyOutput::scene_changed`): no render and no commit, only what an idle cycle does
    /// besides them, the frame callbacks of its surfaces and the fifo and commit-timing
    /// barriers.
    pub(crate) fn tty_unchanged_cycle(&mut self, index: usize, output: &Output, tick: FrameTick) {
        self.tty_call_back_without_flip(output);
        crate::handlers::pacing::release_frame_barriers(self, output, index == 0, tick);
        if let Some(stats) = self.stats.outputs.get_mut(index) {
            stats.refresh_cycles += 1;
        }
    }

    /// The page-flip event `flip` of output `index`'s pending commit (already taken as
    /// `feedback`) came: its frame is on screen. `presented` for the surfaces it showed,
    /// then the frame callbacks, both with the flip's time.
    pub(crate) fn tty_flip_presented(
        &mut self,
        index: usize,
        flip: Flip,
        feedback: Option<FlipFeedback>,
        shown: &super::shown_commits::ShownCommits,
    ) {
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        tty.presentation.record_flip(index, &flip);
        let Some(out) = tty.outputs.get(index) else {
            return;
        };
        let output = out.output.clone();
        let refresh = mode_refresh(&out.mode).unwrap_or_else(|| out.clock.refresh());
        let time = flip.time.unwrap_or_else(super::kms::scanout::monotonic_now);
        // Trace, not debug: once per flip (the stats keep the last flips).
        tracing::trace!(
            output = index,
            seq = flip.seq,
            time_ns = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX),
            feedback = feedback.is_some(),
            "page flip: frame on screen"
        );
        if let Some(FlipFeedback(mut feedback)) = feedback {
            feedback.presented::<Time<Monotonic>, Monotonic>(
                time.into(),
                Refresh::fixed(refresh),
                u64::from(flip.seq),
                flip.flags(),
            );
            tty.presentation.presented_frames += 1;
            if flip.time.is_none() {
                tty.presentation.presented_without_timestamp += 1;
            }
        }
        self.send_frame_callbacks(&output, time, Some(shown));
    }

    /// Right after a cycle of output `index` that ran at once after a flip: when it
    /// committed, call back the surfaces whose current commit its frame drew (those the
    /// flip left waiting because they committed after the previous render; the others
    /// were called back by the flip). See the module docs.
    pub(crate) fn tty_call_back_drawn(&mut self, index: usize) {
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        let Some(out) = tty.outputs.get_mut(index) else {
            return;
        };
        let output = out.output.clone();
        let Some(pending) = out.pending.as_mut() else {
            return;
        };
        let drawn = std::mem::take(&mut pending.shown_commits);
        tty.presentation.frame_callbacks_after_commit += 1;
        let now = super::kms::scanout::monotonic_now();
        self.send_frame_callbacks(&output, now, Some(&drawn));
        // The flip still needs them: it calls back the surfaces that commit from now on
        // only once it shows their commit.
        if let Backend::Tty(tty) = &mut self.backend {
            if let Some(p) = tty.outputs.get_mut(index).and_then(|o| o.pending.as_mut()) {
                p.shown_commits = drawn;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_flags_claim_the_hardware_clock_only_with_a_timestamp() {
        let with = Flip {
            seq: 7,
            time: Some(Duration::from_millis(5)),
        };
        assert_eq!(
            with.flags(),
            Kind::Vsync | Kind::HwClock | Kind::HwCompletion
        );
        let without = Flip { seq: 7, time: None };
        assert_eq!(without.flags(), Kind::Vsync | Kind::HwCompletion);
    }

    #[test]
    fn recent_flips_are_bounded() {
        let mut stats = PresentationStats::default();
        for seq in 0..(RECENT_FLIPS as u32 + 10) {
            stats.record_flip(
                0,
                &Flip {
                    seq,
                    time: Some(Duration::from_micros(u64::from(seq))),
                },
            );
        }
        let json = stats.json();
        let recent = json["recent_flips"].as_array().map_or(0, Vec::len);
        assert_eq!(recent, RECENT_FLIPS);
        assert_eq!(json["recent_flips"][0]["seq"], 10);
    }
}
