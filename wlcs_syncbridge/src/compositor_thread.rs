//! The compositor's own thread.
//!
//! WLCS calls the integration from its test thread and expects `start` to return with a
//! compositor running elsewhere. [`CompositorThread`] runs the syncbridge [`Server`]
//! (headless backend, one output, timer frame clock, shm only: no DRM device; seat0
//! with pointer, keyboard and touch) on a
//! thread of its own. Every hook becomes a [`Command`] sent through a calloop channel
//! and applied on that thread; the hook waits until it was applied, so the events it
//! causes are queued to the clients before WLCS's next roundtrip reaches the compositor.

use std::{
    collections::HashMap,
    os::{fd::RawFd, unix::net::UnixStream},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use syncbridge_compositor::{
    config::{CompositorConfig, FrameClockMode},
    smithay::{
        backend::input::ButtonState,
        reexports::{
            calloop::channel::{self, Channel, Event as ChannelEvent, Sender},
            wayland_server::{backend::ClientId, Resource},
        },
        utils::{Logical, Point},
    },
    Server, State,
};

/// Size of the only output, in pixels (WLCS places its windows inside it).
pub const OUTPUT_SIZE: (i32, i32) = (1024, 768);

/// How long a hook waits for the compositor to apply its command.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What WLCS asks the compositor to do.
#[derive(Debug)]
pub enum Command {
    /// Serve a new client on `stream`. `client_fd` is the fd of the other end, which
    /// WLCS keeps: it names the client in [`Command::PositionWindow`].
    NewClient {
        /// The compositor's end (owned by the compositor from now on).
        stream: UnixStream,
        /// The client's end, as a number only.
        client_fd: RawFd,
    },
    /// Move the toplevel whose surface has protocol id `surface_id` in the client
    /// named by `client_fd` to `location`.
    PositionWindow {
        /// The client's fd (see [`Command::NewClient`]).
        client_fd: RawFd,
        /// The wl_surface's object id in that client.
        surface_id: u32,
        /// Global logical coordinates of the window's top-left corner.
        location: Point<i32, Logical>,
    },
    /// Move the pointer to a global position.
    PointerMotion(Point<f64, Logical>),
    /// Move the pointer by a delta.
    PointerMotionRelative(Point<f64, Logical>),
    /// Press or release a button (Linux input code).
    PointerButton {
        /// BTN_LEFT, ...
        button: u32,
        /// Pressed or released.
        state: ButtonState,
    },
    /// A touch point goes down.
    TouchDown {
        /// The touch point.
        slot: u32,
        /// Global position.
        location: Point<f64, Logical>,
    },
    /// A touch point moves.
    TouchMotion {
        /// The touch point.
        slot: u32,
        /// Global position.
        location: Point<f64, Logical>,
    },
    /// A touch point goes up.
    TouchUp {
        /// The touch point.
        slot: u32,
    },
}

/// A command and the way to say it was applied.
#[derive(Debug)]
struct Request {
    command: Command,
    applied: mpsc::SyncSender<()>,
}

/// Sends commands to the compositor thread; cheap to clone (pointer and touch devices
/// hold one each).
#[derive(Debug, Clone)]
pub struct CommandSender(Sender<Request>);

impl CommandSender {
    /// Send `command` and wait until the compositor applied it. Returns `false` when
    /// the compositor is gone or did not answer within [`APPLY_TIMEOUT`].
    pub fn call(&self, command: Command) -> bool {
        let (applied, wait) = mpsc::sync_channel(1);
        if self.0.send(Request { command, applied }).is_err() {
            tracing::warn!("wlcs: the compositor thread is gone");
            return false;
        }
        match wait.recv_timeout(APPLY_TIMEOUT) {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(%err, "wlcs: the compositor did not apply a command");
                false
            }
        }
    }
}

/// Errors starting the compositor thread.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The thread could not be spawned.
    #[error("spawning the compositor thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The compositor failed to start (its error, as text: it lives on the thread).
    #[error("starting the compositor: {0}")]
    Compositor(String),
    /// The thread ended before saying whether the compositor started.
    #[error("the compositor thread ended before the compositor started")]
    Vanished,
}

/// The running compositor: its thread and the way to reach it.
#[derive(Debug)]
pub struct CompositorThread {
    sender: CommandSender,
    thread: JoinHandle<()>,
}

