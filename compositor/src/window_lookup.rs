//! Finding the mapped window of a surface.

use smithay::{
    desktop::{Space, Window},
    reexports::wayland_server::protocol::wl_surface::WlSurface,
};

use crate::state::State;

/// The window in `space` whose toplevel surface is `surface`; `None` for a surface that
/// is no mapped toplevel (a subsurface, a popup, a cursor, an unmapped toplevel).
pub fn window_in<'a>(space: &'a Space<Window>, surface: &WlSurface) -> Option<&'a Window> {
    space
        .elements()
        .find(|w| w.toplevel().is_some_and(|t| t.wl_surface() == surface))
}

impl State {
    /// The mapped window whose toplevel surface is `surface` (see [`window_in`]).
    pub fn window_for(&self, surface: &WlSurface) -> Option<&Window> {
        window_in(&self.space, surface)
    }
}
