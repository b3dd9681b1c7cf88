//! The `syncbridge` command line.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use crate::config::{CompositorConfig, FrameClockMode, RenderDeviceSelection};

/// Which backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Pick one for this machine (the startup log says which and why).
    Auto,
    /// A window inside an existing X11 or Wayland session.
    Nested,
    /// KMS on a TTY, through a libseat session.
    Tty,
    /// Virtual outputs paced by a timer, rendered offscreen.
    Headless,
}

/// `--implicit-wait`: how implicit (dma-buf) acquire fences are waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImplicitWaitArg {
    /// Export the dma-buf's write fences as a sync_file at commit time and wait for it.
    Export,
    /// Poll the dma-buf fd (smithay's `Dmabuf::generate_blocker`).
    Poll,
}

/// `--overlay-planes`: whether the tty backend uses overlay planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverlayPlanesArg {
    /// Windows that fit a plane go on overlay planes where the kernel accepts them.
    Auto,
    /// Every window is composited.
    Off,
}

/// `--late-latch`: when the tty backend's refresh cycle runs after a page flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LateLatchArg {
    /// As late before the vblank as the cycle's measured work allows.
    Auto,
    /// At the page flip.
    Off,
}

/// An output size, `WIDTHxHEIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSize {
    /// Width in pixels.
    pub width: i32,
    /// Height in pixels.
    pub height: i32,
}

fn parse_output_size(s: &str) -> Result<OutputSize, String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got {s:?}"))?;
    let parse = |v: &str| -> Result<i32, String> {
        let n: i32 = v
            .trim()
            .parse()
            .map_err(|e| format!("bad dimension {v:?}: {e}"))?;
        if (1..=16384).contains(&n) {
            Ok(n)
        } else {
            Err(format!("dimension {n} out of range 1..=16384"))
        }
    };
    Ok(OutputSize {
        width: parse(w)?,
        height: parse(h)?,
    })
}

fn parse_refresh_hz(s: &str) -> Result<f64, String> {
    let hz: f64 = s.parse().map_err(|e| format!("bad refresh {s:?}: {e}"))?;
    if hz.is_finite() && (1.0..=1000.0).contains(&hz) {
        Ok(hz)
    } else {
        Err(format!("refresh {hz} Hz out of range 1..=1000"))
    }
}

/// syncbridge: a Wayland compositor that bridges implicit and explicit GPU sync.
#[derive(Debug, Parser)]
#[command(name = "syncbridge", version, about, long_about = None)]
pub struct Cli {
    /// Backend to run.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,

    /// Name of the listening socket in $XDG_RUNTIME_DIR (default: first free wayland-N).
    #[arg(long, value_name = "NAME")]
    pub socket: Option<String>,

    /// Write one JSON object of statistics to PATH at exit.
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,

    /// Number of virtual outputs (headless backend).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub outputs: u32,

    /// Size of each virtual output.
    #[arg(long, value_name = "WxH", default_value = "1280x720", value_parser = parse_output_size)]
    pub output_size: OutputSize,

    /// Refresh rate of virtual outputs in millihertz.
    #[arg(long, value_name = "MHZ", conflicts_with = "refresh",
          value_parser = clap::value_parser!(u32).range(1_000..=1_000_000))]
    pub refresh_mhz: Option<u32>,

    /// Refresh rate of virtual outputs in hertz (default 60).
    #[arg(long, value_name = "HZ", value_parser = parse_refresh_hz)]
    pub refresh: Option<f64>,

    /// DRM node advertised as the linux-dmabuf main device (default: first render node,
    /// else first primary node; none means shm only).
    #[arg(long, value_name = "PATH")]
    pub render_device: Option<PathBuf>,

    /// Exit once an output has presented N frames.
    #[arg(long, value_name = "N")]
    pub exit_after_frames: Option<u64>,

    /// How to wait for implicit (dma-buf) acquire fences: export them as a sync_file at
    /// commit time (export), or poll the dma-buf as other smithay compositors do (poll;
    /// for comparisons).
    #[arg(long, value_enum, default_value_t = ImplicitWaitArg::Export)]
    pub implicit_wait: ImplicitWaitArg,

    /// Write a PNG of the first output to PATH at exit (and on SIGUSR1).
    #[arg(long, value_name = "PATH")]
    pub screenshot: Option<PathBuf>,

    /// Record every buffer's life (commit, acquire fence, applied, sampled, on and off a
    /// plane, released; atomic commits and page flips) and write, at exit, a chart of six
    /// consecutive buffers of one surface to PATH (SVG) and the records to PATH.json.
    #[arg(long, value_name = "PATH")]
    pub timeline: Option<PathBuf>,

    /// KMS device of the tty backend (default: the seat's primary GPU).
    #[arg(long, value_name = "PATH")]
    pub drm_device: Option<PathBuf>,

    /// Renderer of the tty and headless backends: GLES on the KMS device's GPU (tty) or
    /// the render device (headless) when EGL runs on a hardware driver there, else pixman
    /// (auto); or either by name.
    #[arg(long, value_enum, default_value_t = crate::backend::gpu_renderer::RendererChoice::Auto)]
    pub renderer: crate::backend::gpu_renderer::RendererChoice,

    /// tty backend: release scanned-out client buffers with the KMS out-fence before the
    /// page flip (early), at the page-flip event (flip), or early where supported (auto).
    #[arg(long, value_enum, default_value_t = crate::backend::tty::release::ReleaseMode::Auto)]
    pub release_mode: crate::backend::tty::release::ReleaseMode,

    /// tty backend: put windows whose buffer a plane can show as is (a dma-buf at scale 1,
    /// untransformed, overlapped by nothing above it) on overlay planes where the kernel
    /// accepts them (auto), or composite every window (off).
    #[arg(long, value_enum, default_value_t = OverlayPlanesArg::Auto)]
    pub overlay_planes: OverlayPlanesArg,

    /// tty backend: after a page flip, run the next refresh cycle as late before the
    /// vblank as its measured work allows, so client commits made meanwhile make that
    /// vblank (auto), or run it at the flip (off).
    #[arg(long, value_enum, default_value_t = LateLatchArg::Auto)]
    pub late_latch: LateLatchArg,

    /// tty backend, for testing error recovery: before every N-th frame commit, submit an
    /// extra page flip so that the kernel refuses that commit with EBUSY.
    #[arg(long, value_name = "N")]
    pub kms_inject_ebusy_every: Option<std::num::NonZeroU32>,

    /// tty backend, for testing error recovery: make the kernel refuse the real commit
    /// (after TEST_ONLY passed) of every frame that puts a client buffer on a plane.
    #[arg(long)]
    pub kms_inject_client_commit_failure: bool,

    /// tty backend, for testing error recovery: make the kernel refuse the real commit of
    /// every N-th composited frame.
    #[arg(long, value_name = "N")]
    pub kms_inject_composited_commit_failure_every: Option<std::num::NonZeroU32>,

    /// tty backend, for testing `--release-mode auto`: the out-fences of the first
    /// `--kms-inject-out-fence-lag-commits` commits signal this many ms after their page
    /// flip (merged with a vgem fence; needs a vgem device).
    #[arg(long, value_name = "MS", requires = "kms_inject_out_fence_lag_commits")]
    pub kms_inject_out_fence_lag_ms: Option<u32>,

    /// How many commits `--kms-inject-out-fence-lag-ms` lags.
    #[arg(long, value_name = "N", requires = "kms_inject_out_fence_lag_ms")]
    pub kms_inject_out_fence_lag_commits: Option<u32>,

    /// Seconds between stats lines in the log (0: off).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub stats_interval: u64,

    /// Command to run as a client; syncbridge exits with its exit status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