impl CompositorThread {
    /// Start the compositor; returns once it accepts commands.
    pub fn start() -> Result<Self, StartError> {
        let (sender, channel) = channel::channel();
        let (ready, started) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("syncbridge-wlcs".into())
            .spawn(move || run(channel, ready))
            .map_err(StartError::Spawn)?;
        match started.recv() {
            Ok(Ok(())) => Ok(Self {
                sender: CommandSender(sender),
                thread,
            }),
            Ok(Err(message)) => {
                let _ = thread.join();
                Err(StartError::Compositor(message))
            }
            Err(_) => {
                let _ = thread.join();
                Err(StartError::Vanished)
            }
        }
    }

    /// A sender for commands.
    pub fn sender(&self) -> &CommandSender {
        &self.sender
    }

    /// Stop the compositor and wait for its thread: closing the channel ends the event
    /// loop, the server (display, clients, outputs) is dropped on its thread.
    pub fn stop(self) {
        let Self { sender, thread } = self;
        drop(sender);
        if thread.join().is_err() {
            tracing::error!("wlcs: the compositor thread panicked");
        }
    }
}

/// The compositor WLCS tests: the in-process test configuration (headless, shm only,
/// no periodic log) with one larger output and the real timer frame clock.
fn config() -> CompositorConfig {
    let mut config = CompositorConfig::for_tests();
    config.outputs = CompositorConfig::headless_outputs(1, OUTPUT_SIZE, 60_000);
    config.frame_clock = FrameClockMode::Timer;
    config
}

/// The thread's body: start the server, report, run until the channel closes.
fn run(channel: Channel<Request>, ready: mpsc::SyncSender<Result<(), String>>) {
    let mut server = match Server::new(config()) {
        Ok(server) => server,
        Err(err) => {
            let _ = ready.send(Err(err.to_string()));
            return;
        }
    };
    // WLCS's clients take wl_touch when they bind wl_seat, before any touch device is
    // created: seat0 has touch from the start.
    server.state.enable_touch();
    // WLCS moves its pointers by deltas too: relative motion is sent for those.
    server.state.enable_relative_pointer();
    // WLCS names clients by the fd of their end of the socket pair.
    let mut clients: HashMap<RawFd, ClientId> = HashMap::new();
    let inserted = server
        .event_loop
        .handle()
        .insert_source(channel, move |event, _, state| match event {
            ChannelEvent::Msg(Request { command, applied }) => {
                apply(state, &mut clients, command);
                // The hook may have stopped waiting; nothing to do then.
                let _ = applied.send(());
            }
            ChannelEvent::Closed => state.loop_signal.stop(),
        });
    if let Err(err) = inserted {
        let _ = ready.send(Err(format!("inserting the WLCS channel: {}", err.error)));
        return;
    }
    let _ = ready.send(Ok(()));
    if let Err(err) = server.run() {
        tracing::error!(%err, "wlcs: the compositor's event loop failed");
    }
}

fn apply(state: &mut State, clients: &mut HashMap<RawFd, ClientId>, command: Command) {
    match command {
        Command::NewClient { stream, client_fd } => match state.insert_client(stream) {
            Ok(client) => {
                clients.insert(client_fd, client.id());
            }
            Err(err) => tracing::warn!(%err, "wlcs: could not add a client"),
        },
        Command::PositionWindow {
            client_fd,
            surface_id,
            location,
        } => {
            let Some(client) = clients.get(&client_fd) else {
                tracing::warn!(client_fd, "wlcs: position_window for an unknown client");
                return;
            };
            let surface = state
                .space
                .elements()
                .filter_map(|w| w.toplevel().map(|t| t.wl_surface().clone()))
                .find(|s| {
                    s.id().protocol_id() == surface_id
                        && s.client().is_some_and(|c| &c.id() == client)
                });
            let placed = surface.is_some_and(|s| state.position_window(&s, location));
            if !placed {
                tracing::warn!(surface_id, "wlcs: position_window for no mapped toplevel");
            }
        }
        Command::PointerMotion(location) => state.inject_pointer_motion(location),
        Command::PointerMotionRelative(delta) => state.inject_pointer_motion_relative(delta),
        Command::PointerButton { button, state: s } => state.inject_pointer_button(button, s),
        Command::TouchDown { slot, location } => state.inject_touch_down(slot, location),
        Command::TouchMotion { slot, location } => state.inject_touch_motion(slot, location),
        Command::TouchUp { slot } => state.inject_touch_up(slot),
    }
}
