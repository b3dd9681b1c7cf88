//! Per-surface linux-dmabuf feedback (`get_surface_feedback`).
//!
//! Every surface gets the default feedback (the render tranche: the main device and what
//! the renderer imports) unless it may go on a plane. On the tty backend that is:
//! - the primary plane: a toplevel that is the only window on an output and either is
//!   fullscreen there or covers it exactly (at its origin, its size: what
//!   [`kms::planes::candidate`] scans out directly once the buffer fits);
//! - an overlay plane: otherwise, a toplevel that lies wholly on an output at scale 1,
//!   untransformed, has no popups, and is overlapped by no window above it (popups
//!   included), among the topmost as many such windows as the output has overlay planes
//!   (the layout half of [`kms::overlay::candidates`]; the buffer half, its size and
//!   transform, is the client's to meet, and is what the tranche is for).
//!
//! Such a surface gets the output's scanout feedback: first a tranche flagged `scanout`
//! whose target device is the KMS device and whose formats are what those planes scan
//! out (IN_FORMATS; for overlays, what every overlay plane takes) that the renderer also
//! imports (a buffer the plane refuses is composited), then the render tranche.
//!
//! The choice is made again after a refresh cycle of a tty output in which the layout
//! (outputs, windows' stacking, places and sizes, popups, fullscreen states) changed, so
//! a surface that stops being a candidate (unfullscreened, moved, covered, its output
//! gone) gets the default feedback back; an unchanged layout costs one pass over the
//! windows. smithay sends a surface's feedback only when it differs from what it last
//! sent. The nested and headless backends put nothing on a plane: no scanout tranche
//! there.
//!
//! [`kms::planes::candidate`]: crate::backend::tty::kms::planes::candidate
//! [`kms::overlay::candidates`]: crate::backend::tty::kms::overlay::candidates

use smithay::{
    desktop::{PopupManager, Window},
    output::Output,
    reexports::{
        wayland_protocols::{
            wp::linux_dmabuf::zv1::server::zwp_linux_dmabuf_feedback_v1::TrancheFlags,
            xdg::shell::server::xdg_toplevel,
        },
        wayland_server::protocol::wl_surface::WlSurface,
    },
    utils::{Logical, Point, Rectangle, Size, Transform},
    wayland::{
        compositor::with_states,
        dmabuf::{DmabufFeedback, DmabufFeedbackBuilder, SurfaceDmabufFeedbackState},
        seat::WaylandFocus,
    },
};

use std::cell::RefCell;

use crate::{backend::tty::dmabuf_scanout::PlaneKind, state::State};

/// An output's feedback with the scanout tranche of one kind of its planes, and how
/// many such planes it has; `None`: it has no such tranche.
pub(crate) type CachedScanout = (Output, PlaneKind, Option<(DmabufFeedback, usize)>);

/// The feedback last chosen for a window (in its user data).
#[derive(Debug)]
struct ChosenFeedback(RefCell<Option<DmabufFeedback>>);

/// What the choice of feedback depends on: the outputs' and the windows' placement. An
/// unchanged layout is not chosen for again.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Layout {
    outputs: Vec<OutputPlacement>,
    /// Bottom to top.
    windows: Vec<Placement>,
}

/// One output's part of the [`Layout`].
#[derive(Debug, PartialEq)]
struct OutputPlacement {
    output: Output,
    geo: Rectangle<i32, Logical>,
    /// Scale 1 and untransformed: logical is physical, so a window can go on an overlay.
    unscaled: bool,
}

