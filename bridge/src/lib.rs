//! syncbridge's core: implicit <-> explicit GPU synchronization, with no Wayland dependency.
