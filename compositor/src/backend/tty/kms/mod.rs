//! KMS: the device, our atomic requests, direct-scanout planes (with their imported GEM
//! handles), overlay and cursor planes, and outputs.

pub mod atomic;
pub mod cursor;
pub mod device;
pub mod failed_commit;
pub mod gem;
pub mod in_fence;
pub mod in_formats;
pub mod overlay;
pub mod planes;
pub mod scanout;
