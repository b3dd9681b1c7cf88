//! The tty backend's input path on a real kernel: uinput devices
//! ([`syncbridge_tests::kernel::uinput`]) -> evdev -> udev -> libinput (opened through the
//! libseat session of `seatd-launch`) -> the smithay seat -> a real Wayland client's
//! `wl_pointer` and `wl_keyboard`. Runs inside the VM:
//! `cargo xtask test --vm-only --vm-filter vm_tty_input`.
//!
//! Each test starts `syncbridge --backend tty --drm-device <vkms card>`, waits for the
//! compositor to log that libinput added the test's devices (at start-up or hot-added),
//! maps output-sized toplevels and checks what the client receives. libinput accelerates
//! relative motion, so the tests move far past an edge (the compositor clamps the pointer
//! to the output) to reach a known place, and otherwise only rely on "small" or "large".

use std::time::{Duration, Instant};

use syncbridge_tests::client::input::{KeyboardEvent, PointerEvent};
use syncbridge_tests::client::{Commit, SurfaceId, TestClient};
use syncbridge_tests::kernel::uinput::{KeyCode, VirtualKeyboard, VirtualPointer};
use syncbridge_tests::tty::*;
use wayland_client::protocol::{wl_seat, wl_shm};

/// `BTN_LEFT` as `wl_pointer.button` reports it.
const BTN_LEFT: u32 = 0x110;
/// The Control modifier bit of xkb's default keymap.
const CONTROL_MASK: u32 = 0x4;
/// Where windows cascade (the compositor's `CASCADE_STEP`): the second window sits at
/// (32, 32), so the output's top-left 32x32 corner shows only the first.
const CASCADE: f64 = 32.0;

/// Waits until the compositor logged libinput removing the device `name`.
fn wait_device_removed(comp: &Compositor, name: &str) {
    let start = Instant::now();
    loop {
        let log = comp.log_text();
        if log.lines().any(|l| {
            l.contains("input device removed") && l.trim_end().ends_with(&format!("name={name}"))
        }) {
            return;
        }
        assert!(
            start.elapsed() < LONG,
            "libinput did not remove {name}; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client with the seat bound; asserts the seat offers a keyboard and a pointer.
fn seat_client(comp: &Compositor) -> TestClient {
    let mut c = comp.client();
    c.bind_seat();
    let caps = c.rec.input.capabilities.expect("wl_seat.capabilities");
    let want = wl_seat::Capability::Keyboard | wl_seat::Capability::Pointer;
    assert_eq!(
        caps & want.bits(),
        want.bits(),
        "seat0 has a keyboard and a pointer (caps {caps:#x})"
    );
    assert!(
        c.rec.input.keyboard.is_some() && c.rec.input.pointer.is_some(),
        "the client got its wl_keyboard and wl_pointer"
    );
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.input.keymap),
        "wl_keyboard.keymap arrives"
    );
    c
}

/// A toplevel showing an output-sized shm buffer of `colour`, presented.
fn map_covering(c: &mut TestClient, size: (u32, u32), colour: u32) -> SurfaceId {
    let s = configured_surface(c);
    let (w, h) = (
        i32::try_from(size.0).expect("width"),
        i32::try_from(size.1).expect("height"),
    );
    let b = c.create_shm_buffer_filled(w, h, wl_shm::Format::Xrgb8888, colour);
    c.attach(s, Some(b));
    let commit = c.commit(s, Commit::feedback());
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.outcome(commit).is_some()),
        "the covering buffer of surface {s} is presented"
    );
    s
}

/// The output size VKMS shows (its preferred mode).
fn output_size(card: &std::path::Path) -> (u32, u32) {
    mode_size(&open_display(card))
}

/// Moves far up and left: the compositor clamps the pointer to the output's (0, 0).
fn pointer_to_origin(p: &mut VirtualPointer) {
    for _ in 0..3 {
        p.move_by(-2000, -2000).expect("uinput motion");
    }
}

/// The last `wl_pointer.enter` on `surface`, as (event number, x, y).
fn last_enter(c: &TestClient, s: SurfaceId) -> Option<(u64, f64, f64)> {
    let wl = &c.surfaces[s].wl;
    c.rec
        .input
        .pointer_events
        .iter()
        .rev()
        .find_map(|(at, e)| match e {
            PointerEvent::Enter { surface, x, y } if surface == wl => Some((*at, *x, *y)),
            _ => None,
        })
}

/// Waits until the pointer is on `s`.
fn wait_pointer_on(c: &mut TestClient, s: SurfaceId, what: &str) {
    let wl = c.surfaces[s].wl.clone();
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.input.pointer_focus() == Some(&wl)),
        "{what}: the pointer enters surface {s}; pointer events {:?}",
        c.rec.input.pointer_events
    );
}

