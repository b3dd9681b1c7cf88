//! The syncbridge reference compositor.
//!
//! A small smithay compositor whose every commit goes through the syncbridge fence
//! bridge. The binary (`syncbridge`) is a thin wrapper around [`Server`]; the
//! in-process test fixture drives the same [`Server`] with a manual frame clock.
//!
//! Layout:
//! - [`config`]: what to run (outputs, frame clock, render device), independent of the CLI;
//! - [`cli`]: the `syncbridge` command line, turned into a [`config::CompositorConfig`];
//! - [`server`]: event loop + display + [`State`], listening socket, child command;
//! - [`state`]: the compositor state and per-client data;
//! - [`handlers`]: one file per protocol family;
//! - [`backend`]: where frames go (`headless`, `nested` in a window, `tty` on KMS);
//! - [`screenshot`]: PNG captures of an output (`--screenshot`, SIGUSR1);
//! - [`render`]: backend-independent frame composition and post-frame protocol work;
//! - [`stats`]: counters, the periodic log line and the `--stats-json` document;
//! - [`injected_input`], [`window_position`]: pointer/touch input and window placement
//!   from an embedder (the WLCS conformance integration);
//! - [`window_activation`]: the active window (keyboard focus, xdg `activated`);
//! - [`pointer_refresh`]: the pointer focus follows surfaces that move under it.

pub mod backend;
pub mod child;
pub mod cli;
pub mod config;
pub mod device;
pub mod fd_limit;
pub mod frame_clock;
pub mod handlers;
pub mod injected_input;
pub mod listener;
pub mod pointer_refresh;
pub mod render;
pub mod render_wait;
pub mod screenshot;
pub mod server;
pub mod state;
pub mod stats;
pub mod timeline;
pub mod window_activation;
pub mod window_lookup;
pub mod window_position;
pub mod window_states;

pub use config::CompositorConfig;
pub use server::Server;
pub use state::{ClientState, State};

/// Re-exported so tests and embedders use exactly the versions the compositor uses.
pub use smithay;
