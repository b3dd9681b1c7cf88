//! `zwp_linux_buffer_release_v1`: a one-shot release listener for one commit.
//!
//! The object has no requests; its single event (`fenced_release` or `immediate_release`)
//! is sent through [`ExplicitRelease`](crate::release_target::ExplicitRelease) when the
//! bridge is done with the buffer of the commit that requested it.
//!
//! ```no_run
//! # use syncbridge_protocols::release_target::ExplicitRelease;
//! # fn demo(release: ExplicitRelease) {
//! let how = release.deliver(None); // immediate_release
//! # let _ = how;
//! # }
//! ```

use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_buffer_release_v1::{
    self, ZwpLinuxBufferReleaseV1,
};
use smithay::reexports::wayland_server::{Client, DataInit, Dispatch, DisplayHandle};

use super::ExplicitSyncState;

impl<D> Dispatch<ZwpLinuxBufferReleaseV1, (), D> for ExplicitSyncState
where
    D: Dispatch<ZwpLinuxBufferReleaseV1, ()>,
{
    fn request(
        _state: &mut D,
        _client: &Client,
        _resource: &ZwpLinuxBufferReleaseV1,
        _request: zwp_linux_buffer_release_v1::Request,
        _data: &(),
        _dh: &DisplayHandle,
        _data_init: &mut DataInit<'_, D>,
    ) {
        // The interface has no requests.
    }
}
