//! KMS: the device, our atomic requests, direct-scanout planes (with their imported GEM
//! handles), and outputs.

pub mod atomic;
pub mod device;
pub mod gem;
pub mod planes;
pub mod scanout;
