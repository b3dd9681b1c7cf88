//! Which window is active: the one with the keyboard focus, told so through the
//! xdg_toplevel `activated` state. A window becomes active when it is first mapped
//! (its first commit with a buffer) and when an injected click raises it (see
//! `injected_input`).

use smithay::{
    backend::renderer::utils::with_renderer_surface_state, desktop::Window,
    reexports::wayland_server::protocol::wl_surface::WlSurface,
};

use crate::state::State;

/// Marks a window that has been mapped once (kept in the window's user data).
#[derive(Debug)]
struct MappedOnce;

impl State {
    /// Raise `window`, give it the keyboard focus and the `activated` state, and take
    /// that state from every other window (each change is sent as a configure).
    pub fn activate_window(&mut self, window: &Window) {
        self.space.raise_element(window, true);
        for other in self.space.elements() {
            set_activated(other, other == window);
        }
        let surface = window.toplevel().map(|t| t.wl_surface().clone());
        crate::handlers::seat::focus(self, surface);
    }

    /// After a commit of `surface`: a toplevel's first commit with a buffer maps it, and
    /// a newly mapped window is the active one.
    pub(crate) fn activate_on_first_map(&mut self, surface: &WlSurface) {
        let Some(window) = self.window_for(surface).cloned() else {
            return;
        };
        let has_buffer =
            with_renderer_surface_state(surface, |s| s.buffer().is_some()).unwrap_or(false);
        if has_buffer && window.user_data().insert_if_missing(|| MappedOnce) {
            self.activate_window(&window);
            // The mapped window's state is confirmed in a configure even when it did
            // not change (a first configure may already have said `activated`):
            // clients wait for that configure before taking the window as shown.
            if let Some(toplevel) = window.toplevel() {
                toplevel.send_configure();
            }
        }
    }
}

fn set_activated(window: &Window, activated: bool) {
    if window.set_activated(activated) {
        if let Some(toplevel) = window.toplevel() {
            if toplevel.is_initial_configure_sent() {
                toplevel.send_pending_configure();
            }
        }
    }
}
