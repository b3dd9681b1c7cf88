//! Input that does not come from a device: an embedder (the WLCS conformance
//! integration, tests) moves the pointer, presses buttons and touches the screen in
//! global logical coordinates, on the compositor's thread.
//!
//! The rules are the backends' rules: the pointer and touch focus is the surface under
//! the point (subsurfaces and popups included, input regions respected), and a button
//! press outside a grab activates the window under the pointer (raised, keyboard focus,
//! xdg `activated`). The pointer is not clamped to the outputs: the embedder decides where it is.

use smithay::{
    backend::input::{ButtonState, TouchSlot},
    desktop::WindowSurfaceType,
    input::{
        pointer::{ButtonEvent, MotionEvent, RelativeMotionEvent},
        touch::{DownEvent, MotionEvent as TouchMotionEvent, UpEvent},
    },
    reexports::wayland_server::protocol::wl_surface::WlSurface,
    utils::{Logical, Point, SERIAL_COUNTER},
};

use crate::state::State;

impl State {
    /// The surface under `location` (global logical coordinates) and that surface's
    /// origin in the same coordinates.
    pub fn surface_at(
        &self,
        location: Point<f64, Logical>,
    ) -> Option<(WlSurface, Point<f64, Logical>)> {
        // element_under gives where the window's surface tree starts (its render
        // location: the mapped geometry corner minus the geometry offset).
        let (window, origin) = self.space.element_under(location)?;
        let (surface, surface_loc) =
            window.surface_under(location - origin.to_f64(), WindowSurfaceType::ALL)?;
        Some((surface, (surface_loc + origin).to_f64()))
    }

    /// Milliseconds of the presentation clock, the timestamp of injected events.
    fn input_time_msec(&self) -> u32 {
        let now: std::time::Duration = self.clock.now().into();
        // wl_pointer and wl_touch timestamps are 32-bit milliseconds that wrap.
        (now.as_millis() % (1u128 << 32)) as u32
    }

    /// Move the pointer to `location` (global logical coordinates); one wl_pointer frame.
    pub fn inject_pointer_motion(&mut self, location: Point<f64, Logical>) {
        let Some(pointer) = self.seat.get_pointer() else {
            return;
        };
        let focus = self.surface_at(location);
        self.record_pointer_focus(focus.clone());
        let event = MotionEvent {
            location,
            serial: SERIAL_COUNTER.next_serial(),
            time: self.input_time_msec(),
        };
        pointer.motion(self, focus, &event);
        pointer.frame(self);
    }

    /// Move the pointer by `delta` from where it is: the motion, and the same delta as
    /// relative motion (zwp_relative_pointer_v1), in one wl_pointer frame.
    pub fn inject_pointer_motion_relative(&mut self, delta: Point<f64, Logical>) {
        let Some(pointer) = self.seat.get_pointer() else {
            return;
        };
        let location = pointer.current_location() + delta;
        let focus = self.surface_at(location);
        self.record_pointer_focus(focus.clone());
        let event = MotionEvent {
            location,
            serial: SERIAL_COUNTER.next_serial(),
            time: self.input_time_msec(),
        };
        pointer.motion(self, focus.clone(), &event);
        let now: std::time::Duration = self.clock.now().into();
        let relative = RelativeMotionEvent {
            delta,
            delta_unaccel: delta,
            utime: u64::try_from(now.as_micros()).unwrap_or(u64::MAX),
        };
        pointer.relative_motion(self, focus, &relative);
        pointer.frame(self);
    }

    /// Press or release button `button` (a Linux input event code, e.g. BTN_LEFT).
    pub fn inject_pointer_button(&mut self, button: u32, state: ButtonState) {
        let Some(pointer) = self.seat.get_pointer() else {
            return;
        };
        let serial = SERIAL_COUNTER.next_serial();
        if state == ButtonState::Pressed && !pointer.is_grabbed() {
            self.raise_and_focus_window_at(pointer.current_location());
        }
        let event = ButtonEvent {
            serial,
            time: self.input_time_msec(),
            button,
            state,
        };
        pointer.button(self, &event);
        pointer.frame(self);
    }

    /// Give seat0 a touch capability (clients see it in wl_seat.capabilities). Nothing
    /// happens when it already has one.
    pub fn enable_touch(&mut self) {
        if self.seat.get_touch().is_none() {
            self.seat.add_touch();
        }
    }

    /// Touch point `slot` goes down at `location`; one wl_touch frame. Needs
    /// [`State::enable_touch`] first (otherwise nothing happens).
    pub fn inject_touch_down(&mut self, slot: u32, location: Point<f64, Logical>) {
        let Some(touch) = self.seat.get_touch() else {
            return;
        };
        let focus = self.surface_at(location);
        let event = DownEvent {
            slot: TouchSlot::from(Some(slot)),
            location,
            serial: SERIAL_COUNTER.next_serial(),
            time: self.input_time_msec(),
        };
        touch.down(self, focus, &event);
        touch.frame(self);
    }

    /// Touch point `slot` moves to `location`; one wl_touch frame. The events keep going
    /// to the surface the point went down on.
    pub fn inject_touch_motion(&mut self, slot: u32, location: Point<f64, Logical>) {
        let Some(touch) = self.seat.get_touch() else {
            return;
        };
        let focus = self.surface_at(location);
        let event = TouchMotionEvent {
            slot: TouchSlot::from(Some(slot)),
            location,
            time: self.input_time_msec(),
        };
        touch.motion(self, focus, &event);
        touch.frame(self);
    }

    /// Touch point `slot` goes up; one wl_touch frame.
    pub fn inject_touch_up(&mut self, slot: u32) {
        let Some(touch) = self.seat.get_touch() else {
            return;
        };
        let event = UpEvent {
            slot: TouchSlot::from(Some(slot)),
            serial: SERIAL_COUNTER.next_serial(),
            time: self.input_time_msec(),
        };
        touch.up(self, &event);
        touch.frame(self);
    }

    /// Activate the window under `location` (the background keeps the focus where it
    /// is).
    fn raise_and_focus_window_at(&mut self, location: Point<f64, Logical>) {
        let Some(window) = self.space.element_under(location).map(|(w, _)| w.clone()) else {
            return;
        };
        self.activate_window(&window);
    }
}
