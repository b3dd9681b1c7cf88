//! Harness of the VM's tty (KMS) suites: [`process`] runs syncbridge on a card under
//! `seatd-launch`; [`display`] reads back what the card shows and draws client buffers.

pub mod display;
pub mod process;
pub mod without_private_dmabuf;

pub use display::*;
pub use process::*;