/// One window's part of the [`Layout`].
#[derive(Debug, PartialEq)]
struct Placement {
    window: Window,
    location: Point<i32, Logical>,
    bbox: Rectangle<i32, Logical>,
    size: Size<i32, Logical>,
    fullscreen: bool,
    popups: bool,
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
            .filter_map(|o| {
                Some(OutputPlacement {
                    output: o.clone(),
                    geo: self.space.output_geometry(o)?,
                    unscaled: o.current_scale().integer_scale() == 1
                        && o.current_transform() == Transform::Normal,
                })
            })
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
                    popups: window
                        .wl_surface()
                        .is_some_and(|s| PopupManager::popups_for_surface(&s).next().is_some()),
                    window: window.clone(),
                })
            })
            .collect();
        Layout { outputs, windows }
    }

    /// `output`'s feedback with the scanout tranche of its `kind` of planes and how many
    /// such planes it has, built on first use (and its formats logged once); `None` where
    /// the output has no such tranche.
    fn scanout_feedback(
        &mut self,
        output: &Output,
        kind: PlaneKind,
    ) -> Option<(DmabufFeedback, usize)> {
        let support = self.dmabuf.as_ref()?;
        if let Some((_, _, cached)) = support
            .scanout
            .iter()
            .find(|(o, k, _)| o == output && *k == kind)
        {
            return cached.clone();
        }
        let built = self.backend.scanout_tranche(output, kind).and_then(|tranche| {
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
                    planes = tranche.planes,
                    plane_formats = tranche.formats.len(),
                    "linux-dmabuf: no scanout tranche for the {}: the renderer imports none of their formats",
                    kind.name()
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
                        planes = tranche.planes,
                        plane_formats = tranche.formats.len(),
                        offered = offered.len(),
                        formats = %offered.join(" "),
                        "linux-dmabuf: scanout tranche of the {} for surfaces that may go on them",
                        kind.name()
                    );
                    Some((feedback, tranche.planes))
                }
                Err(err) => {
                    tracing::warn!(output = %output.name(), %err, "linux-dmabuf: building the scanout feedback of the {}", kind.name());
                    None
                }
            }
        });
        if let Some(support) = self.dmabuf.as_mut() {
            support.scanout.push((output.clone(), kind, built.clone()));
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
            .retain(|(output, _, _)| layout.outputs.iter().any(|o| o.output == *output));
        let default = support.feedback.clone();
        // Each window's scanout feedback, if it may go on a plane.
        let mut chosen: Vec<Option<DmabufFeedback>> = vec![None; layout.windows.len()];
        let boxes: Vec<_> = layout.windows.iter().map(|p| (p.bbox, p.popups)).collect();
        for out in &layout.outputs {
            // The primary plane's window: the only window on it, if that one fits it.
            let mut on_it = layout
                .windows
                .iter()
                .enumerate()
                .filter(|(_, p)| p.bbox.overlaps(out.geo));
            if let (Some((i, p)), None) = (on_it.next(), on_it.next()) {
                if p.fits(out.geo) && chosen[i].is_none() {
                    if let Some((feedback, _)) =
                        self.scanout_feedback(&out.output, PlaneKind::Primary)
                    {
                        chosen[i] = Some(feedback);
                        continue;
                    }
                }
            }
            if !out.unscaled {
                continue;
            }
            let Some((feedback, planes)) = self.scanout_feedback(&out.output, PlaneKind::Overlay)
            else {
                continue;
            };
            for i in overlay_windows(&boxes, out.geo, planes) {
                if chosen[i].is_none() {
                    chosen[i] = Some(feedback.clone());
                }
            }
        }
        for (placement, feedback) in layout.windows.iter().zip(chosen) {
            let window = &placement.window;
            let Some(surface) = window.wl_surface().map(|s| s.into_owned()) else {
                continue;
            };
            let feedback = feedback.unwrap_or_else(|| default.clone());
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

/// The windows that may go on one of `planes` overlay planes of the output at `geo`,
/// topmost first, as indices into `windows` (each its bbox, popups included, and whether
/// it has popups; bottom to top): walking down from the top, a window wholly on the
/// output, without popups, that no window above it on the output overlaps (see
/// [`kms::overlay`](crate::backend::tty::kms::overlay)).
fn overlay_windows(
    windows: &[(Rectangle<i32, Logical>, bool)],
    geo: Rectangle<i32, Logical>,
    planes: usize,
) -> Vec<usize> {
    let mut found = Vec::new();
    let mut above: Vec<Rectangle<i32, Logical>> = Vec::new();
    for (i, (bbox, popups)) in windows.iter().enumerate().rev() {
        if found.len() == planes {
            break;
        }
        if !bbox.overlaps(geo) {
            continue;
        }
        let free = !above.iter().any(|a| a.overlaps(*bbox));
        above.push(*bbox);
        if free && !popups && geo.contains_rect(*bbox) {
            found.push(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x: i32, y: i32, w: i32, h: i32) -> Rectangle<i32, Logical> {
        Rectangle::new((x, y).into(), (w, h).into())
    }

    const OUTPUT: (i32, i32, i32, i32) = (0, 0, 1024, 768);

    fn geo() -> Rectangle<i32, Logical> {
        rect(OUTPUT.0, OUTPUT.1, OUTPUT.2, OUTPUT.3)
    }

    #[test]
    fn windows_nothing_overlaps_are_overlay_candidates_topmost_first() {
        let windows = [(rect(0, 0, 64, 64), false), (rect(100, 0, 64, 64), false)];
        assert_eq!(overlay_windows(&windows, geo(), 8), vec![1, 0]);
    }

    #[test]
    fn an_overlapped_window_is_no_candidate_but_the_one_above_it_is() {
        // The second window cascades 32 px onto the first.
        let windows = [(rect(0, 0, 64, 64), false), (rect(32, 32, 64, 64), false)];
        assert_eq!(overlay_windows(&windows, geo(), 8), vec![1]);
    }

    #[test]
    fn a_window_overlapped_by_an_overlapped_window_is_no_candidate_either() {
        // 0 is under 1, 1 under 2; only 2 is free.
        let windows = [
            (rect(0, 0, 64, 64), false),
            (rect(32, 32, 64, 64), false),
            (rect(64, 64, 64, 64), false),
        ];
        assert_eq!(overlay_windows(&windows, geo(), 8), vec![2]);
    }

    #[test]
    fn windows_off_the_output_partly_or_with_popups_are_no_candidates() {
        let windows = [
            (rect(1000, 0, 64, 64), false),
            (rect(0, 0, 64, 64), true),
            (rect(2000, 0, 64, 64), false),
        ];
        assert!(overlay_windows(&windows, geo(), 8).is_empty());
    }

    #[test]
    fn no_more_candidates_than_planes() {
        let windows: Vec<_> = (0..5).map(|i| (rect(i * 100, 0, 64, 64), false)).collect();
        assert_eq!(overlay_windows(&windows, geo(), 2), vec![4, 3]);
        assert!(overlay_windows(&windows, geo(), 0).is_empty());
    }
}