impl Cli {
    /// Refresh rate in millihertz from `--refresh-mhz` / `--refresh`, default 60 Hz.
    pub fn refresh_mhz(&self) -> u32 {
        match (self.refresh_mhz, self.refresh) {
            (Some(mhz), _) => mhz,
            // parse_refresh_hz bounds hz to 1..=1000, so this fits in u32.
            (None, Some(hz)) => (hz * 1000.0).round() as u32,
            (None, None) => 60_000,
        }
    }

    /// The compositor configuration this command line asks for.
    pub fn compositor_config(&self) -> CompositorConfig {
        CompositorConfig {
            outputs: CompositorConfig::headless_outputs(
                self.outputs,
                (self.output_size.width, self.output_size.height),
                self.refresh_mhz(),
            ),
            frame_clock: FrameClockMode::Timer,
            render_device: match &self.render_device {
                Some(path) => RenderDeviceSelection::Path(path.clone()),
                None => RenderDeviceSelection::Auto,
            },
            exit_after_frames: self.exit_after_frames,
            implicit_wait: match self.implicit_wait {
                ImplicitWaitArg::Export => syncbridge_protocols::ImplicitWait::Export,
                ImplicitWaitArg::Poll => syncbridge_protocols::ImplicitWait::Poll,
            },
            stats_log_interval: (self.stats_interval > 0)
                .then(|| Duration::from_secs(self.stats_interval)),
            // main() replaces this with what `--backend` resolves to on this machine.
            backend: crate::backend::BackendKind::Headless,
            tty: crate::backend::tty::TtyConfig {
                drm_device: self.drm_device.clone(),
                release_mode: self.release_mode,
                renderer: self.renderer,
                inject_ebusy_every: self.kms_inject_ebusy_every,
                inject_commit_faults: crate::backend::tty::commit_fault::CommitFaults {
                    client: self.kms_inject_client_commit_failure,
                    composited_every: self.kms_inject_composited_commit_failure_every,
                },
                inject_out_fence_lag: self
                    .kms_inject_out_fence_lag_ms
                    .zip(self.kms_inject_out_fence_lag_commits)
                    .map(|(ms, n)| (Duration::from_millis(u64::from(ms)), n)),
                overlay_planes: self.overlay_planes == OverlayPlanesArg::Auto,
                late_latch: self.late_latch == LateLatchArg::Auto,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_command_line() {
        let cli = Cli::try_parse_from([
            "syncbridge",
            "--backend",
            "headless",
            "--outputs",
            "2",
            "--output-size",
            "800x600",
            "--refresh",
            "30",
            "--",
            "weston-simple-shm",
            "-f",
        ])
        .expect("valid command line");
        assert_eq!(cli.backend, BackendChoice::Headless);
        assert_eq!(cli.refresh_mhz(), 30_000);
        assert_eq!(cli.command, ["weston-simple-shm", "-f"]);
        let config = cli.compositor_config();
        assert_eq!(config.outputs.len(), 2);
        assert_eq!(config.outputs[0].size, (800, 600));
    }

    #[test]
    fn rejects_bad_sizes_and_conflicting_refresh() {
        assert!(Cli::try_parse_from(["syncbridge", "--output-size", "800"]).is_err());
        assert!(Cli::try_parse_from(["syncbridge", "--output-size", "0x10"]).is_err());
        assert!(
            Cli::try_parse_from(["syncbridge", "--refresh", "60", "--refresh-mhz", "60000"])
                .is_err()
        );
    }
}
