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
        red >= 200 && green >= 200 && blue >= 200,
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
    let child = Command::new(SYNCBRIDGE)
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
