//! Per-surface linux-dmabuf feedback (`get_surface_feedback`).
//!
//! Every surface gets the default feedback (the render tranche: the main device and what
//! the renderer imports) unless it may go on a plane: on the tty backend, a toplevel that
//! is the only window on an output and either is fullscreen there or covers it exactly
//! (at its origin, its size: what [`kms::planes::candidate`] scans out directly once the
//! buffer fits). Such a surface gets the output's scanout feedback: first a tranche
//! flagged `scanout` whose target device is the KMS device and whose formats are what the
//! output's primary plane scans out (IN_FORMATS) that the renderer also imports (a buffer
//! the plane refuses is composited), then the render tranche.
//!
//! The choice is made again after every refresh cycle of a tty output (and when a
//! client asks for a surface's feedback), so a surface that stops being a candidate
//! (unfullscreened, moved, resized, its output gone) gets the default feedback back.
//! smithay sends a surface's feedback only when it differs from what it last sent. The
//! nested and headless backends put nothing on a plane: no scanout tranche there.
//!
//! [`kms::planes::candidate`]: crate::backend::tty::kms::planes::candidate

use smithay::{
    desktop::Window,
    output::Output,
    reexports::{
        wayland_protocols::{
            wp::linux_dmabuf::zv1::server::zwp_linux_dmabuf_feedback_v1::TrancheFlags,
            xdg::shell::server::xdg_toplevel,
        },
        wayland_server::protocol::wl_surface::WlSurface,
    },
    wayland::{
        compositor::with_states,
        dmabuf::{DmabufFeedback, DmabufFeedbackBuilder, SurfaceDmabufFeedbackState},
        seat::WaylandFocus,
    },
};

use std::cell::RefCell;

use crate::state::State;

/// The feedback last chosen for a window (in its user data).
#[derive(Debug)]
struct ChosenFeedback(RefCell<Option<DmabufFeedback>>);

impl State {
    /// The output on whose primary plane `window` may go, if any: it is the only window
    /// on that output, at its origin, and fullscreen or exactly the output's size.
    fn plane_output_of(&self, window: &Window) -> Option<Output> {
        let bbox = self.space.element_bbox(window)?;
        let location = self.space.element_location(window)?;
        let fullscreen = window.toplevel().is_some_and(|t| {
            t.current_state()
                .states
                .contains(xdg_toplevel::State::Fullscreen)
        });
        self.space
            .outputs()
            .find(|output| {
                let Some(geo) = self.space.output_geometry(output) else {
                    return false;
                };
                if !bbox.overlaps(geo) || location != geo.loc {
                    return false;
                }
                let alone = !self.space.elements().any(|w| {
                    w != window && self.space.element_bbox(w).is_some_and(|b| b.overlaps(geo))
                });
                alone && (fullscreen || window.geometry().size == geo.size)
            })
            .cloned()
    }

    /// `output`'s feedback with its scanout tranche, built on first use (and its formats
    /// logged once); `None` where the output has no scanout tranche.
    fn scanout_feedback(&mut self, output: &Output) -> Option<DmabufFeedback> {
        let support = self.dmabuf.as_ref()?;
        if let Some((_, cached)) = support.scanout.iter().find(|(o, _)| o == output) {
            return cached.clone();
        }
        let built = self.backend.scanout_tranche(output).and_then(|tranche| {
            let formats: Vec<_> = tranche
                .formats
                .iter()
                .filter(|f| support.formats.contains(f))
                .copied()
                .collect();
            let offered: Vec<String> = formats
                .iter()
                .map(|f| format!("{}/{:#x}", f.code, u64::from(f.modifier)))
                .collect();
            if formats.is_empty() {
                tracing::info!(
                    output = %output.name(),
                    plane_formats = tranche.formats.len(),
                    "linux-dmabuf: no scanout tranche: the renderer imports none of the primary plane's formats"
                );
                return None;
            }
            let feedback = DmabufFeedbackBuilder::new(support.main_device, support.formats.clone())
                .add_preference_tranche(tranche.device, Some(TrancheFlags::Scanout), formats)
                .build();
            match feedback {
                Ok(feedback) => {
                    tracing::info!(
                        output = %output.name(),
                        target_device = tranche.device,
                        plane_formats = tranche.formats.len(),
                        offered = offered.len(),
                        formats = %offered.join(" "),
                        "linux-dmabuf: scanout tranche of the primary plane for surfaces that may go on it"
                    );
                    Some(feedback)
                }
                Err(err) => {
                    tracing::warn!(output = %output.name(), %err, "linux-dmabuf: building the scanout feedback");
                    None
                }
            }
        });
        if let Some(support) = self.dmabuf.as_mut() {
            support.scanout.push((output.clone(), built.clone()));
        }
        built
    }

    /// The feedback `window` should have now (`None`: no linux-dmabuf).
    fn window_dmabuf_feedback(&mut self, window: &Window) -> Option<DmabufFeedback> {
        let default = self.dmabuf.as_ref()?.feedback.clone();
        let scanout = self
            .plane_output_of(window)
            .and_then(|output| self.scanout_feedback(&output));
        Some(scanout.unwrap_or(default))
    }

    /// The feedback `surface` has now: the one last chosen for its window, or the
    /// default one (a surface that is no mapped toplevel, or not chosen for yet).
    ///
    /// smithay asks for it (`new_surface_feedback`) with the surface's state locked:
    /// nothing here may read the surface's state (its xdg state, its geometry), so the
    /// choice is the one [`Self::update_surface_dmabuf_feedback`] stored on the window.
    pub fn surface_dmabuf_feedback(&self, surface: &WlSurface) -> Option<DmabufFeedback> {
        let default = self.dmabuf.as_ref()?.feedback.clone();
        let chosen = self
            .space
            .elements()
            .find(|w| w.wl_surface().is_some_and(|s| *s == *surface))
            .and_then(|w| w.user_data().get::<ChosenFeedback>())
            .and_then(|c| c.0.borrow().clone());
        Some(chosen.unwrap_or(default))
    }

    /// Choose every toplevel's feedback again (tty: after each refresh cycle). Sends
    /// only to surfaces that asked for feedback, and only what changed.
    pub fn update_surface_dmabuf_feedback(&mut self) {
        let Some(support) = self.dmabuf.as_mut() else {
            return;
        };
        let space = &self.space;
        support
            .scanout
            .retain(|(output, _)| space.outputs().any(|o| o == output));
        let windows: Vec<Window> = self.space.elements().cloned().collect();
        for window in windows {
            let Some(surface) = window.wl_surface().map(|s| s.into_owned()) else {
                continue;
            };
            let Some(feedback) = self.window_dmabuf_feedback(&window) else {
                return;
            };
            // Kept for a feedback object the client asks for later.
            let chosen = window
                .user_data()
                .get_or_insert(|| ChosenFeedback(RefCell::new(None)));
            *chosen.0.borrow_mut() = Some(feedback.clone());
            with_states(&surface, |states| {
                if let Some(state) = SurfaceDmabufFeedbackState::from_states(states) {
                    state.set_feedback(&feedback);
                }
            });
        }
    }
}
