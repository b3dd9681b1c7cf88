//! One refresh cycle, backend-independent: render an output, then do the protocol work
//! that follows a presented frame (presentation feedback, frame callbacks, fifo and
//! commit-timing barriers) and count it. On the tty backend, feedback and frame
//! callbacks wait for the commit's page flip (`backend::tty::presentation`).

use std::time::{Duration, Instant};

use smithay::{
    backend::renderer::element::{default_primary_scanout_output_compare, RenderElementStates},
    desktop::utils::{
        surface_presentation_feedback_flags_from_states, surface_primary_scanout_output,
        update_surface_primary_scanout_output, OutputPresentationFeedback,
    },
    output::Output,
    reexports::wayland_protocols::wp::presentation_time::server::wp_presentation_feedback,
    utils::{Monotonic, Time},
    wayland::presentation::Refresh,
};

use crate::{
    frame_clock::FrameTick,
    handlers::pacing::release_frame_barriers,
    state::{ExitReason, State},
};

/// Surfaces not shown on an output still get a frame callback this often, so they
/// never stall waiting for one.
const OFFSCREEN_FRAME_THROTTLE: Duration = Duration::from_secs(1);

impl State {
    /// A frame timer of output `index` fired for `deadline`. Returns when it should
    /// fire next (whole missed intervals are skipped), or `None` for a vanished output.
    pub fn on_frame_timer(&mut self, index: usize, deadline: Instant) -> Option<Instant> {
        let clock = self.backend.frame_clock_mut(index)?;
        let refresh = clock.refresh();
        let now = Instant::now();
        // The frame's time is its render, not a deadline that passed before it: a commit the
        // loop read in between is in this frame, and its presentation cannot precede it.
        let tick = clock.tick_at(clock.monotonic_at(deadline.max(now)));
        let mut next = deadline + refresh;
        let mut missed = 0;
        while next <= now {
            next += refresh;
            missed += 1;
        }
        if let Some(stats) = self.stats.outputs.get_mut(index) {
            stats.missed_cycles += missed;
        }
        self.present_frame(index, tick);
        Some(next)
    }

    /// Manual frame clock: run one refresh cycle of output `index` exactly one
    /// interval after the previous one. Returns the tick, or `None` for no such output.
    pub fn frame_tick(&mut self, index: usize) -> Option<FrameTick> {
        let tick = self.backend.frame_clock_mut(index)?.tick_manual();
        self.present_frame(index, tick);
        Some(tick)
    }

    /// The scene may have changed: backends that stop refreshing while nothing changes
    /// (the tty backend commits nothing then) start a refresh cycle. The others refresh
    /// on their own clock.
    pub fn request_redraw(&mut self) {
        if matches!(self.backend, crate::backend::Backend::Tty(_)) {
            self.tty_wake();
        }
    }

    /// Render output `index` and finish the refresh cycle `tick`. Returns whether the
    /// backend rendered (or had nothing new to show); `false` after a failed render or
    /// commit.
    ///
    /// Order matters: what a KMS commit put on or took off a plane goes to the fence
    /// bridge right after the render, before the fifo and commit-timing barriers are
    /// released, since releasing them applies queued client commits, which retire the
    /// surfaces' current buffers.
    pub fn present_frame(&mut self, index: usize, tick: FrameTick) -> bool {
        self.space.refresh();
        self.popups.cleanup();

        if let crate::backend::Backend::Tty(tty) = &mut self.backend {
            tty.cursor = self.seat.get_pointer().map(|pointer| {
                let focused = pointer.current_focus().is_some();
                crate::backend::tty::cursor::CursorView {
                    location: pointer.current_location(),
                    image: crate::backend::tty::cursor::CursorImage::from_status(
                        &self.cursor_status,
                        focused,
                    ),
                }
            });
        }
        let bridge = &self.sync_bridge;
        let rendered = self
            .backend
            .render(index, &self.space, &|surface| bridge.buffer_id(surface));
        // Also after a failed commit: a re-committed buffer that stays on a plane.
        self.report_scanout(index);
        if matches!(self.backend, crate::backend::Backend::Tty(_)) {
            // Surfaces that may go on a plane get a scanout tranche (sent on change).
            self.update_surface_dmabuf_feedback();
        }
        let mut rendered = match rendered {
            Ok(rendered) => rendered,
            Err(err) => {
                tracing::warn!(%err, "frame not rendered");
                if let Some(stats) = self.stats.outputs.get_mut(index) {
                    stats.refresh_cycles += 1;
                    stats.render_errors += 1;
                }
                return false;
            }
        };

        // Same dispatch as the render, before any client can commit again. pixman read
        // on the CPU and is done: no render fence (CPU release). GLES hands over its
        // sync point as a sync_file when EGL has native fences; otherwise the sampled
        // buffers are held until a thread saw the sync point reached.
        let sampled = crate::handlers::sync::sampled_buffers(
            &self.sync_bridge,
            &self.space,
            &rendered.states,
        );
        let sync = std::mem::take(&mut rendered.sync);
        self.report_render(sync, &sampled);

        let output = rendered.output.clone();
        self.update_primary_outputs(&output, &rendered.states);
        // Feedback is taken from the surfaces' current state before the barriers are
        // released (which applies queued commits and would discard it as replaced).
        if matches!(self.backend, crate::backend::Backend::Tty(_)) {
            // Sent at the commit's page flip (see `backend::tty::presentation`).
            self.tty_after_render(index, &output, &rendered.states);
        } else {
            self.send_clock_presentation_feedback(&output, &rendered.states, tick);
            self.send_frame_callbacks(&output, tick.time, None);
        }
        release_frame_barriers(self, &output, index == 0, tick);

        if let Some(stats) = self.stats.outputs.get_mut(index) {
            stats.refresh_cycles += 1;
            if rendered.damaged {
                stats.frames_presented += 1;
            }
        }

        if let Some(limit) = self.exit_after_frames {
            if self.stats.max_frames_presented() >= limit {
                self.request_exit(ExitReason::FrameLimit);
            }
        }
        true
    }

