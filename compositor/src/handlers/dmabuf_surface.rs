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
//! The choice is made again after a refresh cycle of a tty output in which the layout
//! (outputs, windows' places and sizes, fullscreen states) changed, so a surface that
//! stops being a candidate (unfullscreened, moved, resized, its output gone) gets the
//! default feedback back; an unchanged layout costs one pass over the windows.
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
    utils::{Logical, Point, Rectangle, Size},
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

/// What the choice of feedback depends on: the outputs' and the windows' placement. An
/// unchanged layout is not chosen for again.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Layout {
    outputs: Vec<(Output, Rectangle<i32, Logical>)>,
    windows: Vec<Placement>,
}

/// One window's part of the [`Layout`].
#[derive(Debug, PartialEq)]
struct Placement {
    window: Window,
    location: Point<i32, Logical>,
    bbox: Rectangle<i32, Logical>,
    size: Size<i32, Logical>,
    fullscreen: bool,
}

impl Placement {
    /// Whether this window may go on the primary plane of the output at `geo`, given it
    /// is the only window there: at its origin, and fullscreen or exactly its size.
    fn fits(&self, geo: Rectangle<i32, Logical>) -> bool {
        self.location == geo.loc && (self.fullscreen || self.size == geo.size)
    }
}

impl State {
    fn layout(&self) -> Layout {
        let outputs = self
            .space
            .outputs()
            .filter_map(|o| Some((o.clone(), self.space.output_geometry(o)?)))
            .collect();
        let windows = self
            .space
            .elements()
            .filter_map(|window| {
                Some(Placement {
                    location: self.space.element_location(window)?,
                    bbox: self.space.element_bbox(window)?,
                    size: window.geometry().size,
                    fullscreen: window.toplevel().is_some_and(|t| {
                        t.current_state()
                            .states
                            .contains(xdg_toplevel::State::Fullscreen)
                    }),
                    window: window.clone(),
                })
            })
            .collect();
        Layout { outputs, windows }
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

    /// The feedback `surface` has now: the one last chosen for its window, or the
    /// default one (a surface that is no mapped toplevel, or not chosen for yet).
    ///
    /// smithay asks for it (`new_surface_feedback`) with the surface's state locked:
    /// nothing here may read the surface's state (its xdg state, its geometry), so the
    /// choice is the one [`Self::update_surface_dmabuf_feedback`] stored on the window.
    pub fn surface_dmabuf_feedback(&self, surface: &WlSurface) -> Option<DmabufFeedback> {
        let default = self.dmabuf.as_ref()?.feedback.clone();
        let chosen = self
            .window_for(surface)
            .and_then(|w| w.user_data().get::<ChosenFeedback>())
            .and_then(|c| c.0.borrow().clone());
        Some(chosen.unwrap_or(default))
    }

    /// Choose every toplevel's feedback again if the layout changed (tty: checked after
    /// each refresh cycle). Sends only to surfaces that asked for feedback, and only what
    /// changed.
    pub fn update_surface_dmabuf_feedback(&mut self) {
        if self.dmabuf.is_none() {
            return;
        }
        let layout = self.layout();
        let Some(support) = self.dmabuf.as_mut() else {
            return;
        };
        if support.layout == layout {
            return;
        }
        support
            .scanout
            .retain(|(output, _)| layout.outputs.iter().any(|(o, _)| o == output));
        let default = support.feedback.clone();
        // Each output's plane window: the only window on it, if that one fits it. One
        // pass over the windows per output; the first output a window fits wins.
        let mut plane_output: Vec<Option<Output>> = vec![None; layout.windows.len()];
        for (output, geo) in &layout.outputs {
            let mut on_it = layout
                .windows
                .iter()
                .enumerate()
                .filter(|(_, p)| p.bbox.overlaps(*geo));
            if let (Some((i, p)), None) = (on_it.next(), on_it.next()) {
                if p.fits(*geo) && plane_output[i].is_none() {
                    plane_output[i] = Some(output.clone());
                }
            }
        }
        for (placement, output) in layout.windows.iter().zip(plane_output) {
            let window = &placement.window;
            let Some(surface) = window.wl_surface().map(|s| s.into_owned()) else {
                continue;
            };
            let feedback = output
                .and_then(|output| self.scanout_feedback(&output))
                .unwrap_or_else(|| default.clone());
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
        if let Some(support) = self.dmabuf.as_mut() {
            support.layout = layout;
        }
    }
}
