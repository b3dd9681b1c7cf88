//! The nested backend under Xvfb, and `--screenshot` on the nested and headless
//! backends, with real clients from Debian's weston package. The screenshots must
//! contain the clients' pixels: weston-simple-shm's colour rings, weston-simple-egl's
//! red/green/blue triangle.
//!
//! Needs `Xvfb` (Debian package xvfb) and weston's clients: missing ones fail the
//! test with a message, they are never skipped. Every process is bounded by a timeout.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const SYNCBRIDGE: &str = env!("CARGO_BIN_EXE_syncbridge");
/// No run of the compositor in these tests may take longer.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Output size asked for (the nested window, the headless output).
const SIZE: (u32, u32) = (640, 480);
/// Background of the compositor's outputs: (0.1, 0.1, 0.12) in 8 bits.
const BACKGROUND: [u8; 3] = [26, 26, 31];

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} package (cargo xtask install does)"
    );
}

/// An Xvfb server on a display number it picked itself (`-displayfd`); killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Self {
        require("/usr/bin/Xvfb", "xvfb");
        let mut child = Command::new("/usr/bin/Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        let stdout = child.stdout.take().expect("Xvfb stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Xvfb did not report its display within 20 s");
            }
        };
        let number = line.trim();
        assert!(
            !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()),
            "Xvfb did not start (it wrote {line:?})"
        );
        Self {
            child,
            display: format!(":{number}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one run of the compositor left behind.
struct Run {
    output: Output,
    stats: serde_json::Value,
    screenshot: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    fn log(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Wait for `child` at most `timeout`; kill it and fail the test past that.
fn wait_bounded(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("waiting for syncbridge") {
            Some(_) => return child.wait_with_output().expect("syncbridge output"),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("syncbridge output");
                panic!(
                    "syncbridge did not exit within {timeout:?}; log:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Run syncbridge with `args` and `--screenshot`, in a private XDG_RUNTIME_DIR, on
/// `display` (X11) or with no display session at all.
fn run_syncbridge(display: Option<&str>, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let stats = dir.path().join("stats.json");
    let screenshot = dir.path().join("output.png");
    let mut command = Command::new(SYNCBRIDGE);
    command
        .args(["--stats-interval", "0", "--stats-json"])
        .arg(&stats)
        .arg("--screenshot")
        .arg(&screenshot)
        .args(["--output-size", &format!("{}x{}", SIZE.0, SIZE.1)])
        .args(args)
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("WINIT_X11_SCALE_FACTOR", "1")
        .env("RUST_LOG", "info")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match display {
        Some(display) => command.env("DISPLAY", display),
        None => command.env_remove("DISPLAY"),
    };
    let child = command.spawn().expect("syncbridge starts");
    let output = wait_bounded(child, RUN_TIMEOUT);
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "log:\n{log}");
    let text = std::fs::read_to_string(&stats).unwrap_or_else(|e| panic!("stats: {e}; {log}"));
    let stats = serde_json::from_str(&text).expect("stats file is one JSON object");
    Run {
        output,
        stats,
        screenshot,
        _dir: dir,
    }
}

/// A decoded RGBA PNG.
struct Image {
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

impl Image {
    fn load(path: &Path) -> Self {
        let file = std::fs::File::open(path)
            .unwrap_or_else(|e| panic!("screenshot {} missing: {e}", path.display()));
        let mut reader = png::Decoder::new(file).read_info().expect("PNG header");
        let mut rgba = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut rgba).expect("PNG data");
        assert_eq!(info.color_type, png::ColorType::Rgba);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        rgba.truncate(info.buffer_size());
        Self {
            width: info.width,
            height: info.height,
            rgba,
        }
    }

    /// Pixels (r, g, b) of the rectangle `x0..x1`, `y0..y1` (clipped to the image).
    fn pixels(&self, (x0, y0): (u32, u32), (x1, y1): (u32, u32)) -> Vec<[u8; 3]> {
        let mut out = Vec::new();
        for y in y0..y1.min(self.height) {
            for x in x0..x1.min(self.width) {
                let i = ((y * self.width + x) * 4) as usize;
                out.push([self.rgba[i], self.rgba[i + 1], self.rgba[i + 2]]);
            }
        }
        out
    }
}

fn is_background(px: [u8; 3]) -> bool {
    px.iter().zip(BACKGROUND).all(|(a, b)| a.abs_diff(b) <= 2)
}

/// weston-simple-shm's window (250x250 at the top-left corner, where syncbridge
/// places the first window) is covered with its many-coloured rings, and the rest of
/// the output is background.
fn assert_shows_simple_shm(image: &Image) {
    assert_eq!((image.width, image.height), SIZE);
    let window = image.pixels((0, 0), (250, 250));
    let drawn = window.iter().filter(|px| !is_background(**px)).count();
    assert!(
        drawn * 10 >= window.len() * 9,
        "only {drawn} of {} pixels of the simple-shm window differ from the background",
        window.len()
    );
    let mut colours: Vec<[u8; 3]> = window.clone();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() >= 100,
        "only {} distinct colours in the simple-shm window: not its pattern",
        colours.len()
    );
    let outside = image.pixels((300, 0), SIZE);
    let stray = outside.iter().filter(|px| !is_background(**px)).count();
    assert_eq!(stray, 0, "non-background pixels right of the window");
}

/// Pixels whose `channel` exceeds both others by 80 or more.
fn dominant(pixels: &[[u8; 3]], channel: usize) -> usize {
    pixels
        .iter()
        .filter(|px| {
            (0..3)
                .filter(|c| *c != channel)
                .all(|c| u16::from(px[channel]) >= u16::from(px[c]) + 80)
        })
        .count()
}

#[test]
fn nested_under_xvfb_shows_weston_simple_shm_and_auto_picks_nested() {
    require("/usr/bin/weston-simple-shm", "weston");
    let xvfb = Xvfb::start();
    let run = run_syncbridge(
        Some(&xvfb.display),
        &[
            "--backend",
            "auto",
            "--exit-after-frames",
            "60",
            "--",
            "/usr/bin/weston-simple-shm",
        ],
    );
    let log = run.log();
    assert!(
        log.contains("--backend auto: DISPLAY is set") && log.contains("using nested"),
        "log:\n{log}"
    );
    let stats = &run.stats;
    assert_eq!(stats["backend"], "nested", "log:\n{log}");
    assert_eq!(stats["renderer"], "gles");
    assert_eq!(stats["outputs"][0]["name"], "WINIT-1");
    assert_eq!(
        stats["outputs"][0]["size"],
        serde_json::json!([SIZE.0, SIZE.1])
    );
    assert_eq!(stats["frames_presented_total"], 60);
    assert_eq!(stats["protocol_errors_sent"], 0);
    // The bridge saw the commits and released the replaced buffers.
    assert!(
        stats["sync"]["commits_seen"].as_u64().unwrap_or(0) >= 30,
        "{stats}"
    );
    assert!(
        stats["sync"]["release"]["buffers_released"]
            .as_u64()
            .unwrap_or(0)
            >= 10,
        "{stats}"
    );
    assert_shows_simple_shm(&Image::load(&run.screenshot));
}

#[test]
fn nested_under_xvfb_shows_weston_simple_egl_triangle() {
    require("/usr/bin/weston-simple-egl", "weston");
    let xvfb = Xvfb::start();
    let run = run_syncbridge(
        Some(&xvfb.display),
        &[
            "--backend",
            "nested",
            "--exit-after-frames",
            "60",
            "--",
            "/usr/bin/weston-simple-egl",
        ],
    );
    let log = run.log();
    assert_eq!(run.stats["backend"], "nested", "log:\n{log}");
    assert_eq!(run.stats["protocol_errors_sent"], 0, "log:\n{log}");
    let image = Image::load(&run.screenshot);
    assert_eq!((image.width, image.height), SIZE);
    // The egl window (250x250 at the corner): a triangle with red, green and blue
    // corners on a translucent black background.
    let window = image.pixels((0, 0), (250, 250));
    let [red, green, blue] = [0, 1, 2].map(|c| dominant(&window, c));
    assert!(
        red >= 100 && green >= 100 && blue >= 100,
        "triangle hues: {red} red, {green} green, {blue} blue pixels; log:\n{log}"
    );
    let outside = image.pixels((300, 0), SIZE);
    assert!(outside.iter().all(|px| is_background(*px)));
}

#[test]
fn headless_screenshot_shows_weston_simple_shm() {
    require("/usr/bin/weston-simple-shm", "weston");
    let run = run_syncbridge(
        None,
        &[
            "--backend",
            "headless",
            "--exit-after-frames",
            "60",
            "--",
            "/usr/bin/weston-simple-shm",
        ],
    );
    assert_eq!(run.stats["backend"], "headless", "log:\n{}", run.log());
    assert_shows_simple_shm(&Image::load(&run.screenshot));
}

#[test]
fn sigusr1_writes_a_screenshot_while_running() {
    require("/usr/bin/weston-simple-shm", "weston");
    let dir = tempfile::tempdir().expect("temp dir");
    let screenshot = dir.path().join("now.png");
    let mut child = Command::new(SYNCBRIDGE)
        .args(["--backend", "headless", "--stats-interval", "0"])
        .args(["--output-size", &format!("{}x{}", SIZE.0, SIZE.1)])
        .arg("--screenshot")
        .arg(&screenshot)
        .args(["--", "/usr/bin/weston-simple-shm"])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("syncbridge starts");
    let pid = rustix::process::Pid::from_child(&child);
    wait_for_socket(&mut child, dir.path());
    // Let the client draw, then ask for a screenshot.
    std::thread::sleep(Duration::from_millis(1500));
    rustix::process::kill_process(pid, rustix::process::Signal::USR1).expect("SIGUSR1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !screenshot.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The PNG is renamed into place once complete; read it before the exit rewrites it.
    let image = screenshot.exists().then(|| Image::load(&screenshot));
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let output = wait_bounded(child, RUN_TIMEOUT);
    let log = String::from_utf8_lossy(&output.stderr);
    let image = image.unwrap_or_else(|| panic!("no screenshot after SIGUSR1; log:\n{log}"));
    assert_shows_simple_shm(&image);
}

/// Drive the X server like a user, through XTest (libXtst ships with weston's
/// dependencies) from python3's ctypes: `move:X:Y`, `click`, `key:KEYSYM_HEX`, and
/// for the compositor's window, `focus` (X keyboard focus, as a window manager would
/// give it: Xvfb has none) and `resize:W:H`.
const XDRIVE: &str = r#"
import ctypes, sys, time
x11 = ctypes.CDLL("libX11.so.6")
xtst = ctypes.CDLL("libXtst.so.6")
vp, ul, ui, i = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_uint, ctypes.c_int
x11.XOpenDisplay.restype = vp
x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
x11.XSync.argtypes = [vp, i]
x11.XDefaultRootWindow.argtypes = [vp]
x11.XDefaultRootWindow.restype = ul
x11.XKeysymToKeycode.argtypes = [vp, ul]
x11.XKeysymToKeycode.restype = ctypes.c_ubyte
x11.XQueryTree.argtypes = [vp, ul, ctypes.POINTER(ul), ctypes.POINTER(ul),
                           ctypes.POINTER(ctypes.POINTER(ul)), ctypes.POINTER(ui)]
x11.XResizeWindow.argtypes = [vp, ul, ui, ui]
x11.XFetchName.argtypes = [vp, ul, ctypes.POINTER(ctypes.c_char_p)]
x11.XSetInputFocus.argtypes = [vp, ul, i, ul]
xtst.XTestFakeMotionEvent.argtypes = [vp, i, i, i, ul]
xtst.XTestFakeButtonEvent.argtypes = [vp, ui, i, ul]
xtst.XTestFakeKeyEvent.argtypes = [vp, ui, i, ul]
d = x11.XOpenDisplay(None)
if not d:
    sys.exit("cannot open the X display")

def our_window():
    root, parent, children, n = ul(), ul(), ctypes.POINTER(ul)(), ui()
    x11.XQueryTree(d, x11.XDefaultRootWindow(d), ctypes.byref(root), ctypes.byref(parent),
                   ctypes.byref(children), ctypes.byref(n))
    for k in range(n.value):
        name = ctypes.c_char_p()
        if x11.XFetchName(d, children[k], ctypes.byref(name)) and name.value:
            if name.value.startswith(b"syncbridge"):
                return children[k]
    sys.exit("no syncbridge window")

for action in sys.argv[1:]:
    kind, *args = action.split(":")
    if kind == "move":
        xtst.XTestFakeMotionEvent(d, -1, int(args[0]), int(args[1]), 0)
    elif kind == "click":
        xtst.XTestFakeButtonEvent(d, 1, 1, 0)
        x11.XSync(d, 0)
        xtst.XTestFakeButtonEvent(d, 1, 0, 0)
    elif kind == "key":
        code = x11.XKeysymToKeycode(d, int(args[0], 16))
        xtst.XTestFakeKeyEvent(d, code, 1, 0)
        x11.XSync(d, 0)
        xtst.XTestFakeKeyEvent(d, code, 0, 0)
    elif kind == "resize":
        x11.XResizeWindow(d, our_window(), int(args[0]), int(args[1]))
    elif kind == "focus":
        # What a window manager does on click: X keyboard focus to the window.
        x11.XSetInputFocus(d, our_window(), 2, 0)
    x11.XSync(d, 0)
    time.sleep(0.2)
"#;

/// Run [`XDRIVE`] with `actions` on `display`.
fn xdrive(display: &str, actions: &[&str]) {
    let child = Command::new("python3")
        .arg("-c")
        .arg(XDRIVE)
        .args(actions)
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (Debian: python3)");
    let output = wait_bounded(child, Duration::from_secs(30));
    assert!(
        output.status.success(),
        "driving X failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Ask the running compositor `pid` for a screenshot at `path` (SIGUSR1).
fn snapshot(pid: rustix::process::Pid, path: &Path) -> Option<Image> {
    let _ = std::fs::remove_file(path);
    rustix::process::kill_process(pid, rustix::process::Signal::USR1).ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Image::load(path))
}

/// Wait until the compositor listens in `runtime_dir` (it installs its SIGUSR1
/// handler before it binds the socket; SIGUSR1 before that would kill it).
fn wait_for_socket(child: &mut Child, runtime_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listening = std::fs::read_dir(runtime_dir).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("wayland-"))
        });
        if listening {
            return;
        }
        assert!(running(child), "syncbridge exited before listening");
        assert!(Instant::now() < deadline, "syncbridge never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `child` is still running.
fn running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

#[test]
fn nested_forwards_clicks_and_keys_and_follows_window_resizes() {
    require("/usr/bin/weston-simple-shm", "weston");
    require("/usr/bin/weston-simple-egl", "weston");
    let xvfb = Xvfb::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let stats = dir.path().join("stats.json");
    let screenshot = dir.path().join("output.png");
    let mut child = Command::new(SYNCBRIDGE)
        .args(["--backend", "nested", "--stats-interval", "0"])
        .args(["--output-size", &format!("{}x{}", SIZE.0, SIZE.1)])
        .arg("--stats-json")
        .arg(&stats)
        .arg("--screenshot")
        .arg(&screenshot)
        // simple-shm first (at 0,0), then simple-egl (at 32,32, on top, focused).
        // simple-egl quits on Escape: then syncbridge exits with its status.
        .args(["--", "sh", "-c"])
        .arg("/usr/bin/weston-simple-shm & exec /usr/bin/weston-simple-egl")
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("DISPLAY", &xvfb.display)
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("WINIT_X11_SCALE_FACTOR", "1")
        .env("RUST_LOG", "info")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("syncbridge starts");
    let pid = rustix::process::Pid::from_child(&child);
    wait_for_socket(&mut child, dir.path());

    // Wait until both windows show: shm's rings, and egl's translucent black where
    // only egl is (250..282).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(running(&mut child), "syncbridge exited early");
        let shown = snapshot(pid, &screenshot).is_some_and(|image| {
            let shm = image.pixels((0, 0), (250, 250));
            let egl_only = image.pixels((255, 40), (280, 240));
            shm.iter().filter(|px| !is_background(**px)).count() * 10 >= shm.len() * 9
                && egl_only.iter().all(|px| !is_background(*px))
        });
        if shown {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "the two windows never showed; log:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    // A click on simple-shm (where egl is not) moves the keyboard focus there:
    // Escape then reaches shm, and egl keeps running.
    xdrive(&xvfb.display, &["focus", "move:10:10", "click", "key:ff1b"]);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        running(&mut child),
        "simple-egl got Escape although the click focused simple-shm"
    );

    // The window is resized from outside: the output's mode follows.
    xdrive(&xvfb.display, &["resize:800:520"]);
    std::thread::sleep(Duration::from_millis(500));

    // A click on egl's own part focuses it; Escape ends it, and so syncbridge.
    xdrive(&xvfb.display, &["move:270:270", "click", "key:ff1b"]);
    let output = wait_bounded(child, Duration::from_secs(30));
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "log:\n{log}");
    assert!(
        log.contains("ChildExited(0)"),
        "exit by Escape; log:\n{log}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).expect("stats")).expect("json");
    assert_eq!(
        stats["outputs"][0]["size"],
        serde_json::json!([800, 520]),
        "log:\n{log}"
    );
    assert!(log.contains("window resized"), "log:\n{log}");
    let image = Image::load(&screenshot);
    assert_eq!((image.width, image.height), (800, 520));
}

#[test]
fn nested_inside_a_wayland_session_shows_weston_simple_shm() {
    // The Wayland session is syncbridge itself (headless); the nested syncbridge is
    // its client, and weston-simple-shm the nested one's. The host's exit screenshot
    // (taken while both still run) shows simple-shm through the nested window.
    require("/usr/bin/weston-simple-shm", "weston");
    let nested_args = format!(
        "{SYNCBRIDGE} --backend auto --stats-interval 0 --output-size {}x{} \
         -- /usr/bin/weston-simple-shm",
        SIZE.0, SIZE.1
    );
    let run = run_syncbridge(
        None,
        &[
            "--backend",
            "headless",
            "--exit-after-frames",
            "120",
            "--",
            "sh",
            "-c",
            &format!("exec {nested_args}"),
        ],
    );
    let log = run.log();
    assert!(
        log.contains("--backend auto: WAYLAND_DISPLAY is set") && log.contains("using nested"),
        "the inner compositor picked nested; log:\n{log}"
    );
    assert!(
        log.contains("nested: window open") && log.contains("\"WAYLAND_DISPLAY\""),
        "log:\n{log}"
    );
    assert_eq!(run.stats["protocol_errors_sent"], 0, "log:\n{log}");
    // Where the pattern lands is not asserted: winit adds client-side decorations
    // on Wayland, and with Mesa's software EGL on a Wayland host the nested frame
    // arrives upside down (an open issue; X11 hosts are exact, see above). The
    // host must show simple-shm's many colours through the nested window.
    let image = Image::load(&run.screenshot);
    let mut colours = image.pixels((0, 0), SIZE);
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() >= 200,
        "only {} distinct colours on the host: simple-shm not shown through the nested window",
        colours.len()
    );
}
