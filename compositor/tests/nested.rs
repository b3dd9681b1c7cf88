//! The nested backend under Xvfb, and `--screenshot` on the nested and headless
//! backends, with real clients from Debian's weston package. The screenshots must
//! contain the clients' pixels: weston-simple-shm's colour rings, weston-simple-egl's
//! red/green/blue triangle. The nested output must also be upright as its hosts show
//! it: in Xvfb's framebuffer, in a headless syncbridge host's screenshot, and in a
//! headless Weston's (weston-screenshooter).
//!
//! Needs `Xvfb` (Debian package xvfb), weston and its clients: missing ones fail the
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
        Self::start_with(&[])
    }

    /// Xvfb with `extra` arguments.
    fn start_with(extra: &[&std::ffi::OsStr]) -> Self {
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
            .args(extra)
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
    run_syncbridge_sized(display, SIZE, args)
}

/// [`run_syncbridge`] with outputs of `size`.
fn run_syncbridge_sized(display: Option<&str>, size: (u32, u32), args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let stats = dir.path().join("stats.json");
    let screenshot = dir.path().join("output.png");
    let mut command = Command::new(SYNCBRIDGE);
    command
        .args(["--stats-interval", "0", "--stats-json"])
        .arg(&stats)
        .arg("--screenshot")
        .arg(&screenshot)
        .args(["--output-size", &format!("{}x{}", size.0, size.1)])
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
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        rgba.truncate(info.buffer_size());
        match info.color_type {
            png::ColorType::Rgba => {}
            // weston-screenshooter's PNGs have no alpha.
            png::ColorType::Rgb => {
                rgba = rgba
                    .chunks_exact(3)
                    .flat_map(|px| [px[0], px[1], px[2], 255])
                    .collect();
            }
            other => panic!("{}: unexpected PNG colour type {other:?}", path.display()),
        }
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
    let shoot = || {
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
        let hues = [0, 1, 2].map(|c| dominant(&image.pixels((0, 0), (250, 250)), c));
        (run, image, hues, log)
    };
    // What this test asserts is that all three corners' hues reach the output. But
    // weston-simple-egl turns its triangle by its wall clock (`(ms / 5) % 360` degrees),
    // so near 90 and 270 degrees the last frame's triangle is (nearly) edge-on and a
    // corner's hue can be missing from it (CI met 35 red, 35 green, 0 blue; exactly
    // edge-on, none at all). Such a frame is taken again, once, in a new run, as
    // `run_with_simple_egl_triangle` (tests/src/screenshot.rs) does for the GLES tests in
    // the VM; a client buffer that never reaches the output fails both runs.
    let enough = |h: &[usize; 3]| h.iter().all(|&n| n >= 20);
    let mut shot = shoot();
    if !enough(&shot.2) {
        println!(
            "triangle hues {:?} in the first run's last frame: an (almost) edge-on triangle \
             looks like that; running again",
            shot.2
        );
        shot = shoot();
    }
    let (run, image, [red, green, blue], log) = shot;
    assert!(
        enough(&[red, green, blue]),
        "triangle hues: {red} red, {green} green, {blue} blue pixels; log:\n{log}"
    );
    let outside = image.pixels((300, 0), SIZE);
    assert!(outside.iter().all(|px| is_background(*px)));

    // GLES on llvmpipe: EGL has EGL_KHR_fence_sync but not EGL_ANDROID_native_fence_sync,
    // so no render sync point is ever exported as a fence. Each one is checked instead of
    // being taken as finished: reached by the time it is reported (after the swap, here),
    // or its sampled buffers held until a thread saw it reached.
    let rs = &run.stats["render_sync"];
    let count = |k: &str| {
        rs[k]
            .as_u64()
            .unwrap_or_else(|| panic!("render_sync.{k}: {rs}"))
    };
    assert_eq!(count("exported"), 0, "llvmpipe has no native fences: {rs}");
    assert!(count("reached") + count("deferred") >= 60, "{rs}");
    assert!(count("deferred_done") <= count("deferred"), "{rs}");
    assert_eq!(count("waited_inline"), 0, "{rs}");
    let fail_closed = &run.stats["sync"]["release"]["fail_closed"];
    assert_eq!(fail_closed["implicit_releases_unheld"], 0, "{fail_closed}");
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

/// Where the nested output shows on a host: `image` is the host's screen, and
/// `(x, y)` the nested output's top-left corner on it (below the window's title bar).
/// weston-simple-shm, the nested compositor's first window, is 250x250 at the
/// nested output's top-left: its many colours must be there, and the lower part of
/// the nested output must be plain background. An upside-down nested frame puts the
/// pattern at the bottom-left instead.
fn assert_nested_output_upright(image: &Image, (x, y): (u32, u32), log: &str) {
    let (w, h) = SIZE;
    let mut top_left = image.pixels((x, y), (x + 250, y + 250));
    top_left.sort_unstable();
    top_left.dedup();
    let lower = image.pixels((x, y + 290), (x + w, y + h));
    let stray = lower.iter().filter(|px| !is_background(**px)).count();
    let mut lower_colours = lower.clone();
    lower_colours.sort_unstable();
    lower_colours.dedup();
    assert!(
        top_left.len() >= 100 && stray == 0,
        "the nested output at ({x}, {y}) on the host is not upright: {} distinct colours \
         where simple-shm must be (its top-left 250x250, want >= 100), and {stray} \
         non-background pixels ({} distinct colours) in its lower part (rows {}..{}, \
         want 0: an upside-down frame puts simple-shm there); log:\n{log}",
        top_left.len(),
        lower_colours.len(),
        y + 290,
        y + h
    );
}

/// The nested output's top-left corner on a host screen: the bounding box of the
/// background-coloured pixels (the nested output's background; the host's own
/// background differs or, for a syncbridge host, is searched only below the nested
/// window's title bar) must be the nested output's size.
fn find_nested_output(image: &Image, from: (u32, u32)) -> Option<(u32, u32)> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for y in from.1..image.height {
        for x in from.0..image.width {
            let i = ((y * image.width + x) * 4) as usize;
            if is_background([image.rgba[i], image.rgba[i + 1], image.rgba[i + 2]]) {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    ((x1.saturating_sub(x0), y1.saturating_sub(y0)) == SIZE).then_some((x0, y0))
}

#[test]
fn nested_inside_a_wayland_session_shows_weston_simple_shm_upright() {
    // The Wayland session is syncbridge itself (headless, larger than the nested
    // window and its decorations); the nested syncbridge is its client, and
    // weston-simple-shm the nested one's. The host's exit screenshot (taken while both
    // still run) shows simple-shm through the nested window, at the nested output's
    // top-left: not upside down.
    require("/usr/bin/weston-simple-shm", "weston");
    const HOST: (u32, u32) = (1024, 768);
    let nested_args = format!(
        "{SYNCBRIDGE} --backend auto --stats-interval 0 --output-size {}x{} \
         -- /usr/bin/weston-simple-shm",
        SIZE.0, SIZE.1
    );
    let run = run_syncbridge_sized(
        None,
        HOST,
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
    let image = Image::load(&run.screenshot);
    assert_eq!((image.width, image.height), HOST);
    // The host places the nested window at its top-left, and its background is the
    // nested output's: the output is found by the window's decorations (winit's
    // title bar above it, a border right of it). Its top edge: the first background
    // row under the title bar (in the middle, right of simple-shm); its left edge:
    // its width left of the right border (the output's top rows are background
    // there, upright or not).
    let top = (0..100)
        .find(|y| is_background(image.pixels((320, *y), (321, *y + 1))[0]))
        .unwrap_or_else(|| {
            panic!(
                "no nested window at the host's top-left; log:
{log}"
            )
        });
    let right = (300..HOST.0)
        .find(|x| !is_background(image.pixels((*x, top + 1), (*x + 1, top + 2))[0]))
        .unwrap_or_else(|| {
            panic!(
                "no border right of the nested output; log:
{log}"
            )
        });
    let corner = (right.saturating_sub(SIZE.0), top);
    assert!(
        right >= SIZE.0 && corner.0 < 40 && corner.1 < 100,
        "the nested output is at {corner:?} on the host (right edge {right}), not at \
         its top-left; log:\n{log}"
    );
    assert_nested_output_upright(&image, corner, &log);
}

/// A headless Weston (Debian's weston package: desktop shell, GL renderer on Mesa's
/// software GL), a third-party Wayland host, with its debug protocols on so that
/// weston-screenshooter can capture its screen. Killed on drop.
struct Weston {
    child: Child,
    dir: tempfile::TempDir,
}

impl Weston {
    const SOCKET: &'static str = "weston-host";

    fn start() -> Self {
        require("/usr/bin/weston", "weston");
        require("/usr/bin/weston-screenshooter", "weston");
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("weston.log")).expect("weston log");
        let child = Command::new("/usr/bin/weston")
            .args([
                "--backend=headless-backend.so",
                "--use-gl",
                "--debug",
                "--idle-time=0",
                "--width=1024",
                "--height=768",
            ])
            .arg(format!("--socket={}", Self::SOCKET))
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("weston log"))
            .stderr(log)
            .spawn()
            .expect("weston starts");
        let mut weston = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !weston.dir.path().join(Self::SOCKET).exists() {
            assert!(
                running(&mut weston.child),
                "weston exited at start; log:\n{}",
                weston.log()
            );
            assert!(
                Instant::now() < deadline,
                "weston did not listen within 20 s; log:\n{}",
                weston.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        weston
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weston.log")).unwrap_or_default()
    }

    /// weston's screen now (weston-screenshooter writes it into its working directory).
    fn screenshot(&self) -> Image {
        let shots = self.dir.path().join("shots");
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir(&shots).expect("screenshot dir");
        let child = Command::new("/usr/bin/weston-screenshooter")
            .current_dir(&shots)
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .env("WAYLAND_DISPLAY", Self::SOCKET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weston-screenshooter starts");
        let output = wait_bounded(child, Duration::from_secs(20));
        assert!(
            output.status.success(),
            "weston-screenshooter failed: {}; weston log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        let png = std::fs::read_dir(&shots)
            .expect("screenshot dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "png"))
            .unwrap_or_else(|| panic!("weston-screenshooter wrote no PNG"));
        Image::load(&png)
    }
}

impl Drop for Weston {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nested_inside_weston_shows_weston_simple_shm_upright() {
    // The host is Weston, so the nested window's orientation is judged by a
    // compositor other than ours. Weston places the window where its shell likes; the
    // nested output is found as the box of its background colour (Weston's own
    // wallpaper, panel and decorations are other colours).
    require("/usr/bin/weston-simple-shm", "weston");
    let weston = Weston::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(SYNCBRIDGE)
        .args(["--backend", "nested", "--stats-interval", "0"])
        .args(["--output-size", &format!("{}x{}", SIZE.0, SIZE.1)])
        .args(["--", "/usr/bin/weston-simple-shm"])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env(
            "WAYLAND_DISPLAY",
            weston.dir.path().join(Weston::SOCKET).as_os_str(),
        )
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("RUST_LOG", "info")
        .env_remove("DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("syncbridge starts");
    // Until simple-shm shows through the nested window, or 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (image, corner) = loop {
        assert!(running(&mut child), "syncbridge exited early");
        let image = weston.screenshot();
        if let Some(corner) = find_nested_output(&image, (0, 0)) {
            let mut window = image.pixels(corner, (corner.0 + SIZE.0, corner.1 + SIZE.1));
            window.sort_unstable();
            window.dedup();
            if window.len() >= 100 {
                break (image, corner);
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "simple-shm never showed through the nested window on weston \
                 ({SIZE:?} of background found: {:?}); log:\n{}\nweston log:\n{}",
                find_nested_output(&image, (0, 0)),
                String::from_utf8_lossy(&output.stderr),
                weston.log()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    let log = String::from_utf8_lossy(&output.stderr);
    assert_nested_output_upright(&image, corner, &log);
}

/// Xvfb's screen 0 from its `-fbdir` memory-mapped XWD file (32 bits per pixel).
fn xvfb_screen(fbdir: &Path) -> Option<Image> {
    let data = std::fs::read(fbdir.join("Xvfb_screen0")).ok()?;
    let field = |i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            data.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    let (header, width, height) = (field(0)?, field(4)?, field(5)?);
    let (lsb_first, bits, stride, colours) = (field(7)? == 0, field(11)?, field(12)?, field(19)?);
    assert_eq!(bits, 32, "Xvfb's XWD screen: {bits} bits per pixel");
    let start = header as usize + colours as usize * 12;
    let mut rgba = Vec::with_capacity((width * height * 4) as usize);
    for y in 0..height as usize {
        let row = data.get(start + y * stride as usize..)?;
        for px in row.get(..width as usize * 4)?.chunks_exact(4) {
            let [b, g, r] = if lsb_first {
                [px[0], px[1], px[2]]
            } else {
                [px[3], px[2], px[1]]
            };
            rgba.extend([r, g, b, 255]);
        }
    }
    Some(Image {
        width,
        height,
        rgba,
    })
}

#[test]
fn nested_under_xvfb_window_shows_weston_simple_shm_upright() {
    // What the X server shows in the nested window (Xvfb's framebuffer, not the
    // compositor's own --screenshot read-back, which would be consistent with an
    // upside-down window): without a window manager the window is at the root's
    // top-left, and simple-shm at the nested output's.
    require("/usr/bin/weston-simple-shm", "weston");
    let fbdir = tempfile::tempdir().expect("temp dir");
    let xvfb = Xvfb::start_with(&["-fbdir".as_ref(), fbdir.path().as_os_str()]);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(SYNCBRIDGE)
        .args(["--backend", "nested", "--stats-interval", "0"])
        .args(["--output-size", &format!("{}x{}", SIZE.0, SIZE.1)])
        .args(["--", "/usr/bin/weston-simple-shm"])
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
    // Until simple-shm shows in the window, or 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let image = loop {
        assert!(running(&mut child), "syncbridge exited early");
        if let Some(image) = xvfb_screen(fbdir.path()) {
            let mut window = image.pixels((0, 0), SIZE);
            window.sort_unstable();
            window.dedup();
            if window.len() >= 100 {
                break image;
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "simple-shm never showed in the nested window on Xvfb; log:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    assert_nested_output_upright(&image, (0, 0), &String::from_utf8_lossy(&output.stderr));
}
