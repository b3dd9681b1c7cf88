//! zwp_relative_pointer_manager_v1. Advertised only when the one who drives the
//! pointer sends relative motion: an embedder calls [`State::enable_relative_pointer`]
//! (the WLCS integration does); the device backends do not send relative motion yet,
//! so they do not advertise it.

use smithay::{delegate_relative_pointer, wayland::relative_pointer::RelativePointerManagerState};

use crate::state::State;

delegate_relative_pointer!(State);

impl State {
    /// Create the zwp_relative_pointer_manager_v1 global (once).
    /// [`State::inject_pointer_motion_relative`] then sends relative motion.
    pub fn enable_relative_pointer(&mut self) {
        if self.relative_pointer.is_none() {
            self.relative_pointer = Some(RelativePointerManagerState::new::<State>(
                &self.display_handle,
            ));
        }
    }
}
