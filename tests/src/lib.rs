//! Shared helpers for syncbridge's integration tests.
