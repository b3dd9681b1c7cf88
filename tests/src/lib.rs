//! Shared helpers for syncbridge's integration tests.

pub mod fixture;
pub mod kernel;
