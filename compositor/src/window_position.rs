//! Moving a window to a place an embedder chose (the WLCS conformance integration
//! positions its test windows; new windows otherwise cascade, see `handlers::xdg_shell`).

use smithay::{
    reexports::wayland_server::protocol::wl_surface::WlSurface,
    utils::{Logical, Point},
};

use crate::state::State;

impl State {
    /// Put the window whose toplevel surface is `surface` with its geometry's top-left
    /// corner at `location` (global logical coordinates), keeping its stacking order.
    /// Returns `false` when `surface` is no mapped toplevel.
    pub fn position_window(&mut self, surface: &WlSurface, location: Point<i32, Logical>) -> bool {
        let Some(window) = self.window_for(surface).cloned() else {
            return false;
        };
        self.space.map_element(window, location, false);
        self.pointer_focus_stale = true;
        self.request_redraw();
        true
    }
}
