//! Wayland protocols syncbridge implements itself, on bridge fence types, and the facade a
//! smithay compositor adopts.
//!
//! * [`drm_syncobj`]: linux-drm-syncobj-v1, with release points that carry the renderer's or
//!   display's fence;
//! * [`explicit_sync`]: zwp_linux_explicit_synchronization_v1 (acquire fences,
//!   `fenced_release`/`immediate_release`);
//! * [`sync_bridge`]: [`SyncBridge`], which owns both globals, gates commits on acquire
//!   fences (implicit dma-buf fences included) and delivers release fences;
//! * [`commit_check`]: the commit-time protocol rules as pure functions;
//! * [`release_target`]: deliver-once release handles; [`gauge`]: held fence/fd counts.
//!
//! ```no_run
//! # use syncbridge_protocols::{BridgeConfig, SyncBridge, SyncBridgeHandler, SyncBridgeDispatch};
//! # fn demo<D: SyncBridgeHandler + SyncBridgeDispatch>(handle: smithay::reexports::calloop::LoopHandle<'static, D>,
//! #     dh: &smithay::reexports::wayland_server::DisplayHandle) -> Result<(), Box<dyn std::error::Error>> {
//! let mut bridge = SyncBridge::<D>::new(handle, BridgeConfig::detect(None)?);
//! bridge.create_globals(dh);
//! println!("{:?}", bridge.stats());
//! # Ok(()) }
//! ```

pub mod commit_check;
pub mod drm_syncobj;
pub mod explicit_sync;
pub mod gauge;
pub mod release_target;
mod surface_state;
pub mod sync_bridge;
pub mod timeline;

/// The kernel layer (sync_file, dma-buf fences, syncobj timelines, KMS fence helpers),
/// re-exported so a compositor needs one syncbridge dependency: the types `frame_rendered`,
/// `scanout_committed` and `BridgeConfig::with_syncobj_device` take come from here.
pub use syncbridge_bridge as bridge;

pub use sync_bridge::release::HeldReads;
pub use sync_bridge::{
    BridgeConfig, BufferId, ImplicitWait, Limits, SyncBridge, SyncBridgeDispatch,
    SyncBridgeHandler, SyncStats,
};

/// Crates the macros name, so compositors need not depend on them directly.
#[doc(hidden)]
pub mod __reexports {
    pub use smithay::reexports::wayland_protocols;
    pub use smithay::reexports::wayland_server;
}
