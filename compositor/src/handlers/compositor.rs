//! wl_compositor, wl_subcompositor and wl_buffer lifetime.

use smithay::{
    backend::renderer::utils::on_commit_buffer_handler,
    delegate_compositor,
    reexports::wayland_server::{
        protocol::{wl_buffer::WlBuffer, wl_surface::WlSurface},
        Client,
    },
    wayland::{
        buffer::BufferHandler,
        compositor::{
            get_parent, is_sync_subsurface, CompositorClientState, CompositorHandler,
            CompositorState,
        },
    },
};

use crate::state::{ClientState, State};

impl CompositorHandler for State {
    fn compositor_state(&mut self) -> &mut CompositorState {
        &mut self.protocols.compositor
    }

    fn client_compositor_state<'a>(&self, client: &'a Client) -> &'a CompositorClientState {
        ClientState::compositor_state_of(client)
    }

    fn new_surface(&mut self, surface: &WlSurface) {
        self.stats.surfaces_created += 1;
        // Pre-commit hook + blockers: no commit applies before its acquire fence signalled
        // (pixman's DMA_BUF_IOCTL_SYNC would otherwise block the whole compositor).
        self.sync_bridge.track_surface(surface);
    }

    fn commit(&mut self, surface: &WlSurface) {
        self.stats.count_commit();
        on_commit_buffer_handler::<Self>(surface);

        if !is_sync_subsurface(surface) {
            let mut root = surface.clone();
            while let Some(parent) = get_parent(&root) {
                root = parent;
            }
            if let Some(window) = self.window_for(&root) {
                window.on_commit();
            }
        }

        super::xdg_shell::handle_commit(&mut self.popups, &self.space, surface);
        self.activate_on_first_map(surface);
        self.pointer_focus_stale = true;
        // Also reached when a commit held back by its acquire fence is applied.
        self.request_redraw();
    }

    fn destroyed(&mut self, _surface: &WlSurface) {
        self.stats.surfaces_destroyed += 1;
    }
}

impl BufferHandler for State {
    fn buffer_destroyed(&mut self, buffer: &WlBuffer) {
        self.sync_bridge.buffer_destroyed(buffer);
    }
}

delegate_compositor!(State);