/// Waits until the keyboard focus is on `s`.
fn wait_keyboard_on(c: &mut TestClient, s: SurfaceId, what: &str) {
    let wl = c.surfaces[s].wl.clone();
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.input.keyboard_focus() == Some(&wl)),
        "{what}: keyboard focus on surface {s}; keyboard events {:?}",
        c.rec.input.keys
    );
}

/// Taps `keys` one after the other and asserts the client receives exactly their
/// press/release pairs, in order, with the evdev codes as sent.
fn type_and_expect(c: &mut TestClient, kbd: &mut VirtualKeyboard, keys: &[KeyCode]) {
    let mark = c.rec.seq;
    for &k in keys {
        kbd.tap(k).expect("uinput key");
    }
    let want: Vec<(u32, bool)> = keys
        .iter()
        .flat_map(|k| [(u32::from(k.code()), true), (u32::from(k.code()), false)])
        .collect();
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.input.keys_after(mark).len() >= want.len()),
        "wl_keyboard.key for {keys:?}; keyboard events {:?}",
        c.rec.input.keys
    );
    assert_eq!(c.rec.input.keys_after(mark), want, "keys as sent, in order");
}

/// Clicks `BTN_LEFT` and asserts the client receives the press and the release.
fn click_and_expect(c: &mut TestClient, ptr: &mut VirtualPointer) -> u64 {
    let mark = c.rec.seq;
    ptr.click(KeyCode::BTN_LEFT).expect("uinput click");
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.input.buttons_after(mark).len() >= 2),
        "wl_pointer.button press and release; pointer events {:?}",
        c.rec.input.pointer_events
    );
    assert_eq!(
        c.rec.input.buttons_after(mark),
        vec![(BTN_LEFT, true), (BTN_LEFT, false)],
        "BTN_LEFT pressed then released"
    );
    mark
}

