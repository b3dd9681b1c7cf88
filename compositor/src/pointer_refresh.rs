//! The pointer's focus follows the scene, not only the pointer: when a commit or a
//! window move puts another surface under a pointer that did not move (or moves the
//! focused surface under it), the pointer gets the `leave`/`enter` or the `motion`
//! with its new surface-local position.

use std::cell::RefCell;

use smithay::{
    input::pointer::MotionEvent,
    reexports::wayland_server::protocol::wl_surface::WlSurface,
    utils::{Logical, Point, SERIAL_COUNTER},
};

use crate::state::State;

/// The focus surface and its origin that the pointer last got through
/// [`State::refresh_pointer_focus`] or injected motion (in the seat's user data).
#[derive(Debug, Default)]
struct SentPointerFocus(RefCell<Option<(WlSurface, Point<f64, Logical>)>>);

impl State {
    /// Remember that the pointer's focus is `focus` (surface and origin).
    pub(crate) fn record_pointer_focus(&self, focus: Option<(WlSurface, Point<f64, Logical>)>) {
        let user_data = self.seat.user_data();
        user_data.insert_if_missing(SentPointerFocus::default);
        if let Some(sent) = user_data.get::<SentPointerFocus>() {
            *sent.0.borrow_mut() = focus;
        }
    }

    /// Send the pointer a motion at its current location when the surface under it, or
    /// that surface's origin, changed since it was last told. Nothing while a grab
    /// (a held button, a popup grab) decides the focus.
    pub fn refresh_pointer_focus(&mut self) {
        let Some(pointer) = self.seat.get_pointer() else {
            return;
        };
        if pointer.is_grabbed() {
            return;
        }
        let location = pointer.current_location();
        let under = self.surface_at(location);
        let current = pointer.current_focus();
        let recorded = self
            .seat
            .user_data()
            .get::<SentPointerFocus>()
            .and_then(|s| s.0.borrow().clone());
        let changed = match (&under, &recorded) {
            _ if current.as_ref() != under.as_ref().map(|(s, _)| s) => true,
            (Some((surface, origin)), Some((sent, sent_origin))) if surface == sent => {
                origin != sent_origin
            }
            // Same surface, origin never recorded (a backend moved the pointer).
            _ => false,
        };
        self.record_pointer_focus(under.clone());
        if !changed {
            return;
        }
        let now: std::time::Duration = self.clock.now().into();
        let event = MotionEvent {
            location,
            serial: SERIAL_COUNTER.next_serial(),
            time: (now.as_millis() % (1u128 << 32)) as u32,
        };
        pointer.motion(self, under, &event);
        pointer.frame(self);
    }
}
