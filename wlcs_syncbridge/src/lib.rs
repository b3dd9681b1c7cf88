//! The syncbridge reference compositor under WLCS, the Wayland conformance suite.
//!
//! This crate builds `libwlcs_syncbridge.so`, the module that the `wlcs` runner (Debian
//! package `wlcs`) loads:
//!
//! ```sh
//! /usr/lib/x86_64-linux-gnu/wlcs/wlcs target/debug/libwlcs_syncbridge.so --gtest_brief=1
//! ```
//!
//! `cargo xtask test` runs it over the whole suite and compares the failures with
//! `wlcs_syncbridge/expected-failures.txt` (see the README).
//!
//! - [`extensions`]: the protocols the compositor advertises, as WLCS's descriptor;
//! - [`hooks`]: the WLCS server hooks (start/stop, client sockets, window placement,
//!   pointer and touch devices);
//! - [`compositor_thread`]: the compositor running on its own thread, and the commands
//!   the hooks send it.
//!
//! Logging goes to stderr when `SYNCBRIDGE_WLCS_LOG` holds a tracing filter (`debug`,
//! `syncbridge_compositor=trace`, ...); it is off otherwise.

pub mod compositor_thread;
pub mod extensions;
pub mod hooks;

use wlcs::{
    ffi_display_server_api::WlcsServerIntegration, ffi_wrappers::wlcs_server,
    wlcs_server_integration,
};

wlcs_server_integration!(SyncbridgeWlcs);

pub use hooks::SyncbridgeWlcs;
