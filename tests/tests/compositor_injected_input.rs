//! Input and window placement from an embedder (what the WLCS integration drives):
//! `State::position_window`, `State::inject_pointer_motion` and the activation of a
//! toplevel when it is first mapped.

use syncbridge_compositor::smithay::utils::Point;
use syncbridge_tests::client::{harness::Harness, input::PointerEvent, Commit, SurfaceId};
use wayland_client::protocol::wl_seat::WlSeat;

/// A client with a seat and a mapped 64x64 toplevel.
fn mapped_window(h: &mut Harness) -> (usize, SurfaceId) {
    let c = h.add_client();
    let _seat: WlSeat = h
        .client(c)
        .bind(7)
        .expect("the compositor announces wl_seat");
    h.roundtrip(c);
    h.roundtrip(c);
    let s = h.create_toplevel(c);
    let buffer = h.client(c).create_shm_buffer(64, 64);
    h.client(c).attach(s, Some(buffer));
    h.client(c).commit(s, Commit::default());
    h.roundtrip(c);
    (c, s)
}

#[test]
fn first_mapping_activates_the_toplevel_with_a_configure() {
    let mut h = Harness::new();
    let (c, s) = mapped_window(&mut h);
    // The initial configure, then the one that confirms the mapped window's state.
    assert_eq!(
        h.client(c).rec.surfaces[s].configures.len(),
        2,
        "configures after the first commit with a buffer"
    );
    // Later commits map nothing new.
    h.client(c).commit(s, Commit::default());
    h.roundtrip(c);
    assert_eq!(h.client(c).rec.surfaces[s].configures.len(), 2);
}

#[test]
fn injected_pointer_enters_a_positioned_window_at_surface_local_coordinates() {
    let mut h = Harness::new();
    let (c, s) = mapped_window(&mut h);
    let surface = h
        .state()
        .space
        .elements()
        .find_map(|w| w.toplevel().map(|t| t.wl_surface().clone()))
        .expect("the window is mapped");
    assert!(h.state().position_window(&surface, Point::from((100, 50))));

    // Where the window was (the first cascade slot), nothing is under the pointer now.
    h.state().inject_pointer_motion(Point::from((10.0, 20.0)));
    h.roundtrip(c);
    assert_eq!(h.client(c).rec.input.pointer_focus(), None);

    h.state().inject_pointer_motion(Point::from((110.0, 70.0)));
    h.roundtrip(c);
    let wl = h.client(c).surfaces[s].wl.clone();
    let enter = h
        .client(c)
        .rec
        .input
        .pointer_events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            PointerEvent::Enter { surface, x, y } if surface == &wl => Some((*x, *y)),
            _ => None,
        });
    assert_eq!(enter, Some((10.0, 20.0)));
}

#[test]
fn a_window_moved_under_a_still_pointer_gets_the_pointer() {
    let mut h = Harness::new();
    let (c, s) = mapped_window(&mut h);
    let surface = h
        .state()
        .space
        .elements()
        .find_map(|w| w.toplevel().map(|t| t.wl_surface().clone()))
        .expect("the window is mapped");
    h.state().inject_pointer_motion(Point::from((310.0, 220.0)));
    h.roundtrip(c);
    assert_eq!(h.client(c).rec.input.pointer_focus(), None);

    // No pointer motion: the window comes to the pointer.
    assert!(h.state().position_window(&surface, Point::from((300, 200))));
    h.roundtrip(c);
    let wl = h.client(c).surfaces[s].wl.clone();
    assert_eq!(h.client(c).rec.input.pointer_focus(), Some(&wl));
    let last_enter = h
        .client(c)
        .rec
        .input
        .pointer_events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            PointerEvent::Enter { x, y, .. } => Some((*x, *y)),
            _ => None,
        });
    assert_eq!(last_enter, Some((10.0, 20.0)));
}