    /// Hand the scanout transition of output `index`'s last render to the fence bridge
    /// (tty: which buffer ids the planes started and stopped reading, with the commit's
    /// out-fence). The other backends put no client buffer on a plane.
    fn report_scanout(&mut self, index: usize) {
        if matches!(self.backend, crate::backend::Backend::Tty(_)) {
            self.tty_report_commit(index);
        }
    }

    fn update_primary_outputs(&self, output: &Output, states: &RenderElementStates) {
        for window in self.space.elements() {
            window.with_surfaces(|surface, data| {
                update_surface_primary_scanout_output(
                    surface,
                    output,
                    data,
                    states,
                    default_primary_scanout_output_compare,
                );
            });
        }
    }

    /// The feedback of the surfaces `output`'s frame shows (`zero_copy` for those
    /// scanned out directly), taken from their current state.
    pub(crate) fn take_presentation_feedback(
        &self,
        output: &Output,
        states: &RenderElementStates,
    ) -> OutputPresentationFeedback {
        let mut feedback = OutputPresentationFeedback::new(output);
        for window in self.space.elements() {
            window.take_presentation_feedback(
                &mut feedback,
                surface_primary_scanout_output,
                |surface, _| surface_presentation_feedback_flags_from_states(surface, states),
            );
        }
        feedback
    }

    /// Headless and nested: no display reports when a frame is shown, so feedback goes
    /// out right after the render, with the frame clock's time (the render's start, never
    /// before a commit it shows) and sequence; `vsync` only (frames follow the clock,
    /// never torn), never `hw_clock` or `hw_completion`.
    fn send_clock_presentation_feedback(
        &self,
        output: &Output,
        states: &RenderElementStates,
        tick: FrameTick,
    ) {
        let mut feedback = self.take_presentation_feedback(output, states);
        let refresh = output
            .current_mode()
            .and_then(|m| u32::try_from(m.refresh).ok())
            .filter(|mhz| *mhz > 0)
            .map_or(Refresh::Unknown, |mhz| {
                Refresh::fixed(crate::config::refresh_interval(mhz))
            });
        feedback.presented::<Time<Monotonic>, Monotonic>(
            tick.time.into(),
            refresh,
            tick.seq,
            wp_presentation_feedback::Kind::Vsync,
        );
    }

    /// Frame callbacks of the surfaces on `output`, with `time` (CLOCK_MONOTONIC);
    /// surfaces shown nowhere get one at most every [`OFFSCREEN_FRAME_THROTTLE`].
    pub(crate) fn send_frame_callbacks(
        &self,
        output: &Output,
        time: Duration,
        shown: Option<&crate::backend::tty::shown_commits::ShownCommits>,
    ) {
        for window in self.space.elements() {
            window.send_frame(
                output,
                time,
                Some(OFFSCREEN_FRAME_THROTTLE),
                |surface, data| {
                    // A commit the frame does not show: called back by a later frame.
                    if shown.is_some_and(|s| s.committed_since(surface, data)) {
                        None
                    } else {
                        surface_primary_scanout_output(surface, data)
                    }
                },
            );
        }
        // The pointer's surface (an animated cursor draws its next image on these).
        if let smithay::input::pointer::CursorImageStatus::Surface(surface) = &self.cursor_status {
            smithay::desktop::utils::send_frames_surface_tree(
                surface,
                output,
                time,
                Some(OFFSCREEN_FRAME_THROTTLE),
                |_, _| Some(output.clone()),
            );
        }
    }
}
