//! `bench-driver`: runs the scenarios of `cargo xtask bench` inside the test VM.
//!
//! For each scenario it starts a compositor (syncbridge headless, Weston 10 headless, the
//! library's minimal compositor for the latch's floor ([`library_floor`]), syncbridge on
//! VKMS through `seatd-launch` when the tty backend exists, or sway 1.7 on the same VKMS
//! as an unprivileged user), runs `bench-client` against it, and leaves raw files in
//! `--out DIR`:
//! `<scenario>.client.json` (what the client measured), `<scenario>.stats.json`
//! (syncbridge's `--stats-json`), `<scenario>.log` (compositor output), and one line per
//! scenario in `manifest.tsv` (`name  exit-status  seconds  note`). `cargo xtask bench`
//! turns these into the table, the JSON summary and the charts on the host.
//!
//! The driver makes no judgement: a scenario that fails is recorded as failed and the
//! rest still run. It exits non-zero when any scenario failed (the smoke run's verdict).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use syncbridge_tests::kernel::card::{find_nodes, NodeKind};
use syncbridge_tests::kernel::virtio_gpu::{find_virtio_gpu_nodes, VirtioGpu};

mod library_floor;
mod perf_record;
mod sway;

type Res<T> = Result<T, String>;

#[derive(Debug, Clone)]
struct Sizes {
    latch_iterations: u64,
    frames_secs: &'static str,
    warmup_secs: &'static str,
    client_counts: Vec<usize>,
    bounds_commits: u64,
    stall_clients: usize,
    tty_secs: &'static str,
    /// Rounds of the VKMS comparison with sway: each round runs every client count on
    /// both compositors, one after the other, so that a slow stretch of the VM (its speed
    /// varies within a boot too) falls on both.
    peer_rounds: usize,
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            latch_iterations: 150,
            frames_secs: "4",
            warmup_secs: "1",
            client_counts: vec![1, 8, 32],
            bounds_commits: 100_000,
            stall_clients: 50,
            tty_secs: "5",
            peer_rounds: 3,
        }
    }

    /// The frames client of `n` clients (shm, 3 buffers, 128x128), the same for every
    /// compositor it is compared on.
    fn frames_client(&self, n: usize) -> Vec<String> {
        self.frames_client_drawing(n, &["--size", "128"])
    }

    /// The frames client of one plane-path scenario on VKMS (`plane-*`): one client,
    /// with `extra` saying what it draws (buffer kind, size or `--fullscreen`).
    fn plane_path_client(&self, extra: &[&str]) -> Vec<String> {
        self.frames_client_drawing(1, extra)
    }

    /// `n` frames clients with 3 buffers each, measured for `frames_secs` after
    /// `warmup_secs`, drawing what `what` says.
    fn frames_client_drawing(&self, n: usize, what: &[&str]) -> Vec<String> {
        let mut v = strings(&[
            "--mode",
            "frames",
            "--clients",
            &n.to_string(),
            "--secs",
            self.frames_secs,
            "--warmup-secs",
            self.warmup_secs,
            "--buffers",
            "3",
        ]);
        v.extend(strings(what));
        v
    }

    fn smoke() -> Self {
        Sizes {
            latch_iterations: 8,
            frames_secs: "0.5",
            warmup_secs: "0.3",
            client_counts: vec![1],
            bounds_commits: 1_000,
            stall_clients: 3,
            tty_secs: "0.5",
            peer_rounds: 1,
        }
    }
}

#[derive(Debug)]
struct Driver {
    out: PathBuf,
    syncbridge: PathBuf,
    client: PathBuf,
    render_node: Option<PathBuf>,
    failed: u32,
    manifest: std::fs::File,
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "bench-driver",
    about = "Runs the scenarios of `cargo xtask bench` in the VM"
)]
struct Args {
    /// The short version (one round, small sizes): the test suite's bench smoke.
    #[arg(long)]
    smoke: bool,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Where the raw files go.
    #[arg(long)]
    out: PathBuf,
    /// The compositor (default: $SYNCBRIDGE_BIN, else `syncbridge` beside this binary).
    #[arg(long)]
    syncbridge: Option<PathBuf>,
    /// The client (default: `bench-client` beside this binary).
    #[arg(long)]
    client: Option<PathBuf>,
    /// The library's minimal compositor (default: `examples/minimal_compositor` beside
    /// this binary, where `cargo build --example` puts it).
    #[arg(long)]
    minimal: Option<PathBuf>,
    /// Also run each VKMS peer scenario once more under `perf record -a`
    /// (`vkms-WHO-N@perf`, outside the rounds the table's medians use): where each
    /// compositor's CPU per frame goes. Needs perf (Debian package linux-perf).
    #[arg(long)]
    perf: bool,
}

