//! The protocols WLCS may expect, with the versions the compositor advertises.
//!
//! WLCS binds a global whenever the compositor has it; the list only decides what a
//! missing global means: a test that needs a global absent from this list is skipped
//! ("expectedly not supported"), one absent although listed fails. So the list is the
//! compositor's globals as they are with the configuration of
//! [`compositor_thread`](crate::compositor_thread) (no DRM device, hence no
//! linux-dmabuf and no syncobj global); a test below compares the two.

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
