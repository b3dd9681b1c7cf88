//! KMS: the device, our atomic requests, direct-scanout planes, and outputs.

pub mod atomic;
pub mod device;
pub mod planes;
pub mod scanout;
