//! The WLCS server hooks, through the `wlcs` crate's [`Wlcs`] trait.

use std::{
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::net::UnixStream,
    },
};

use syncbridge_compositor::smithay::{backend::input::ButtonState, utils::Point};
// The glob brings the functions in whichever form wayland-sys has them: linked, or
// behind `wayland_client_handle()` when another crate turned on its `dlopen` feature.
#[allow(unused_imports)]
use wayland_sys::client::*;
use wayland_sys::{
    common::{wl_fixed_t, wl_fixed_to_double},
    ffi_dispatch,
};
use wlcs::{ffi_display_server_api::WlcsIntegrationDescriptor, Wlcs};

use crate::compositor_thread::{Command, CommandSender, CompositorThread};

/// The integration: at most one running compositor, and the touch slots handed out.
#[derive(Debug)]
pub struct SyncbridgeWlcs {
    compositor: Option<CompositorThread>,
    next_touch_slot: u32,
}

impl SyncbridgeWlcs {
    fn sender(&self) -> Option<CommandSender> {
        self.compositor.as_ref().map(|c| c.sender().clone())
    }
}

/// Logging to stderr under `SYNCBRIDGE_WLCS_LOG`; off when unset or invalid.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYNCBRIDGE_WLCS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    // WLCS creates a server per test: only the first call installs the subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

fn point(
    x: wl_fixed_t,
    y: wl_fixed_t,
) -> Point<f64, syncbridge_compositor::smithay::utils::Logical> {
    Point::from((wl_fixed_to_double(x), wl_fixed_to_double(y)))
}

impl Wlcs for SyncbridgeWlcs {
    type Pointer = PointerDevice;
    type Touch = TouchDevice;

    fn new() -> Self {
        init_logging();
        Self {
            compositor: None,
            next_touch_slot: 0,
        }
    }

    fn start(&mut self) {
        match CompositorThread::start() {
            Ok(compositor) => self.compositor = Some(compositor),
            // WLCS's next call (a client socket) fails and the test with it.
            Err(err) => tracing::error!(%err, "wlcs: the compositor did not start"),
        }
    }

    fn stop(&mut self) {
        if let Some(compositor) = self.compositor.take() {
            compositor.stop();
        }
    }

    fn create_client_socket(&self) -> io::Result<OwnedFd> {
        let sender = self.sender().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, "the compositor is not running")
        })?;
        let (client, server) = UnixStream::pair()?;
        let client_fd = client.as_raw_fd();
        let command = Command::NewClient {
            stream: server,
            client_fd,
        };
        if !sender.call(command) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the compositor did not take the client",
            ));
        }
        // WLCS owns this end from now on (wl_display_connect_to_fd).
        Ok(client.into())
    }

    fn position_window_absolute(
        &self,
        display: *mut wl_display,
        surface: *mut wl_proxy,
        x: i32,
        y: i32,
    ) {
        let Some(sender) = self.sender() else {
            return;
        };
        // SAFETY: WLCS passes the live wl_display of one of its clients (connected to
        // an fd from create_client_socket) for the duration of this call; reading its
        // fd does not change it.
        let client_fd =
            unsafe { ffi_dispatch!(wayland_client_handle(), wl_display_get_fd, display) };
        // SAFETY: `surface` is a live wl_surface proxy of that client for the duration
        // of this call; reading its id does not change it.
        let surface_id =
            unsafe { ffi_dispatch!(wayland_client_handle(), wl_proxy_get_id, surface) };
        sender.call(Command::PositionWindow {
            client_fd,
            surface_id,
            location: Point::from((x, y)),
        });
    }

    fn create_pointer(&mut self) -> Option<PointerDevice> {
        self.sender().map(|sender| PointerDevice { sender })
    }

    fn create_touch(&mut self) -> Option<TouchDevice> {
        let sender = self.sender()?;
        let slot = self.next_touch_slot;
        self.next_touch_slot = self.next_touch_slot.wrapping_add(1);
        Some(TouchDevice { sender, slot })
    }

    fn get_descriptor(&self) -> &WlcsIntegrationDescriptor {
        &crate::extensions::DESCRIPTOR
    }
}

/// A WLCS pointer device: drives seat0's pointer (all devices share it, as libinput
/// devices do).
#[derive(Debug)]
pub struct PointerDevice {
    sender: CommandSender,
}

impl wlcs::Pointer for PointerDevice {
    fn move_absolute(&mut self, x: wl_fixed_t, y: wl_fixed_t) {
        self.sender.call(Command::PointerMotion(point(x, y)));
    }

    fn move_relative(&mut self, dx: wl_fixed_t, dy: wl_fixed_t) {
        self.sender
            .call(Command::PointerMotionRelative(point(dx, dy)));
    }

    fn button_up(&mut self, button: i32) {
        self.button(button, ButtonState::Released);
    }

    fn button_down(&mut self, button: i32) {
        self.button(button, ButtonState::Pressed);
    }
}

impl PointerDevice {
    fn button(&mut self, button: i32, state: ButtonState) {
        match u32::try_from(button) {
            Ok(button) => {
                self.sender.call(Command::PointerButton { button, state });
            }
            Err(_) => tracing::warn!(button, "wlcs: negative button code ignored"),
        }
    }
}

/// The position a WLCS touch hook receives. The C interface declares `wl_fixed_t`, but
/// the runner (1.5 to 1.8 at least: `Touch::down_at` and `move_to` pass their `int`
/// arguments straight through) sends whole pixels, so they are taken as such.
fn touch_point(
    x: wl_fixed_t,
    y: wl_fixed_t,
) -> Point<f64, syncbridge_compositor::smithay::utils::Logical> {
    Point::from((f64::from(x), f64::from(y)))
}

/// A WLCS touch device: one touch point (its own slot) of seat0's touch.
#[derive(Debug)]
pub struct TouchDevice {
    sender: CommandSender,
    slot: u32,
}

impl wlcs::Touch for TouchDevice {
    fn touch_down(&mut self, x: wl_fixed_t, y: wl_fixed_t) {
        self.sender.call(Command::TouchDown {
            slot: self.slot,
            location: touch_point(x, y),
        });
    }

    fn touch_move(&mut self, x: wl_fixed_t, y: wl_fixed_t) {
        self.sender.call(Command::TouchMotion {
            slot: self.slot,
            location: touch_point(x, y),
        });
    }

    fn touch_up(&mut self) {
        self.sender.call(Command::TouchUp { slot: self.slot });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_positions_are_whole_pixels() {
        // What WLCS's `Touch::down_at(91, 15)` hands the hook.
        let p = touch_point(91, 15);
        assert_eq!((p.x, p.y), (91.0, 15.0));
    }
}
