//! libinput through the session: keyboard (with Ctrl+Alt+F<n> VT switching) and
//! pointer (motion clamped to the outputs, buttons, focus follows click).

use smithay::{
    backend::{
        input::{
            AbsolutePositionEvent, ButtonState, Device, DeviceCapability, Event, InputEvent,
            KeyState, KeyboardKeyEvent, PointerButtonEvent, PointerMotionEvent,
        },
        libinput::{LibinputInputBackend, LibinputSessionInterface},
        session::{libseat::LibSeatSession, Session},
    },
    input::{
        keyboard::{keysyms, FilterResult},
        pointer::{ButtonEvent, MotionEvent},
    },
    reexports::{
        calloop::LoopHandle,
        input::{
            self as libinput,
            event::{DeviceEvent, EventTrait},
            Libinput,
        },
    },
    utils::{Logical, Point, SERIAL_COUNTER},
    wayland::seat::WaylandFocus,
};

use super::TtyError;
use crate::state::State;

/// Start libinput on `session`'s seat and feed the seat.
pub fn register(
    handle: &LoopHandle<'static, State>,
    session: &LibSeatSession,
) -> Result<Libinput, TtyError> {
    let mut context =
        Libinput::new_with_udev::<LibinputSessionInterface<LibSeatSession>>(session.clone().into());
    if context.udev_assign_seat(&session.seat()).is_err() {
        return Err(TtyError::Source("libinput: udev_assign_seat failed".into()));
    }
    let backend = LibinputInputBackend::new(context.clone());
    handle
        .insert_source(backend, |event, _, state| {
            state.tty_input(event);
            // Focus changes and raised windows change what idle outputs show.
            state.request_redraw();
        })
        .map_err(|e| TtyError::Source(e.error.to_string()))?;
    // udev_assign_seat queued a DEVICE_ADDED event for every device present now, but the
    // libinput fd only becomes readable with the next input or udev event: without this
    // the devices would be announced only when someone first touches one of them.
    handle.insert_idle(State::tty_take_queued_device_events);
    Ok(context)
}

impl State {
    /// Hands the device events libinput queued without making its fd readable to the
    /// seat now instead of at the next input event: the devices `udev_assign_seat` found
    /// ([`register`] runs this once the loop turns), and likewise those that
    /// `Libinput::resume` adds or `Libinput::suspend` removes, when called after them.
    /// Only libinput's dispatch, which the event source runs and which drains the queue,
    /// produces input events, so nothing else can be waiting here.
    pub(crate) fn tty_take_queued_device_events(&mut self) {
        let crate::backend::Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        let Some(context) = tty.libinput.as_mut() else {
            return;
        };
        let queued: Vec<libinput::Event> = context.by_ref().collect();
        for event in queued {
            match event {
                libinput::Event::Device(DeviceEvent::Added(e)) => {
                    self.tty_input(InputEvent::DeviceAdded { device: e.device() })
                }
                libinput::Event::Device(DeviceEvent::Removed(e)) => {
                    self.tty_input(InputEvent::DeviceRemoved { device: e.device() })
                }
                other => tracing::warn!(?other, "unexpected queued libinput event dropped"),
            }
        }
    }

    fn tty_input(&mut self, event: InputEvent<LibinputInputBackend>) {
        match event {
            // Logged so that a device's arrival (at start-up or hot-added through udev)
            // and removal can be seen, by a person and by the VM input suite.
            InputEvent::DeviceAdded { device } => {
                tracing::info!(
                    name = %Device::name(&device),
                    keyboard = Device::has_capability(&device, DeviceCapability::Keyboard),
                    pointer = Device::has_capability(&device, DeviceCapability::Pointer),
                    "input device added"
                );
            }
            InputEvent::DeviceRemoved { device } => {
                tracing::info!(name = %Device::name(&device), "input device removed");
            }
            InputEvent::Keyboard { event } => {
                let Some(keyboard) = self.seat.get_keyboard() else {
                    return;
                };
                let serial = SERIAL_COUNTER.next_serial();
                let pressed = event.state() == KeyState::Pressed;
                let vt = keyboard.input(
                    self,
                    event.key_code(),
                    event.state(),
                    serial,
                    event.time_msec(),
                    |_, mods, handle| {
                        let sym = handle.modified_sym().raw();
                        if pressed
                            && (keysyms::KEY_XF86Switch_VT_1..=keysyms::KEY_XF86Switch_VT_12)
                                .contains(&sym)
                        {
                            let _ = mods;
                            FilterResult::Intercept(
                                i32::try_from(sym - keysyms::KEY_XF86Switch_VT_1 + 1).unwrap_or(1),
                            )
                        } else {
                            FilterResult::Forward
                        }
                    },
                );
                if let Some(vt) = vt {
                    if let crate::backend::Backend::Tty(tty) = &mut self.backend {
                        tracing::info!(vt, "switching VT");
                        if let Err(err) = tty.session.change_vt(vt) {
                            tracing::warn!(%err, "VT switch failed");
                        }
                    }
                }
            }
            InputEvent::PointerMotion { event } => {
                let pos = self.pointer_location() + event.delta();
                self.pointer_to(pos, event.time_msec());
            }
            InputEvent::PointerMotionAbsolute { event } => {
                let Some(geo) = self
                    .space
                    .outputs()
                    .next()
                    .and_then(|o| self.space.output_geometry(o))
                else {
                    return;
                };
                let pos = event.position_transformed(geo.size) + geo.loc.to_f64();
                self.pointer_to(pos, event.time_msec());
            }
            InputEvent::PointerButton { event } => {
                let Some(pointer) = self.seat.get_pointer() else {
                    return;
                };
                let serial = SERIAL_COUNTER.next_serial();
                if event.state() == ButtonState::Pressed {
                    let under = self
                        .space
                        .element_under(pointer.current_location())
                        .map(|(w, _)| w.clone());
                    if let Some(window) = under {
                        self.space.raise_element(&window, true);
                        let surface = window.wl_surface().map(|s| s.into_owned());
                        crate::handlers::seat::focus(self, surface);
                    }
                }
                pointer.button(
                    self,
                    &ButtonEvent {
                        button: event.button_code(),
                        state: event.state(),
                        serial,
                        time: event.time_msec(),
                    },
                );
                pointer.frame(self);
            }
            _ => {}
        }
    }

    fn pointer_location(&self) -> Point<f64, Logical> {
        self.seat
            .get_pointer()
            .map(|p| p.current_location())
            .unwrap_or_default()
    }

    fn pointer_to(&mut self, pos: Point<f64, Logical>, time: u32) {
        let Some(pointer) = self.seat.get_pointer() else {
            return;
        };
        // Clamp to the union of the outputs.
        let bounds = self
            .space
            .outputs()
            .filter_map(|o| self.space.output_geometry(o))
            .reduce(|a, b| a.merge(b));
        let pos = match bounds {
            Some(b) => Point::from((
                pos.x
                    .clamp(f64::from(b.loc.x), f64::from(b.loc.x + b.size.w - 1)),
                pos.y
                    .clamp(f64::from(b.loc.y), f64::from(b.loc.y + b.size.h - 1)),
            )),
            None => pos,
        };
        let under = self
            .space
            .element_under(pos)
            .and_then(|(w, loc)| w.wl_surface().map(|s| (s.into_owned(), loc.to_f64())));
        let serial = SERIAL_COUNTER.next_serial();
        pointer.motion(
            self,
            under,
            &MotionEvent {
                location: pos,
                serial,
                time,
            },
        );
        pointer.frame(self);
    }
}
