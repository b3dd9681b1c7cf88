//! wl_seat: one seat with a pointer and (when xkbcommon has a keymap) a keyboard.

use smithay::{
    delegate_seat,
    input::{keyboard::XkbConfig, pointer::CursorImageStatus, Seat, SeatHandler, SeatState},
    reexports::wayland_server::{protocol::wl_surface::WlSurface, DisplayHandle},
};

use crate::state::State;

impl SeatHandler for State {
    type KeyboardFocus = WlSurface;
    type PointerFocus = WlSurface;
    type TouchFocus = WlSurface;

    fn seat_state(&mut self) -> &mut SeatState<Self> {
        &mut self.protocols.seat
    }

    fn cursor_image(&mut self, _seat: &Seat<Self>, image: CursorImageStatus) {
        self.cursor_status = image;
        // The tty backend draws it on the cursor plane.
        self.request_redraw();
    }
}

delegate_seat!(State);

/// Create the `seat0` global with a pointer and, if a keymap compiles, a keyboard.
pub fn create_seat(seat_state: &mut SeatState<State>, dh: &DisplayHandle) -> Seat<State> {
    let mut seat = seat_state.new_wl_seat(dh, "seat0");
    seat.add_pointer();
    if let Err(err) = seat.add_keyboard(XkbConfig::default(), 200, 25) {
        tracing::warn!(%err, "no keyboard on seat0: keymap failed to compile");
    }
    seat
}

/// Give keyboard focus to `surface`.
pub fn focus(state: &mut State, surface: Option<WlSurface>) {
    if let Some(keyboard) = state.seat.get_keyboard() {
        let serial = smithay::utils::SERIAL_COUNTER.next_serial();
        keyboard.set_focus(state, surface, serial);
    }
}
