//! The protocols WLCS may expect, with the versions the compositor advertises.
//!
//! WLCS binds a global whenever the compositor has it; the list only decides what a
//! missing global means: a test that needs a global absent from this list is skipped
//! ("expectedly not supported"), one absent although listed fails. So the list is the
//! compositor's globals as they are with the configuration of
//! [`compositor_thread`](crate::compositor_thread) (no DRM device, hence no
//! linux-dmabuf and no syncobj global); the tests below check the C list against
//! [`GLOBALS`] and [`GLOBALS`] against what a client of the running compositor sees.

use wlcs::{
    extension_list,
    ffi_display_server_api::{WlcsExtensionDescriptor, WlcsIntegrationDescriptor},
};

/// Interface name and version of every global the compositor advertises under WLCS.
pub const GLOBALS: &[(&str, u32)] = &[
    ("wl_compositor", 6),
    ("wl_subcompositor", 1),
    ("wl_shm", 2),
    ("wl_seat", 9),
    ("wl_output", 4),
    ("zxdg_output_manager_v1", 3),
    ("xdg_wm_base", 6),
    ("wp_presentation", 2),
    ("wp_viewporter", 1),
    ("wp_fifo_manager_v1", 1),
    ("wp_commit_timing_manager_v1", 1),
    ("zwp_linux_explicit_synchronization_v1", 2),
    ("zwp_relative_pointer_manager_v1", 1),
];

/// [`GLOBALS`] in WLCS's C layout (the macro needs literals, hence the repetition;
/// a test checks both agree).
static SUPPORTED: &[WlcsExtensionDescriptor] = extension_list!(
    ("wl_compositor", 6),
    ("wl_subcompositor", 1),
    ("wl_shm", 2),
    ("wl_seat", 9),
    ("wl_output", 4),
    ("zxdg_output_manager_v1", 3),
    ("xdg_wm_base", 6),
    ("wp_presentation", 2),
    ("wp_viewporter", 1),
    ("wp_fifo_manager_v1", 1),
    ("wp_commit_timing_manager_v1", 1),
    ("zwp_linux_explicit_synchronization_v1", 2),
    ("zwp_relative_pointer_manager_v1", 1),
);

/// What `get_descriptor` returns.
pub static DESCRIPTOR: WlcsIntegrationDescriptor = WlcsIntegrationDescriptor {
    version: 1,
    num_extensions: SUPPORTED.len(),
    supported_extensions: SUPPORTED.as_ptr(),
};

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    #[test]
    fn the_descriptor_lists_the_globals() {
        let listed: Vec<(String, u32)> = SUPPORTED
            .iter()
            .map(|d| {
                // SAFETY: extension_list! builds each name from a string literal with a
                // trailing NUL; it is static and never freed.
                let name = unsafe { CStr::from_ptr(d.name) };
                (name.to_string_lossy().into_owned(), d.version)
            })
            .collect();
        let globals: Vec<(String, u32)> =
            GLOBALS.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        assert_eq!(listed, globals);
        assert_eq!(DESCRIPTOR.num_extensions, GLOBALS.len());
    }
}

#[cfg(test)]
mod compositor_globals {
    use std::os::{fd::AsRawFd, unix::net::UnixStream};

    use wayland_client::{
        globals::{registry_queue_init, GlobalListContents},
        protocol::wl_registry::WlRegistry,
        Connection, Dispatch, QueueHandle,
    };

    use super::GLOBALS;
    use crate::compositor_thread::{Command, CompositorThread};

    struct Registry;

    impl Dispatch<WlRegistry, GlobalListContents> for Registry {
        fn event(
            _: &mut Self,
            _: &WlRegistry,
            _: <WlRegistry as wayland_client::Proxy>::Event,
            _: &GlobalListContents,
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
        }
    }

    #[test]
    fn the_compositor_advertises_exactly_the_listed_globals() {
        let compositor = CompositorThread::start().expect("the compositor starts");
        let (client, server) = UnixStream::pair().expect("socketpair");
        let client_fd = client.as_raw_fd();
        assert!(compositor.sender().call(Command::NewClient {
            stream: server,
            client_fd
        }));
        let conn = Connection::from_socket(client).expect("a connection");
        let (globals, _queue) = registry_queue_init::<Registry>(&conn).expect("the registry");
        let mut advertised: Vec<(String, u32)> = globals
            .contents()
            .clone_list()
            .into_iter()
            .map(|g| (g.interface, g.version))
            .collect();
        advertised.sort();
        let mut listed: Vec<(String, u32)> =
            GLOBALS.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        listed.sort();
        drop(conn);
        compositor.stop();
        assert_eq!(advertised, listed);
    }
}
