//! Harness of the VM's tty (KMS) suites: [`process`] runs syncbridge on a card under
//! `seatd-launch`; [`display`] reads back what the card shows and draws client buffers;
//! [`planes`] lists what each plane of the output's CRTC shows, and where.

pub mod display;
pub mod planes;
pub mod process;
pub mod without_private_dmabuf;

pub use display::*;
pub use planes::*;
pub use process::*;