/// What `program --version` prints (stdout, else stderr: a run of the bench once got an
/// empty stdout from weston), or why there is nothing.
fn version_of(program: &str) -> String {
    match Command::new(program).arg("--version").output() {
        Ok(o) => {
            let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
            match (out.is_empty(), err.lines().last()) {
                (false, _) => out,
                (true, Some(line)) if !line.is_empty() => line.to_string(),
                _ => format!("{program} (--version printed nothing, {})", o.status),
            }
        }
        Err(e) => format!("{program} not runnable: {e}"),
    }
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn try_wait_for(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.code().unwrap_or(-1)),
            Ok(None) => {}
            Err(_) => return Some(-1),
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` up to `limit`; past that sends SIGTERM (so `seatd-launch` and the
/// compositor clean up), then SIGKILL after 5 s. Returns the exit status (-1 when killed
/// by a signal) and whether it timed out.
fn wait_limited(child: &mut Child, limit: Duration) -> (i32, bool) {
    match try_wait_for(child, limit) {
        Some(code) => (code, false),
        None => {
            terminate(child);
            (-1, true)
        }
    }
}

/// SIGTERM, then SIGKILL after 5 s. Every wait is bounded: a process that outlives SIGKILL
/// by 10 s sits in an uninterruptible kernel wait (a stuck DRM or 9p call) and is left
/// behind with a line saying so, so one stuck process cannot hang the whole bench run.
fn terminate(child: &mut Child) -> i32 {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    try_wait_for(child, Duration::from_secs(5)).unwrap_or_else(|| {
        let _ = child.kill();
        if try_wait_for(child, Duration::from_secs(10)).is_none() {
            println!(
                "bench-driver: pid {} did not exit 10 s after SIGKILL (an uninterruptible \
                 kernel wait?); going on without it",
                child.id()
            );
        }
        -1
    })
}

/// The socket name of scenario `name` and its path in `$XDG_RUNTIME_DIR`, where no stale
/// socket of an earlier run is left.
fn fresh_socket(name: &str) -> Res<(String, PathBuf)> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").ok_or("no XDG_RUNTIME_DIR")?;
    let socket_name = format!("bench-{name}");
    let socket = Path::new(&runtime).join(&socket_name);
    let _ = std::fs::remove_file(&socket);
    Ok((socket_name, socket))
}

/// Waits up to 30 s for `compositor` (`what`) to create `socket`; stops it if it exits or
/// never does.
fn wait_for_socket(compositor: &mut Child, socket: &Path, what: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if Instant::now() > deadline || matches!(compositor.try_wait(), Ok(Some(_))) {
            terminate(compositor);
            return Err(format!("{what} did not create its socket"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Copies `bin` into `dir` (the guest's tmpfs): executables on the host's read-only 9p
/// share page-fault over 9p, which costs seconds per start under QEMU.
fn local_copy(bin: &Path, dir: &Path) -> PathBuf {
    let Some(name) = bin.file_name() else {
        return bin.to_owned();
    };
    let dest = dir.join(name);
    match std::fs::copy(bin, &dest) {
        Ok(_) => dest,
        Err(e) => {
            println!(
                "bench-driver: running {} from the share ({e})",
                bin.display()
            );
            bin.to_owned()
        }
    }
}

impl Driver {
    fn record(&mut self, name: &str, code: i32, secs: f64, note: &str) {
        if code != 0 {
            self.failed += 1;
        }
        let _ = writeln!(self.manifest, "{name}\t{code}\t{secs:.1}\t{note}");
        println!("bench-driver: {name}: exit {code} in {secs:.1} s {note}");
    }

    /// Records a scenario started at `start`: its exit status, or why it did not run.
    fn finish(&mut self, name: &str, start: Instant, result: Res<(i32, bool)>) {
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok((code, timed_out)) => {
                self.record(name, code, secs, if timed_out { "timed out" } else { "" })
            }
            Err(e) => self.record(name, -1, secs, &e),
        }
    }

    /// One VKMS peer scenario: `who` (syncbridge's tty backend under `seatd-launch`, or
    /// sway) on the card `vkms` with `n` clients.
    fn vkms_peer(&mut self, who: &str, name: &str, vkms: &Path, client: &[String], n: usize) {
        let limit = Duration::from_secs(300);
        if who == "sway" {
            self.sway(name, vkms, client, n, limit);
        } else {
            self.syncbridge(
                name,
                &["seatd-launch", "--"],
                &tty_args(vkms),
                client,
                limit,
            );
        }
    }

    /// Runs `scenario` (which records `name` itself) under `perf record -a`, into
    /// `<name>.perf.data`; a perf that does not start or stop cleanly fails `name`.
    fn under_perf(&mut self, name: &str, scenario: impl FnOnce(&mut Driver)) {
        let start = Instant::now();
        let data = self.out.join(format!("{name}.perf.data"));
        let log = self.out.join(format!("{name}.perf.log"));
        match perf_record::PerfRecord::start(&data, &log) {
            Ok(rec) => {
                scenario(self);
                if let Err(e) = rec.stop() {
                    self.finish(&format!("{name}-perf-stop"), start, Err(e));
                }
            }
            Err(e) => self.finish(name, start, Err(e)),
        }
    }

    fn log_file(&self, name: &str) -> Res<(Stdio, Stdio)> {
        let path = self.out.join(format!("{name}.log"));
        let f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let g = f.try_clone().map_err(|e| e.to_string())?;
        Ok((Stdio::from(f), Stdio::from(g)))
    }

    /// The client of scenario `name` on the compositor `pid` listening at `socket`.
    fn spawn_client(&self, name: &str, client: &[String], socket: &Path, pid: u32) -> Res<Child> {
        let argv = self.client_args(name, client);
        Command::new(&argv[0])
            .args(&argv[1..])
            .arg("--socket")
            .arg(socket)
            .arg("--compositor-pid")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning the client: {e}"))
    }

    fn client_args(&self, name: &str, args: &[String]) -> Vec<String> {
        let mut v = vec![self.client.display().to_string()];
        v.extend(args.iter().cloned());
        v.push("--out".into());
        v.push(
            self.out
                .join(format!("{name}.client.json"))
                .display()
                .to_string(),
        );
        v
    }

    /// syncbridge (headless unless `extra` says otherwise) running the client as its
    /// `-- COMMAND`; syncbridge exits with the client's status.
    fn syncbridge(
        &mut self,
        name: &str,
        prefix: &[&str],
        extra: &[String],
        client: &[String],
        limit: Duration,
    ) {
        let start = Instant::now();
        let result = (|| -> Res<(i32, bool)> {
            let (so, se) = self.log_file(name)?;
            let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
            argv.push(self.syncbridge.display().to_string());
            argv.extend(
                [
                    "--stats-interval",
                    "1",
                    "--output-size",
                    "1280x720",
                    "--stats-json",
                ]
                .map(String::from),
            );
            argv.push(
                self.out
                    .join(format!("{name}.stats.json"))
                    .display()
                    .to_string(),
            );
            argv.extend(extra.iter().cloned());
            argv.push("--".into());
            argv.extend(self.client_args(name, client));
            let mut child = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(so)
                .stderr(se)
                .env("RUST_LOG", "info")
                .spawn()
                .map_err(|e| format!("spawning {}: {e}", argv[0]))?;
            Ok(wait_limited(&mut child, limit))
        })();
        self.finish(name, start, result);
    }

    fn headless(&mut self, name: &str, extra: &[&str], client: &[String], limit: Duration) {
        let mut e: Vec<String> = vec!["--backend".into(), "headless".into()];
        if let Some(r) = &self.render_node {
            e.push("--render-device".into());
            e.push(r.display().to_string());
        }
        e.extend(extra.iter().map(|s| s.to_string()));
        self.syncbridge(name, &[], &e, client, limit);
    }

    /// `latch-floor` (beside this binary): the bare wake-up of the bridge's event source
    /// in a minimal loop, writing `<name>.floor.json`.
    fn floor(&mut self, name: &str, mode: &str, rounds: u64) {
        let start = Instant::now();
        let result = (|| -> Res<(i32, bool)> {
            let (so, se) = self.log_file(name)?;
            let mut child = Command::new(sibling("latch-floor"))
                .args(["--mode", mode, "--rounds", &rounds.to_string(), "--out"])
                .arg(self.out.join(format!("{name}.floor.json")))
                .stdin(Stdio::null())
                .stdout(so)
                .stderr(se)
                .spawn()
                .map_err(|e| format!("spawning latch-floor: {e}"))?;
            Ok(wait_limited(&mut child, Duration::from_secs(120)))
        })();
        self.finish(name, start, result);
    }

    /// Weston 10 headless (pixman) with the client connecting to its socket.
    fn weston(&mut self, name: &str, client: &[String], limit: Duration) {
        let start = Instant::now();
        let result = (|| -> Res<(i32, bool)> {
            let (socket_name, socket) = fresh_socket(name)?;
            let (so, se) = self.log_file(name)?;
            let mut weston = Command::new("weston")
                .args([
                    "--backend=headless-backend.so",
                    "--use-pixman",
                    "--width=1280",
                    "--height=720",
                    "--idle-time=0",
                ])
                .arg(format!("--socket={socket_name}"))
                .stdin(Stdio::null())
                .stdout(so)
                .stderr(se)
                .spawn()
                .map_err(|e| format!("spawning weston: {e}"))?;
            wait_for_socket(&mut weston, &socket, "weston")?;
            // Let the desktop shell's helper client draw its background first.
            std::thread::sleep(Duration::from_secs(1));
            let mut c = self.spawn_client(name, client, &socket, weston.id())?;
            let r = wait_limited(&mut c, limit);
            terminate(&mut weston);
            Ok(r)
        })();
        self.finish(name, start, result);
    }
}

impl Driver {
    /// sway on the VKMS card `card` (see [`sway::Sway`]) with the client on its socket.
    /// The scenario fails unless sway shows all `windows` where syncbridge would: the
    /// comparison is only fair on the same scene.
    fn sway(
        &mut self,
        name: &str,
        card: &Path,
        client: &[String],
        windows: usize,
        limit: Duration,
    ) {
        let start = Instant::now();
        let result = (|| -> Res<(i32, bool)> {
            let path = self.out.join(format!("{name}.log"));
            let log =
                std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let sway = sway::Sway::start(name, card, &log)?;
            // Let it finish its first modeset before the client's clock starts.
            std::thread::sleep(Duration::from_secs(1));
            let mut c = match self.spawn_client(name, client, &sway.socket, sway.pid()) {
                Ok(c) => c,
                Err(e) => {
                    sway.stop();
                    return Err(e);
                }
            };
            // The client maps every window before its warm-up starts.
            let placed = (|| {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    let placed = sway.windows_in_place(windows);
                    let running = matches!(c.try_wait(), Ok(None));
                    if placed.as_ref().is_ok_and(|&p| p == windows)
                        || !running
                        || Instant::now() > deadline
                    {
                        return placed;
                    }
                }
            })();
            let r = wait_limited(&mut c, limit);
            sway.stop();
            match placed {
                Ok(p) if p == windows => Ok(r),
                Ok(p) => Err(format!(
                    "sway showed {p} of {windows} windows where syncbridge places them"
                )),
                Err(e) => Err(format!("reading sway's scene: {e}")),
            }
        })();
        self.finish(name, start, result);
    }
}

/// The plane-path scenarios on VKMS (`cargo xtask bench`'s section 7): name, and the
/// client's arguments that pick the path.
const PLANE_PATHS: [(&str, &[&str]); 3] = [
    (
        "plane-fullscreen",
        &["--buffer-kind", "vgem", "--fullscreen"],
    ),
    ("plane-overlay", &["--buffer-kind", "vgem", "--size", "256"]),
    (
        "plane-composited",
        &["--buffer-kind", "shm", "--size", "256"],
    ),
];

/// The name of one VKMS peer scenario: `vkms-WHO-N` in the first round, `vkms-WHO-N@rK`
/// in round K (`cargo xtask bench` takes the median over the rounds).
fn peer_scenario(who: &str, clients: usize, round: usize) -> String {
    if round == 1 {
        format!("vkms-{who}-{clients}")
    } else {
        format!("vkms-{who}-{clients}@r{round}")
    }
}

/// syncbridge's arguments for its tty backend on the VKMS card `vkms`.
fn tty_args(vkms: &Path) -> Vec<String> {
    let mut v = strings(&["--backend", "tty", "--drm-device"]);
    v.push(vkms.display().to_string());
    v
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn help_of(bin: &Path) -> String {
    Command::new(bin)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn run() -> Res<u32> {
    let Args {
        smoke,
        only,
        out,
        syncbridge,
        client,
        minimal,
        perf,
    } = <Args as clap::Parser>::parse();
    let sizes = if smoke { Sizes::smoke() } else { Sizes::full() };
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let syncbridge = syncbridge
        .or_else(|| std::env::var_os("SYNCBRIDGE_BIN").map(PathBuf::from))
        .unwrap_or_else(|| sibling("syncbridge"));
    let client = client.unwrap_or_else(|| sibling("bench-client"));
    let local = std::env::temp_dir().join(format!("bench-bin-{}", std::process::id()));
    let minimal = minimal.unwrap_or_else(|| sibling("examples/minimal_compositor"));
    let (syncbridge, client, minimal) = match std::fs::create_dir_all(&local) {
        Ok(()) => (
            local_copy(&syncbridge, &local),
            local_copy(&client, &local),
            local_copy(&minimal, &local),
        ),
        Err(_) => (syncbridge, client, minimal),
    };
    let manifest = std::fs::File::create(out.join("manifest.tsv")).map_err(|e| e.to_string())?;
    let render_node = find_virtio_gpu_nodes(VirtioGpu::Plain, NodeKind::Render)
        .into_iter()
        .next();
    let vkms = find_nodes("vkms", NodeKind::Primary).into_iter().next();
    let mut d = Driver {
        out: out.clone(),
        syncbridge,
        client,
        render_node,
        failed: 0,
        manifest,
    };
    let weston_version = version_of("weston");
    let sway_version = version_of("sway");
    let help = help_of(&d.syncbridge);
    let tty = help.contains("--release-mode") && help.contains("--implicit-wait");
    let env = format!(
        "{{\"smoke\":{smoke},\"kernel\":\"{}\",\"cpus\":{},\"weston\":\"{}\",\"sway\":\"{}\",\"render_node\":\"{}\",\"vkms\":\"{}\",\"tty_backend\":{tty}}}\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        weston_version.replace('"', "'"),
        sway_version.replace('"', "'"),
        d.render_node.as_ref().map_or(String::new(), |p| p.display().to_string()),
        vkms.as_ref().map_or(String::new(), |p| p.display().to_string()),
    );
    let _ = std::fs::write(out.join("env.json"), env);
    let want = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let min = |m: u64| Duration::from_secs(60 * m);

    // Latch latency: exported sync_file vs polling the dma-buf. The full run alternates
    // the modes twice (A, B) so run-to-run noise on a shared, emulated CPU shows.
    let rounds: &[&str] = if smoke { &["a"] } else { &["a", "b"] };
    for (round, mode) in rounds
        .iter()
        .flat_map(|r| ["export", "poll"].map(|m| (*r, m)))
    {
        let client = strings(&[
            "--mode",
            "latch",
            "--iterations",
            &sizes.latch_iterations.to_string(),
            "--size",
            "64",
        ]);
        let name = format!("latch-{mode}-{round}");
        if want(&name) {
            d.headless(&name, &["--implicit-wait", mode], &client, min(3));
        }
        // The floor under it, in the same round: the bare wake-up of the same source.
        let name = format!("floor-{mode}-{round}");
        if want(&name) {
            d.floor(&name, mode, sizes.latch_iterations);
        }
        // And what smithay and the bridge alone cost: the same client through the
        // library's minimal compositor (it exports a sync_file, as syncbridge's default).
        let name = format!("minimal-latch-{mode}-{round}");
        if mode == "export" && want(&name) {
            d.minimal_latch(&name, &minimal, &client, min(3));
        }
    }

    // Commit -> present and CPU per frame, syncbridge and Weston, same client.
    for &n in &sizes.client_counts {
        let client = sizes.frames_client(n);
        let name = format!("frames-syncbridge-{n}");
        if want(&name) {
            d.headless(&name, &[], &client, min(5));
        }
        let name = format!("frames-weston-{n}");
        if want(&name) {
            d.weston(&name, &client, min(5));
        }
    }

    // Bounds after many commits: the same buffer, and 4 rotating buffers (vgem dma-bufs, so
    // every commit goes through the bridge's export).
    for (label, buffers) in [("same", "1"), ("rotate", "4")] {
        let name = format!("bounds-{label}");
        if want(&name) {
            let client = strings(&[
                "--mode",
                "bounds",
                "--buffer-kind",
                "vgem",
                "--buffers",
                buffers,
                "--size",
                "64",
                "--commits",
                &sizes.bounds_commits.to_string(),
            ]);
            d.headless(&name, &[], &client, min(6));
        }
    }

    // Clients stalled on never-signalled fences.
    if want("stall") {
        let client = strings(&[
            "--mode",
            "stall",
            "--clients",
            &sizes.stall_clients.to_string(),
            "--queue",
            "1",
            "--size",
            "64",
        ]);
        d.headless("stall", &[], &client, min(3));
    }

    // Commit -> present, present -> present and CPU per frame on VKMS: syncbridge's tty
    // backend against sway 1.7 (wlroots, pixman) on the same card in the same boot, both
    // with presentation feedback from the page flip.
    if tty {
        if let Some(vkms) = &vkms {
            for (round, &n) in (1..=sizes.peer_rounds)
                .flat_map(|r| sizes.client_counts.iter().map(move |n| (r, n)))
            {
                for who in ["syncbridge", "sway"] {
                    let name = peer_scenario(who, n, round);
                    if want(&name) {
                        d.vkms_peer(who, &name, vkms, &sizes.frames_client(n), n);
                    }
                }
            }
            // The same scenarios once more under perf, outside the rounds.
            for &n in sizes.client_counts.iter().filter(|_| perf) {
                for who in ["syncbridge", "sway"] {
                    let name = format!("vkms-{who}-{n}@perf");
                    if want(&name) {
                        let client = sizes.frames_client(n);
                        d.under_perf(&name, |d| d.vkms_peer(who, &name, vkms, &client, n));
                    }
                }
            }
            // Presentation per plane path, one client each on the same tty backend: a
            // fullscreen dma-buf of the mode's size (primary plane), a small windowed
            // dma-buf nothing overlaps (overlay plane), and a windowed shm client
            // (composited).
            for (name, what) in PLANE_PATHS {
                if want(name) {
                    let client = sizes.plane_path_client(what);
                    d.syncbridge(
                        name,
                        &["seatd-launch", "--"],
                        &tty_args(vkms),
                        &client,
                        min(2),
                    );
                }
            }
        }
    }

    // Release lead time on VKMS: out-fence import (early) vs release at the page flip,
    // with 2 and 3 buffers. Only when the binary has the tty backend.
    if tty && !smoke {
        if let Some(vkms) = &vkms {
            let vkms_size =
                std::env::var("SYNCBRIDGE_BENCH_VKMS_SIZE").unwrap_or_else(|_| "1024x768".into());
            for mode in ["early", "flip"] {
                for buffers in ["2", "3"] {
                    let name = format!("tty-{mode}-{buffers}buf");
                    if !want(&name) {
                        continue;
                    }
                    let client = strings(&[
                        "--mode",
                        "frames",
                        "--buffer-kind",
                        "vgem",
                        "--buffers",
                        buffers,
                        // The VKMS mode's size, so the buffer can be scanned out directly.
                        "--size",
                        &vkms_size,
                        "--secs",
                        sizes.tty_secs,
                        "--warmup-secs",
                        "0.5",
                    ]);
                    let extra = vec![
                        "--backend".to_string(),
                        "tty".into(),
                        "--drm-device".into(),
                        vkms.display().to_string(),
                        "--release-mode".into(),
                        mode.into(),
                        // The chart of six consecutive buffers: early release before the
                        // flip, or release at the flip.
                        "--timeline".into(),
                        d.out
                            .join(format!("{name}.timeline.svg"))
                            .display()
                            .to_string(),
                    ];
                    d.syncbridge(&name, &["seatd-launch", "--"], &extra, &client, min(1));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&local);
    Ok(d.failed)
}

fn main() -> std::process::ExitCode {
    let start = Instant::now();
    match run() {
        Ok(failed) => {
            println!(
                "bench-driver: done in {:.1} s, {failed} scenario(s) failed",
                start.elapsed().as_secs_f64()
            );
            if failed == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("bench-driver: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
