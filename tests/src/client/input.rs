//! Input on a [`TestClient`]: [`TestClient::bind_seat`] binds `wl_seat`, takes its
//! keyboard and pointer as the capabilities arrive, and records their events in
//! [`Recorder::input`] ([`InputRecord`]), numbered by [`Recorder::seq`] like every other
//! event.

use wayland_client::{
    protocol::{
        wl_keyboard::{self, WlKeyboard},
        wl_pointer::{self, WlPointer},
        wl_seat::{self, WlSeat},
        wl_surface::WlSurface,
    },
    Connection, Dispatch, QueueHandle, WEnum,
};

use super::{Recorder, TestClient};

/// A recorded `wl_keyboard` event.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyboardEvent {
    /// `enter`: keyboard focus on `surface`.
    Enter {
        /// The focused surface.
        surface: WlSurface,
    },
    /// `leave`: keyboard focus left `surface`.
    Leave {
        /// The surface that lost focus.
        surface: WlSurface,
    },
    /// `key`: an evdev key code (`KEY_A` is 30) and whether it went down.
    Key {
        /// The evdev code.
        key: u32,
        /// Pressed (true) or released.
        pressed: bool,
    },
    /// `modifiers`: the depressed modifier mask (xkb; Control is 0x4 in the default keymap).
    Modifiers {
        /// `mods_depressed`.
        depressed: u32,
    },
}

/// A recorded `wl_pointer` event (coordinates are surface-local).
#[derive(Debug, Clone, PartialEq)]
pub enum PointerEvent {
    /// `enter` on `surface` at (`x`, `y`).
    Enter {
        /// The surface under the pointer.
        surface: WlSurface,
        /// Surface-local x.
        x: f64,
        /// Surface-local y.
        y: f64,
    },
    /// `leave` of `surface`.
    Leave {
        /// The surface the pointer left.
        surface: WlSurface,
    },
    /// `motion` to (`x`, `y`) on the focused surface.
    Motion {
        /// Surface-local x.
        x: f64,
        /// Surface-local y.
        y: f64,
    },
    /// `button`: an evdev button code (`BTN_LEFT` is 0x110) and whether it went down.
    Button {
        /// The evdev code.
        button: u32,
        /// Pressed (true) or released.
        pressed: bool,
    },
}

/// What the seat's devices sent, each event with its [`Recorder::seq`] number.
#[derive(Debug, Default)]
pub struct InputRecord {
    /// The seat's last `capabilities` (`wl_seat::Capability` bits).
    pub capabilities: Option<u32>,
    /// The keyboard, once the seat announced one.
    pub keyboard: Option<WlKeyboard>,
    /// The pointer, once the seat announced one.
    pub pointer: Option<WlPointer>,
    /// A keymap arrived on the keyboard.
    pub keymap: bool,
    /// Keyboard events, in arrival order.
    pub keys: Vec<(u64, KeyboardEvent)>,
    /// Pointer events, in arrival order.
    pub pointer_events: Vec<(u64, PointerEvent)>,
    /// The serial of the last `wl_pointer.enter` (what `wl_pointer.set_cursor` needs).
    pub pointer_enter_serial: Option<u32>,
}

impl InputRecord {
    /// The surface that has keyboard focus after the events so far.
    pub fn keyboard_focus(&self) -> Option<&WlSurface> {
        let mut focus = None;
        for (_, e) in &self.keys {
            match e {
                KeyboardEvent::Enter { surface } => focus = Some(surface),
                KeyboardEvent::Leave { .. } => focus = None,
                _ => {}
            }
        }
        focus
    }

    /// The surface under the pointer after the events so far.
    pub fn pointer_focus(&self) -> Option<&WlSurface> {
        let mut focus = None;
        for (_, e) in &self.pointer_events {
            match e {
                PointerEvent::Enter { surface, .. } => focus = Some(surface),
                PointerEvent::Leave { .. } => focus = None,
                _ => {}
            }
        }
        focus
    }

    /// `(key, pressed)` of every `wl_keyboard.key` after event number `after`.
    pub fn keys_after(&self, after: u64) -> Vec<(u32, bool)> {
        self.keys
            .iter()
            .filter(|(at, _)| *at > after)
            .filter_map(|(_, e)| match e {
                KeyboardEvent::Key { key, pressed } => Some((*key, *pressed)),
                _ => None,
            })
            .collect()
    }