#[test]
fn vkms_uinput_pointer_and_keyboard_reach_the_client_and_focus_follows_click() {
    let card = card_of("vkms");
    // Created before the compositor: libinput finds them when it enumerates udev.
    let mut kbd = VirtualKeyboard::create("syncbridge-test-kbd-startup").expect("uinput keyboard");
    let mut ptr = VirtualPointer::create("syncbridge-test-ptr-startup").expect("uinput pointer");
    let comp = Compositor::start("input", &card, &[]);
    comp.wait_device_added(kbd.name());
    comp.wait_device_added(ptr.name());
    let size = output_size(&card);

    let mut c = seat_client(&comp);
    // A at (0, 0), then B at (32, 32) on top: each takes keyboard focus when created.
    let a = map_covering(&mut c, size, 0x00ff_0000);
    let b = map_covering(&mut c, size, 0x0000_ff00);
    wait_keyboard_on(&mut c, b, "the newest window");

    // To the top-left corner: only A is there.
    pointer_to_origin(&mut ptr);
    wait_pointer_on(&mut c, a, "pointer at the output's origin");
    let (_, x, y) = last_enter(&c, a).expect("enter on A");
    assert!(
        (0.0..CASCADE).contains(&x) && (0.0..CASCADE).contains(&y),
        "entered A at its top-left corner, got ({x}, {y})"
    );

    // A small move stays on A and arrives as wl_pointer.motion.
    let mark = c.rec.seq;
    ptr.move_by(4, 4).expect("uinput motion");
    assert!(
        c.blocking_dispatch_until(LONG, |r| r
            .input
            .pointer_events
            .iter()
            .any(|(at, e)| *at > mark && matches!(e, PointerEvent::Motion { .. }))),
        "wl_pointer.motion after a small move; pointer events {:?}",
        c.rec.input.pointer_events
    );
    let motion = c
        .rec
        .input
        .pointer_events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            PointerEvent::Motion { x, y } => Some((*x, *y)),
            _ => None,
        })
        .expect("a motion");
    assert!(
        motion.0 > 0.0 && motion.1 > 0.0 && motion.0 < CASCADE && motion.1 < CASCADE,
        "moved down-right but stayed on A's corner: {motion:?}"
    );
    assert_eq!(
        c.rec.input.pointer_focus(),
        Some(&c.surfaces[a].wl),
        "still on A"
    );

    // A large move lands on B (it covers everything right of and below (32, 32)).
    ptr.move_by(300, 300).expect("uinput motion");
    ptr.move_by(300, 300).expect("uinput motion");
    wait_pointer_on(&mut c, b, "after a large move down-right");
    assert!(
        c.rec.input.pointer_events.iter().any(
            |(_, e)| matches!(e, PointerEvent::Leave { surface } if *surface == c.surfaces[a].wl)
        ),
        "A got wl_pointer.leave"
    );

    // Hovering is not focusing: keys still go to B.
    assert_eq!(c.rec.input.keyboard_focus(), Some(&c.surfaces[b].wl));
    type_and_expect(&mut c, &mut kbd, &[KeyCode::KEY_B]);

    // Back to A's corner and click: focus follows the click, before the button arrives.
    pointer_to_origin(&mut ptr);
    wait_pointer_on(&mut c, a, "back at the origin");
    let before_click = click_and_expect(&mut c, &mut ptr);
    wait_keyboard_on(&mut c, a, "after clicking A");
    let wl_a = c.surfaces[a].wl.clone();
    let enter_at = c
        .rec
        .input
        .keys
        .iter()
        .find_map(|(at, e)| match e {
            KeyboardEvent::Enter { surface } if *at > before_click && *surface == wl_a => Some(*at),
            _ => None,
        })
        .expect("wl_keyboard.enter on A after the click");
    let press_at = c
        .rec
        .input
        .pointer_events
        .iter()
        .find_map(|(at, e)| match e {
            PointerEvent::Button { pressed: true, .. } if *at > before_click => Some(*at),
            _ => None,
        })
        .expect("the press");
    assert!(
        enter_at < press_at,
        "keyboard focus moves on the press (enter #{enter_at}, press #{press_at})"
    );

    // Keys now reach A, with the evdev codes as sent (KEY_A = 30).
    type_and_expect(&mut c, &mut kbd, &[KeyCode::KEY_A]);

    // Ctrl: the modifiers follow the left control key.
    let mark = c.rec.seq;
    kbd.press(KeyCode::KEY_LEFTCTRL).expect("uinput key");
    kbd.tap(KeyCode::KEY_C).expect("uinput key");
    kbd.release(KeyCode::KEY_LEFTCTRL).expect("uinput key");
    assert!(
        c.blocking_dispatch_until(LONG, |r| r.input.keys_after(mark).len() >= 4),
        "Ctrl+C keys; keyboard events {:?}",
        c.rec.input.keys
    );
    assert_eq!(
        c.rec.input.keys_after(mark),
        vec![(29, true), (46, true), (46, false), (29, false)],
        "KEY_LEFTCTRL, KEY_C as sent"
    );
    let mods: Vec<u32> = c
        .rec
        .input
        .keys
        .iter()
        .filter(|(at, _)| *at > mark)
        .filter_map(|(_, e)| match e {
            KeyboardEvent::Modifiers { depressed } => Some(*depressed),
            _ => None,
        })
        .collect();
    assert!(
        mods.first().is_some_and(|m| m & CONTROL_MASK != 0),
        "wl_keyboard.modifiers with Control down after KEY_LEFTCTRL: {mods:?}"
    );
    assert!(
        mods.last().is_some_and(|m| m & CONTROL_MASK == 0),
        "Control up again after its release: {mods:?}"
    );
    assert_eq!(
        c.rec.input.keyboard_focus(),
        Some(&wl_a),
        "focus stayed on A"
    );

    drop(c);
    let _stats = comp.stop();
}

#[test]
fn vkms_uinput_devices_hot_added_while_running_deliver_input() {
    let card = card_of("vkms");
    let comp = Compositor::start("input-hotplug", &card, &[]);
    let size = output_size(&card);
    let mut c = seat_client(&comp);
    let s = map_covering(&mut c, size, 0x0000_00ff);
    wait_keyboard_on(&mut c, s, "the only window");

    // Added while the compositor runs: udev reports them, libinput adds them.
    let mut kbd = VirtualKeyboard::create("syncbridge-test-kbd-hotplug").expect("uinput keyboard");
    let mut ptr = VirtualPointer::create("syncbridge-test-ptr-hotplug").expect("uinput pointer");
    comp.wait_device_added(kbd.name());
    comp.wait_device_added(ptr.name());

    pointer_to_origin(&mut ptr);
    wait_pointer_on(&mut c, s, "hot-added pointer");
    click_and_expect(&mut c, &mut ptr);
    type_and_expect(&mut c, &mut kbd, &[KeyCode::KEY_A, KeyCode::KEY_Z]);

    // Unplugged, then another keyboard plugged in: that one types too.
    let gone = kbd.name().to_string();
    drop(kbd);
    wait_device_removed(&comp, &gone);
    let mut kbd2 =
        VirtualKeyboard::create("syncbridge-test-kbd-hotplug2").expect("second uinput keyboard");
    comp.wait_device_added(kbd2.name());
    type_and_expect(&mut c, &mut kbd2, &[KeyCode::KEY_Q]);
    assert_eq!(c.rec.input.keyboard_focus(), Some(&c.surfaces[s].wl));

    drop(c);
    let _stats = comp.stop();
}
