//! Wayland protocols syncbridge implements itself, on bridge fence types.
