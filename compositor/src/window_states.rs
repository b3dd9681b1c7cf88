//! Fullscreen and maximized windows: xdg_toplevel's `set_fullscreen`/`set_maximized`
//! requests and their opposites.
//!
//! A fullscreen window covers its output (the one the client named, else the first) and
//! is told the output's size, so a client that draws at that size gives a buffer the
//! tty backend can put on the primary plane as it is (direct scanout, see
//! `backend::tty::kms::planes`). A maximized window is the same size; this compositor
//! has no panels or decorations to leave room for. Leaving either state puts the window
//! back where it was and lets the client choose its size again.

use smithay::{
    desktop::Window,
    output::Output,
    reexports::{
        wayland_protocols::xdg::shell::server::xdg_toplevel,
        wayland_server::protocol::wl_output::WlOutput,
    },
    utils::{Logical, Point},
    wayland::shell::xdg::ToplevelSurface,
};

use crate::state::State;

/// Where a window was before it filled an output (kept in the window's user data).
#[derive(Debug, Default)]
struct RestoreLocation(std::cell::Cell<Option<Point<i32, Logical>>>);

/// The two states that make a window cover its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillState {
    /// xdg_toplevel `fullscreen`.
    Fullscreen,
    /// xdg_toplevel `maximized`.
    Maximized,
}

impl FillState {
    fn xdg(self) -> xdg_toplevel::State {
        match self {
            FillState::Fullscreen => xdg_toplevel::State::Fullscreen,
            FillState::Maximized => xdg_toplevel::State::Maximized,
        }
    }
}

impl State {
    fn window_of(&self, toplevel: &ToplevelSurface) -> Option<Window> {
        self.window_for(toplevel.wl_surface()).cloned()
    }

    /// Make `toplevel` cover `wl_output` (or the output it is on, or the first output)
    /// in `state`, raise it and configure it with the output's size.
    pub fn fill_output(
        &mut self,
        toplevel: &ToplevelSurface,
        state: FillState,
        wl_output: Option<WlOutput>,
    ) {
        let requested = wl_output.as_ref().and_then(Output::from_resource);
        let window = self.window_of(toplevel);
        let output = requested
            .or_else(|| {
                window
                    .as_ref()
                    .and_then(|w| self.space.outputs_for_element(w).into_iter().next())
            })
            .or_else(|| self.space.outputs().next().cloned());
        let Some(geo) = output.as_ref().and_then(|o| self.space.output_geometry(o)) else {
            // No output to fill: the state is refused, which the configure says.
            tracing::debug!(?state, "no output to fill: state not set");
            send_configure_if_initial_sent(toplevel);
            return;
        };
        toplevel.with_pending_state(|pending| {
            pending.states.set(state.xdg());
            pending.size = Some(geo.size);
            if state == FillState::Fullscreen {
                pending.fullscreen_output = wl_output;
            }
        });
        if let Some(window) = window {
            let restore = window.user_data().get_or_insert(RestoreLocation::default);
            if restore.0.get().is_none() {
                restore.0.set(self.space.element_location(&window));
            }
            self.space.map_element(window.clone(), geo.loc, true);
            self.activate_window(&window);
        }
        send_configure_if_initial_sent(toplevel);
        self.request_redraw();
    }

    /// Take `state` from `toplevel`; when it no longer fills an output, put it back where
    /// it was and let the client choose its size.
    pub fn unfill_output(&mut self, toplevel: &ToplevelSurface, state: FillState) {
        let still_filling = toplevel.with_pending_state(|pending| {
            pending.states.unset(state.xdg());
            if state == FillState::Fullscreen {
                pending.fullscreen_output = None;
            }
            let other = match state {
                FillState::Fullscreen => FillState::Maximized,
                FillState::Maximized => FillState::Fullscreen,
            };
            let still = pending.states.contains(other.xdg());
            if !still {
                pending.size = None;
            }
            still
        });
        if !still_filling {
            if let Some(window) = self.window_of(toplevel) {
                let restore = window
                    .user_data()
                    .get::<RestoreLocation>()
                    .and_then(|r| r.0.take());
                if let Some(location) = restore {
                    self.space.map_element(window, location, false);
                }
            }
        }
        send_configure_if_initial_sent(toplevel);
        self.request_redraw();
    }
}

/// Before the initial configure, the pending state goes out with it (in reply to the
/// initial commit); after it, a new configure carries the change.
fn send_configure_if_initial_sent(toplevel: &ToplevelSurface) {
    if toplevel.is_initial_configure_sent() {
        toplevel.send_pending_configure();
    }
}
