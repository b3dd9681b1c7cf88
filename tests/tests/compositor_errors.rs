//! Bad client input ends that client with a protocol error; the server survives,
//! counts it, and keeps serving other clients.

use syncbridge_tests::client::{harness::Harness, Commit};
use wayland_client::protocol::{wl_shm, wl_subcompositor::WlSubcompositor};

fn assert_server_still_serves(f: &mut Harness) {
    let other = f.add_client();
    let window = f.create_toplevel(other);
    let buffer =
        f.client(other)
            .create_shm_buffer_filled(8, 8, wl_shm::Format::Argb8888, 0xffff_ffff);
    f.client(other).attach(window, Some(buffer));
    f.client(other).commit(window, Commit::frame_and_feedback());
    f.roundtrip(other);
    f.frame();
    f.roundtrip(other);
    assert_eq!(f.client(other).rec.surfaces[window].frames.len(), 1);
}

#[test]
fn shm_buffer_bigger_than_its_pool_is_an_error() {
    let mut f = Harness::new();
    let id = f.add_client();
    {
        let c = f.client(id);
        let fd = rustix::fs::memfd_create("tiny", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, 64).expect("ftruncate");
        let shm = c.shm.clone().expect("wl_shm");
        let pool = shm.create_pool(std::os::fd::AsFd::as_fd(&fd), 64, &c.qh, ());
        // 100x100 ARGB does not fit in 64 bytes.
        let untracked = usize::MAX;
        let _ = pool.create_buffer(0, 100, 100, 400, wl_shm::Format::Argb8888, &c.qh, untracked);
    }
    let err = f.until_protocol_error(id).expect("a protocol error");
    assert_eq!(err.object_interface, "wl_shm_pool");
    assert_eq!(f.state().client_counters.protocol_errors(), 1);
    assert_server_still_serves(&mut f);
}

#[test]
fn ack_of_unknown_configure_serial_is_an_error() {
    let mut f = Harness::new();
    let id = f.add_client();
    let window = f.create_toplevel(id);
    f.client(id).surfaces[window].xdg.ack_configure(0xdead_beef);
    let err = f.until_protocol_error(id).expect("a protocol error");
    assert_eq!(err.object_interface, "xdg_wm_base");
    assert_server_still_serves(&mut f);
}

#[test]
fn second_role_on_a_surface_is_an_error() {
    let mut f = Harness::new();
    let id = f.add_client();
    {
        let c = f.client(id);
        let surface = c.create_surface();
        let wm_base = c.wm_base.clone().expect("xdg_wm_base");
        let xdg_surface = wm_base.get_xdg_surface(&surface, &c.qh, 0);
        let _toplevel = xdg_surface.get_toplevel(&c.qh, 0);
        // A toplevel cannot also be a subsurface.
        let parent = c.create_surface();
        let subcompositor = c.bind::<WlSubcompositor>(1).expect("wl_subcompositor");
        let _sub = subcompositor.get_subsurface(&surface, &parent, &c.qh, ());
    }
    let err = f.until_protocol_error(id).expect("a protocol error");
    assert_eq!(err.object_interface, "wl_subcompositor");
    assert_server_still_serves(&mut f);
}

#[test]
fn report_lists_protocol_errors() {
    let mut f = Harness::new();
    let id = f.add_client();
    {
        let c = f.client(id);
        let surface = c.create_surface();
        let wm_base = c.wm_base.clone().expect("xdg_wm_base");
        let xdg_surface = wm_base.get_xdg_surface(&surface, &c.qh, 0);
        let _toplevel = xdg_surface.get_toplevel(&c.qh, 0);
        // A toplevel cannot also be a subsurface.
        let parent = c.create_surface();
        let subcompositor = c.bind::<WlSubcompositor>(1).expect("wl_subcompositor");
        let _sub = subcompositor.get_subsurface(&surface, &parent, &c.qh, ());
    }
    f.until_protocol_error(id).expect("a protocol error");
    let report = f.state().stats_report();
    assert_eq!(report.protocol_errors_sent, 1);
    assert_eq!(report.protocol_errors.len(), 1);
    assert!(
        report.protocol_errors[0].starts_with("wl_subcompositor"),
        "{:?}",
        report.protocol_errors
    );
    let json = serde_json::to_value(&report).expect("serializable");
    assert_eq!(json["protocol_errors_sent"], 1);
}
