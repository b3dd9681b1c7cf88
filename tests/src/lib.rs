//! Shared helpers for syncbridge's integration tests.

pub mod bench_scene;
pub mod client;
pub mod compositor_bin;
pub mod example_bin;
pub mod fixture;
pub mod kernel;
pub mod screenshot;
pub mod tty;
