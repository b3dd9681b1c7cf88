//! A client that disconnects leaves nothing behind in the compositor.

use syncbridge_tests::client::{harness::Harness, Commit};
use wayland_client::protocol::wl_shm::Format::Argb8888;

#[test]
fn disconnect_unmaps_windows_and_destroys_surfaces() {
    let mut f = Harness::new();
    let id = f.add_client();
    let mut buffers = Vec::new();
    for _ in 0..3 {
        let window = f.create_toplevel(id);
        let buffer = f
            .client(id)
            .create_shm_buffer_filled(16, 16, Argb8888, 0xff80_8080);
        f.client(id).attach(window, Some(buffer));
        f.client(id).commit(window, Commit::frame_and_feedback());
        buffers.push(buffer);
    }
    f.roundtrip(id);
    f.frame();
    f.roundtrip(id);
    assert_eq!(f.state().space.elements().count(), 3);

    f.disconnect(id);
    f.frame();

    let state = f.state();
    assert_eq!(state.space.elements().count(), 0, "windows unmapped");
    assert_eq!(state.stats.surfaces_created, 3);
    assert_eq!(state.stats.surfaces_destroyed, 3, "surfaces destroyed");
    assert_eq!(state.client_counters.connected(), 1);
    assert_eq!(state.client_counters.disconnected(), 1);
    assert_eq!(state.client_counters.protocol_errors(), 0);
    // The fence bridge holds nothing for the dead client.
    let sync = state.sync_bridge.stats();
    assert_eq!(sync.tracked_buffers, 0, "{sync:?}");
    assert_eq!(sync.pending_waits, 0);
    assert_eq!(sync.fences_held, 0);
    assert_eq!(sync.fds_held, 0);
    // The output still renders (background only now).
    let presented = state.stats.outputs[0].frames_presented;
    assert!(presented >= 2, "frames presented: {presented}");
}

#[test]
fn disconnect_with_pending_callbacks_is_harmless() {
    let mut f = Harness::new();
    let a = f.add_client();
    let b = f.add_client();
    let wa = f.create_toplevel(a);
    let wb = f.create_toplevel(b);
    for (id, w) in [(a, wa), (b, wb)] {
        let buffer = f
            .client(id)
            .create_shm_buffer_filled(16, 16, Argb8888, 0xff00_00ff);
        f.client(id).attach(w, Some(buffer));
        f.client(id).commit(w, Commit::frame_and_feedback());
        f.roundtrip(id);
    }
    // a disconnects with a frame callback and presentation feedback pending.
    f.disconnect(a);
    f.frame();
    f.roundtrip(b);
    assert_eq!(f.client(b).rec.surfaces[wb].frames.len(), 1);
    assert_eq!(f.state().space.elements().count(), 1);
}
