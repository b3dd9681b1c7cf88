//! xdg-shell: toplevels become windows in the space, popups are tracked.

use smithay::{
    delegate_xdg_shell,
    desktop::{PopupKind, PopupManager, Space, Window},
    reexports::wayland_server::protocol::{wl_output::WlOutput, wl_seat, wl_surface::WlSurface},
    utils::{Logical, Point, Serial},
    wayland::{
        compositor::with_states,
        shell::xdg::{
            PopupSurface, PositionerState, ToplevelSurface, XdgShellHandler, XdgShellState,
            XdgToplevelSurfaceData,
        },
    },
};

use crate::state::State;
use crate::window_states::FillState;

/// Offset between successive new windows.
const CASCADE_STEP: i32 = 32;

impl XdgShellHandler for State {
    fn xdg_shell_state(&mut self) -> &mut XdgShellState {
        &mut self.protocols.xdg_shell
    }

    fn new_toplevel(&mut self, surface: ToplevelSurface) {
        let wl_surface = surface.wl_surface().clone();
        let window = Window::new_wayland_window(surface);
        let location = next_window_location(&self.space);
        self.space.map_element(window, location, true);
        super::seat::focus(self, Some(wl_surface));
    }

    fn new_popup(&mut self, surface: PopupSurface, positioner: PositionerState) {
        surface.with_pending_state(|state| {
            state.geometry = positioner.get_geometry();
        });
        if let Err(err) = self.popups.track_popup(PopupKind::Xdg(surface)) {
            tracing::debug!(%err, "popup not tracked");
        }
    }

    fn grab(&mut self, _surface: PopupSurface, _seat: wl_seat::WlSeat, _serial: Serial) {
        // No input grabs in this compositor: the popup simply stays mapped.
    }

    fn reposition_request(
        &mut self,
        surface: PopupSurface,
        positioner: PositionerState,
        token: u32,
    ) {
        surface.with_pending_state(|state| {
            state.geometry = positioner.get_geometry();
            state.positioner = positioner;
        });
        surface.send_repositioned(token);
    }

    fn fullscreen_request(&mut self, surface: ToplevelSurface, output: Option<WlOutput>) {
        self.fill_output(&surface, FillState::Fullscreen, output);
    }

    fn unfullscreen_request(&mut self, surface: ToplevelSurface) {
        self.unfill_output(&surface, FillState::Fullscreen);
    }

    fn maximize_request(&mut self, surface: ToplevelSurface) {
        self.fill_output(&surface, FillState::Maximized, None);
    }

    fn unmaximize_request(&mut self, surface: ToplevelSurface) {
        self.unfill_output(&surface, FillState::Maximized);
    }

    fn toplevel_destroyed(&mut self, surface: ToplevelSurface) {
        if let Some(window) = self.window_for(surface.wl_surface()).cloned() {
            self.space.unmap_elem(&window);
        }
        let next = self
            .space
            .elements()
            .last()
            .and_then(|w| w.toplevel().map(|t| t.wl_surface().clone()));
        super::seat::focus(self, next);
    }
}

delegate_xdg_shell!(State);

/// Windows cascade from the top-left corner of the first output.
fn next_window_location(space: &Space<Window>) -> Point<i32, Logical> {
    let geometry = space
        .outputs()
        .next()
        .and_then(|o| space.output_geometry(o));
    let origin = geometry.map(|g| g.loc).unwrap_or_default();
    let width = geometry.map_or(0, |g| g.size.w);
    origin + cascade_slot(space.elements().count(), width)
}

/// Windows in one cascade chain.
const CASCADE_CHAIN: usize = 8;
/// Chains side by side before the cascade starts over.
const CASCADE_CHAINS: usize = 4;

/// Where the `index`-th window goes, from the output's top-left corner: 8 to a chain,
/// [`CASCADE_STEP`] apart; each further chain a fifth of the output's width to the right,
/// so a new window does not land exactly on an earlier one and hide it (a hidden window
/// gets a frame callback once a second only) until 32 windows are open.
///
/// Public so that a benchmark can give a peer compositor the same scene.
pub fn cascade_slot(index: usize, output_width: i32) -> Point<i32, Logical> {
    let index = index % (CASCADE_CHAIN * CASCADE_CHAINS);
    let chain = i32::try_from(index / CASCADE_CHAIN).unwrap_or(0);
    let slot = i32::try_from(index % CASCADE_CHAIN).unwrap_or(0);
    Point::from((
        chain * (output_width / 5) + slot * CASCADE_STEP,
        slot * CASCADE_STEP,
    ))
}

/// Per-commit xdg bookkeeping: the initial configure of toplevels and popups.
pub fn handle_commit(popups: &mut PopupManager, space: &Space<Window>, surface: &WlSurface) {
    if let Some(window) = crate::window_lookup::window_in(space, surface) {
        let initial_configure_sent = with_states(surface, |states| {
            states
                .data_map
                .get::<XdgToplevelSurfaceData>()
                .and_then(|data| data.lock().ok().map(|d| d.initial_configure_sent))
                .unwrap_or(true)
        });
        if !initial_configure_sent {
            if let Some(toplevel) = window.toplevel() {
                toplevel.send_configure();
            }
        }
    }

    popups.commit(surface);
    if let Some(PopupKind::Xdg(popup)) = popups.find_popup(surface) {
        if !popup.is_initial_configure_sent() {
            if let Err(err) = popup.send_configure() {
                tracing::debug!(%err, "popup configure failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_32_windows_each_get_a_place_of_their_own() {
        let slots: Vec<_> = (0..32).map(|i| cascade_slot(i, 1024)).collect();
        for (i, a) in slots.iter().enumerate() {
            assert!(
                a.x + 128 <= 1024,
                "window {i} at {a:?} starts off the output"
            );
            for (j, b) in slots.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "windows {i} and {j}");
            }
        }
        assert_eq!(cascade_slot(1, 1024), Point::from((32, 32)));
        assert_eq!(cascade_slot(32, 1024), cascade_slot(0, 1024));
    }
}
