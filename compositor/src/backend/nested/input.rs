//! Events of the nested window: redraws drive frames, resizes change the output mode,
//! keyboard and pointer input go to the client under the pointer / with focus
//! (a click focuses and raises the window under it).

use smithay::{
    backend::{
        input::{
            AbsolutePositionEvent, Axis, AxisSource, ButtonState, Event, InputBackend, InputEvent,
            KeyboardKeyEvent, PointerAxisEvent, PointerButtonEvent,
        },
        winit::{WinitEvent, WinitInput},
    },
    desktop::{Window, WindowSurfaceType},
    input::{
        keyboard::FilterResult,
        pointer::{AxisFrame, ButtonEvent, MotionEvent},
    },
    reexports::wayland_server::protocol::wl_surface::WlSurface,
    utils::{Logical, Point, SERIAL_COUNTER},
};

use crate::{
    backend::Backend,
    state::{ExitReason, State},
};

impl State {
    /// Handle one event of the nested window.
    pub fn on_winit_event(&mut self, event: WinitEvent) {
        match event {
            WinitEvent::Redraw => self.nested_redraw(),
            WinitEvent::Resized { size, .. } => {
                if let Backend::Nested(nested) = &mut self.backend {
                    let size = nested.resized(size);
                    if let Some(stats) = self.stats.outputs.first_mut() {
                        stats.size = (size.w, size.h);
                    }
                }
            }
            WinitEvent::CloseRequested => self.request_exit(ExitReason::WindowClosed),
            WinitEvent::Focus(_) => {}
            WinitEvent::Input(event) => self.on_nested_input(event),
        }
    }

    /// The host delivered a redraw: one refresh cycle of the (only) output.
    fn nested_redraw(&mut self) {
        let now = self.clock.now().into();
        let Backend::Nested(nested) = &mut self.backend else {
            return;
        };
        let tick = nested.frame_clock_mut().tick_at(now);
        self.present_frame(0, tick);
    }

    fn on_nested_input(&mut self, event: InputEvent<WinitInput>) {
        tracing::trace!(?event, "nested: input");
        match event {
            InputEvent::Keyboard { event } => {
                let Some(keyboard) = self.seat.get_keyboard() else {
                    return;
                };
                let serial = SERIAL_COUNTER.next_serial();
                let time = Event::<WinitInput>::time_msec(&event);
                keyboard.input::<(), _>(
                    self,
                    event.key_code(),
                    event.state(),
                    serial,
                    time,
                    |_, _, _| FilterResult::Forward,
                );
            }
            InputEvent::PointerMotionAbsolute { event } => {
                let Some(output) = self.space.outputs().next().cloned() else {
                    return;
                };
                let Some(geometry) = self.space.output_geometry(&output) else {
                    return;
                };
                let location = event.position_transformed(geometry.size) + geometry.loc.to_f64();
                let Some(pointer) = self.seat.get_pointer() else {
                    return;
                };
                let focus = self.surface_under(location);
                let event = MotionEvent {
                    location,
                    serial: SERIAL_COUNTER.next_serial(),
                    time: event.time_msec(),
                };
                pointer.motion(self, focus, &event);
                pointer.frame(self);
            }
            InputEvent::PointerButton { event } => {
                let Some(pointer) = self.seat.get_pointer() else {
                    return;
                };
                let serial = SERIAL_COUNTER.next_serial();
                let state = event.state();
                if state == ButtonState::Pressed && !pointer.is_grabbed() {
                    self.focus_window_at(pointer.current_location());
                }
                let event = ButtonEvent {
                    serial,
                    time: event.time_msec(),
                    button: event.button_code(),
                    state,
                };
                pointer.button(self, &event);
                pointer.frame(self);
            }
            InputEvent::PointerAxis { event } => {
                let Some(pointer) = self.seat.get_pointer() else {
                    return;
                };
                pointer.axis(self, axis_frame::<WinitInput>(&event));
                pointer.frame(self);
            }
            _ => {}
        }
    }

    /// The surface under `location` (global logical coordinates), with its origin.
    fn surface_under(
        &self,
        location: Point<f64, Logical>,
    ) -> Option<(WlSurface, Point<f64, Logical>)> {
        let (window, window_loc) = self.space.element_under(location)?;
        let (surface, surface_loc) =
            window.surface_under(location - window_loc.to_f64(), WindowSurfaceType::ALL)?;
        Some((surface, (surface_loc + window_loc).to_f64()))
    }

    /// Raise the window under `location` and give it keyboard focus (a click on the
    /// background keeps the focus where it is).
    fn focus_window_at(&mut self, location: Point<f64, Logical>) {
        let Some(window) = self.space.element_under(location).map(|(w, _)| w.clone()) else {
            return;
        };
        self.space.raise_element(&window, true);
        for other in self.space.elements() {
            set_activated(other, other == &window);
        }
        let surface = window.toplevel().map(|t| t.wl_surface().clone());
        crate::handlers::seat::focus(self, surface);
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

/// One wl_pointer axis frame from a backend scroll event.
fn axis_frame<B: InputBackend>(event: &B::PointerAxisEvent) -> AxisFrame {
    let source = event.source();
    let mut frame = AxisFrame::new(event.time_msec()).source(source);
    for axis in [Axis::Horizontal, Axis::Vertical] {
        let v120 = event.amount_v120(axis);
        let amount = event
            .amount(axis)
            .or_else(|| v120.map(|v| v * 15.0 / 120.0))
            .unwrap_or(0.0);
        if amount != 0.0 {
            frame = frame
                .relative_direction(axis, event.relative_direction(axis))
                .value(axis, amount);
            if let Some(v120) = v120 {
                frame = frame.v120(axis, v120 as i32);
            }
        } else if source == AxisSource::Finger {
            frame = frame.stop(axis);
        }
    }
    frame
}
