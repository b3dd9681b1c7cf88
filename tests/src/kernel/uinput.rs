//! Virtual input devices through the kernel's uinput (`/dev/uinput`), for the tty
//! suites that drive the compositor's libinput path: a keyboard ([`VirtualKeyboard`])
//! and a relative pointer ([`VirtualPointer`]). Built on the `evdev` crate's
//! `uinput::VirtualDevice`; every key, motion and button is followed by `SYN_REPORT`.
//!
//! The kernel creates `/dev/input/eventN` for each device, systemd-udevd tags it
//! (`ID_INPUT_KEYBOARD`, `ID_INPUT_MOUSE`) and libinput picks it up from udev, at start-up
//! or hot-added. Dropping a device closes its uinput fd, which removes it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use evdev::uinput::VirtualDevice;
use evdev::{AttributeSet, BusType, EventType, InputEvent, InputId, RelativeAxisCode};

pub use evdev::KeyCode;

/// The uinput control node.
pub const UINPUT: &str = "/dev/uinput";

/// Makes sure `/dev/uinput` exists: loads the `uinput` module (Debian builds it as a
/// module) when the node is missing and waits (bounded) for the node to appear.
pub fn ensure_uinput() -> io::Result<()> {
    let node = Path::new(UINPUT);
    if node.exists() {
        return Ok(());
    }
    let status = Command::new("modprobe").arg("uinput").status()?;
    if !status.success() {
        return Err(io::Error::other(format!("modprobe uinput: {status}")));
    }
    let start = Instant::now();
    while !node.exists() {
        if start.elapsed() > Duration::from_secs(5) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "uinput loaded but /dev/uinput did not appear",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The highest key code the keyboard announces (`KEY_MICMUTE`): every code from
/// `KEY_ESC` up to it, so that udev's input_id tags it `ID_INPUT_KEYBOARD` (it wants all of
/// `KEY_ESC`..`KEY_D`) and libinput gives it the keyboard capability.
const LAST_KEYBOARD_KEY: u16 = 248;

/// Product ids: one per kind, so the devices are easy to tell apart in `evtest`.
const PRODUCT_KEYBOARD: u16 = 0x5301;
const PRODUCT_POINTER: u16 = 0x5302;
/// A vendor id nobody uses for real hardware here.
const VENDOR: u16 = 0x5359;

fn builder_id(product: u16) -> InputId {
    InputId::new(BusType::BUS_VIRTUAL, VENDOR, product, 1)
}

/// The `/sys/devices/virtual/input/inputN` directory of a device, if the kernel says.
fn syspath(dev: &mut VirtualDevice) -> Option<PathBuf> {
    dev.get_syspath().ok()
}

/// A uinput keyboard with every key from `KEY_ESC` to `KEY_MICMUTE` (the letters,
/// `KEY_LEFTCTRL`, `KEY_LEFTALT`, `KEY_LEFTSHIFT`, the function keys, ...).
#[derive(Debug)]
pub struct VirtualKeyboard {
    dev: VirtualDevice,
    name: String,
    syspath: Option<PathBuf>,
}

impl VirtualKeyboard {
    /// Creates the device named `name` (at most 79 bytes), loading uinput if needed.
    pub fn create(name: &str) -> io::Result<Self> {
        ensure_uinput()?;
        let keys: AttributeSet<KeyCode> = (1..=LAST_KEYBOARD_KEY).map(KeyCode::new).collect();
        let mut dev = VirtualDevice::builder()?
            .name(name)
            .input_id(builder_id(PRODUCT_KEYBOARD))
            .with_keys(&keys)?
            .build()?;
        let syspath = syspath(&mut dev);
        Ok(Self {
            dev,
            name: name.to_string(),
            syspath,
        })
    }

    /// The device name libinput reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's sysfs directory, when the kernel reported it.
    pub fn syspath(&self) -> Option<&Path> {
        self.syspath.as_deref()
    }

    /// `EV_KEY key 1`, `SYN_REPORT`.
    pub fn press(&mut self, key: KeyCode) -> io::Result<()> {
        self.key(key, 1)
    }

    /// `EV_KEY key 0`, `SYN_REPORT`.
    pub fn release(&mut self, key: KeyCode) -> io::Result<()> {
        self.key(key, 0)
    }

    /// Press then release `key` (two reports).
    pub fn tap(&mut self, key: KeyCode) -> io::Result<()> {
        self.press(key)?;
        self.release(key)
    }

    fn key(&mut self, key: KeyCode, value: i32) -> io::Result<()> {
        self.dev
            .emit(&[InputEvent::new(EventType::KEY.0, key.code(), value)])
    }
}

/// A uinput relative pointer (a mouse): `REL_X`/`REL_Y`, `BTN_LEFT`/`BTN_RIGHT`/
/// `BTN_MIDDLE`.
#[derive(Debug)]
pub struct VirtualPointer {
    dev: VirtualDevice,
    name: String,
    syspath: Option<PathBuf>,
}

impl VirtualPointer {
    /// Creates the device named `name` (at most 79 bytes), loading uinput if needed.
    pub fn create(name: &str) -> io::Result<Self> {
        ensure_uinput()?;
        let buttons: AttributeSet<KeyCode> =
            [KeyCode::BTN_LEFT, KeyCode::BTN_RIGHT, KeyCode::BTN_MIDDLE]
                .into_iter()
                .collect();
        let axes: AttributeSet<RelativeAxisCode> =
            [RelativeAxisCode::REL_X, RelativeAxisCode::REL_Y]
                .into_iter()
                .collect();
        let mut dev = VirtualDevice::builder()?
            .name(name)
            .input_id(builder_id(PRODUCT_POINTER))
            .with_keys(&buttons)?
            .with_relative_axes(&axes)?
            .build()?;
        let syspath = syspath(&mut dev);
        Ok(Self {
            dev,
            name: name.to_string(),
            syspath,
        })
    }

    /// The device name libinput reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's sysfs directory, when the kernel reported it.
    pub fn syspath(&self) -> Option<&Path> {
        self.syspath.as_deref()
    }

    /// `REL_X dx`, `REL_Y dy`, `SYN_REPORT`: one motion in device units. libinput
    /// accelerates relative motion, so the compositor moves by roughly, not exactly,
    /// this much; move far past an edge to reach a known place.
    pub fn move_by(&mut self, dx: i32, dy: i32) -> io::Result<()> {
        self.dev.emit(&[
            InputEvent::new(EventType::RELATIVE.0, RelativeAxisCode::REL_X.0, dx),
            InputEvent::new(EventType::RELATIVE.0, RelativeAxisCode::REL_Y.0, dy),
        ])
    }

    /// `EV_KEY button 1|0`, `SYN_REPORT`.
    pub fn button(&mut self, button: KeyCode, pressed: bool) -> io::Result<()> {
        self.dev.emit(&[InputEvent::new(
            EventType::KEY.0,
            button.code(),
            i32::from(pressed),
        )])
    }

    /// Press then release `button` (two reports).
    pub fn click(&mut self, button: KeyCode) -> io::Result<()> {
        self.button(button, true)?;
        self.button(button, false)
    }
}
