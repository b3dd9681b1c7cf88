//! Shared helpers for syncbridge's integration tests.

pub mod kernel;