    /// `(button, pressed)` of every `wl_pointer.button` after event number `after`.
    pub fn buttons_after(&self, after: u64) -> Vec<(u32, bool)> {
        self.pointer_events
            .iter()
            .filter(|(at, _)| *at > after)
            .filter_map(|(_, e)| match e {
                PointerEvent::Button { button, pressed } => Some((*button, *pressed)),
                _ => None,
            })
            .collect()
    }
}

impl TestClient {
    /// `wl_pointer.set_cursor` with the serial of the last `wl_pointer.enter`: `surface`
    /// (a bare `wl_surface` from [`TestClient::create_surface`]; attach and commit its
    /// image before or after) becomes the cursor with its `hotspot`, or `None` hides the
    /// cursor. Panics without a pointer or before any `enter` (test scaffolding).
    pub fn set_cursor(&mut self, surface: Option<&WlSurface>, hotspot: (i32, i32)) {
        let pointer = self
            .rec
            .input
            .pointer
            .as_ref()
            .expect("a wl_pointer (bind_seat first)");
        let serial = self
            .rec
            .input
            .pointer_enter_serial
            .expect("wl_pointer.enter arrived (set_cursor needs its serial)");
        pointer.set_cursor(serial, surface, hotspot.0, hotspot.1);
        self.flush();
    }

    /// Binds `wl_seat` (up to version 7) and waits (roundtrips) for its capabilities; the
    /// keyboard and pointer are taken as they are announced. Panics without a seat.
    pub fn bind_seat(&mut self) -> WlSeat {
        let seat: WlSeat = self.bind(7).expect("the compositor announces wl_seat");
        self.blocking_roundtrip();
        self.blocking_roundtrip();
        seat
    }
}

impl Dispatch<WlSeat, ()> for Recorder {
    fn event(
        state: &mut Self,
        seat: &WlSeat,
        event: wl_seat::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        if let wl_seat::Event::Capabilities { capabilities } = event {
            let caps = match capabilities {
                WEnum::Value(c) => c,
                WEnum::Unknown(raw) => wl_seat::Capability::from_bits_truncate(raw),
            };
            state.input.capabilities = Some(caps.bits());
            if caps.contains(wl_seat::Capability::Keyboard) && state.input.keyboard.is_none() {
                state.input.keyboard = Some(seat.get_keyboard(qh, ()));
            }
            if caps.contains(wl_seat::Capability::Pointer) && state.input.pointer.is_none() {
                state.input.pointer = Some(seat.get_pointer(qh, ()));
            }
        }
    }
}

fn is_pressed<T: Into<u32> + Copy>(state: WEnum<T>, pressed: T) -> bool {
    match state {
        WEnum::Value(s) => s.into() == pressed.into(),
        WEnum::Unknown(raw) => raw == pressed.into(),
    }
}

impl Dispatch<WlKeyboard, ()> for Recorder {
    fn event(
        state: &mut Self,
        _: &WlKeyboard,
        event: wl_keyboard::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let e = match event {
            wl_keyboard::Event::Keymap { .. } => {
                state.input.keymap = true;
                return;
            }
            wl_keyboard::Event::Enter { surface, .. } => KeyboardEvent::Enter { surface },
            wl_keyboard::Event::Leave { surface, .. } => KeyboardEvent::Leave { surface },
            wl_keyboard::Event::Key { key, state: ks, .. } => KeyboardEvent::Key {
                key,
                pressed: is_pressed(ks, wl_keyboard::KeyState::Pressed),
            },
            wl_keyboard::Event::Modifiers { mods_depressed, .. } => KeyboardEvent::Modifiers {
                depressed: mods_depressed,
            },
            _ => return,
        };
        let at = state.next();
        state.input.keys.push((at, e));
    }
}

impl Dispatch<WlPointer, ()> for Recorder {
    fn event(
        state: &mut Self,
        _: &WlPointer,
        event: wl_pointer::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let e = match event {
            wl_pointer::Event::Enter {
                serial,
                surface,
                surface_x,
                surface_y,
            } => {
                state.input.pointer_enter_serial = Some(serial);
                PointerEvent::Enter {
                    surface,
                    x: surface_x,
                    y: surface_y,
                }
            }
            wl_pointer::Event::Leave { surface, .. } => PointerEvent::Leave { surface },
            wl_pointer::Event::Motion {
                surface_x,
                surface_y,
                ..
            } => PointerEvent::Motion {
                x: surface_x,
                y: surface_y,
            },
            wl_pointer::Event::Button {
                button, state: bs, ..
            } => PointerEvent::Button {
                button,
                pressed: is_pressed(bs, wl_pointer::ButtonState::Pressed),
            },
            _ => return,
        };
        let at = state.next();
        state.input.pointer_events.push((at, e));
    }
}
