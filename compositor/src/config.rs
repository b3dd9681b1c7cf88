//! What the compositor runs: outputs, frame clock, render device. Independent of the
//! command line so the test fixture can build one directly.

use std::{path::PathBuf, time::Duration};

/// One virtual output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputConfig {
    /// Connector-like name, e.g. `HEADLESS-1`.
    pub name: String,
    /// Mode size in physical pixels.
    pub size: (i32, i32),
    /// Refresh rate in millihertz (60 Hz = 60_000).
    pub refresh_mhz: u32,
}

impl OutputConfig {
    /// The refresh interval of this output's frame clock.
    pub fn refresh_interval(&self) -> Duration {
        refresh_interval(self.refresh_mhz)
    }
}

/// Interval of one refresh cycle at `refresh_mhz` millihertz (clamped to >= 1 mHz).
pub fn refresh_interval(refresh_mhz: u32) -> Duration {
    Duration::from_nanos(1_000_000_000_000 / u64::from(refresh_mhz.max(1)))
}

/// How frames are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameClockMode {
    /// A calloop timer per output fires at the refresh interval (the real thing).
    Timer,
    /// Nothing fires on its own: the owner calls [`crate::State::frame_tick`]. Used by
    /// the in-process test fixture to make frames deterministic.
    Manual,
}

/// Which DRM device to advertise as the dma-buf feedback main device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderDeviceSelection {
    /// First render node in `/dev/dri`, else the first primary node, else none.
    Auto,
    /// This node (a render node, or a primary node such as VKMS's card).
    Path(PathBuf),
    /// Do not use a DRM device: shm only.
    Disabled,
}

/// Everything [`crate::Server::new`] needs.
#[derive(Debug, Clone)]
pub struct CompositorConfig {
    /// Virtual outputs, laid out left to right.
    pub outputs: Vec<OutputConfig>,
    /// Frame pacing.
    pub frame_clock: FrameClockMode,
    /// DRM device for dma-buf feedback.
    pub render_device: RenderDeviceSelection,
    /// Stop the event loop once an output has presented this many frames.
    pub exit_after_frames: Option<u64>,
    /// How implicit (dma-buf) acquire fences are waited for (`--implicit-wait`).
    pub implicit_wait: syncbridge_protocols::ImplicitWait,
    /// Period of the info-level stats line in the log (`None`: never).
    pub stats_log_interval: Option<Duration>,
    /// Which backend runs (resolved from `--backend`).
    pub backend: crate::backend::BackendKind,
    /// Options of the tty backend (`--drm-device`, `--release-mode`).
    pub tty: crate::backend::tty::TtyConfig,
}

impl CompositorConfig {
    /// `count` outputs of the same size and refresh, named `HEADLESS-1..`.
    pub fn headless_outputs(count: u32, size: (i32, i32), refresh_mhz: u32) -> Vec<OutputConfig> {
        (1..=count.max(1))
            .map(|i| OutputConfig {
                name: format!("HEADLESS-{i}"),
                size,
                refresh_mhz,
            })
            .collect()
    }

    /// The configuration the in-process test fixture uses: one 640x480 60 Hz output,
    /// manual frame clock, no DRM device, no periodic log.
    pub fn for_tests() -> Self {
        Self {
            outputs: Self::headless_outputs(1, (640, 480), 60_000),
            frame_clock: FrameClockMode::Manual,
            render_device: RenderDeviceSelection::Disabled,
            exit_after_frames: None,
            implicit_wait: Default::default(),
            stats_log_interval: None,
            backend: crate::backend::BackendKind::Headless,
            tty: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_interval_of_60hz() {
        assert_eq!(refresh_interval(60_000), Duration::from_nanos(16_666_666));
        assert_eq!(refresh_interval(0), Duration::from_secs(1000));
    }

    #[test]
    fn output_names() {
        let outputs = CompositorConfig::headless_outputs(2, (100, 50), 30_000);
        assert_eq!(outputs[1].name, "HEADLESS-2");
        assert_eq!(outputs.len(), 2);
    }
}
