//! Protocol handlers, one file per protocol family.

pub mod compositor;
pub mod dmabuf;
pub mod dmabuf_surface;
pub mod output;
pub mod pacing;
pub mod presentation;
pub mod relative_pointer;
pub mod seat;
pub mod shm;
pub mod sync;
pub mod xdg_shell;
