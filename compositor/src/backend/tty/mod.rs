//! The TTY backend: a libseat session, udev device discovery and hotplug, libinput, and
//! KMS presentation through our own atomic commits, each asking for an out-fence.
//!
//! Per output, one frame is in flight at a time: a page-flip event finishes the previous
//! commit and starts the next refresh cycle (render or pick a client buffer for direct
//! scanout, commit with `OUT_FENCE_PTR`, report the scanout transition to the fence
//! bridge, and only then release fifo and commit-timing barriers, so no client commit is
//! applied between a commit and its report). See [`release`] for when client buffers go
//! back to their clients.
//!
//! Layout: [`session`] (libseat, VT switches), [`udev`] (which device, hotplug),
//! [`input`] (libinput), [`kms`] (device, atomic requests, planes, outputs),
//! [`release`] (early vs at-flip release, stats), [`frame`] (the per-output cycle, on
//! [`State`](crate::State)), [`presentation`] (feedback and frame callbacks at the flip),
//! [`out_fence_delay`] (per CRTC, how long after the flip the out-fence signals),
//! [`cursor`] (the pointer's image) and `plane_cycle` (overlay and cursor planes in a
//! refresh cycle).

pub mod capture;
pub mod commit_fault;
pub mod cursor;
pub mod dmabuf_scanout;
mod fault;
pub mod frame;
pub mod handover;
pub mod input;
pub mod kms;
pub mod latch_deadline;
pub mod out_fence_delay;
pub mod out_fence_lag;
mod plane_cycle;
pub mod presentation;
pub mod release;
pub mod release_policy;
pub mod renderer;
pub mod scene_snapshot;
pub mod session;
pub mod shown_commits;
pub mod teardown;
pub mod udev;
pub mod vgem;

use std::{path::PathBuf, rc::Rc, time::Instant};

use smithay::{
    backend::{
        allocator::{dmabuf::Dmabuf, Format},
        renderer::{
            element::{
                Id, RenderElementPresentationState, RenderElementState, RenderElementStates,
            },
            sync::SyncPoint,
        },
        session::{libseat::LibSeatSession, Session},
    },
    desktop::{Space, Window},
    output::Output,
    reexports::{
        drm::control::{crtc, Device as _},
        wayland_server::{protocol::wl_surface::WlSurface, DisplayHandle},
    },
};
use syncbridge_bridge::{sync_file::monotonic_now_ns, SyncFile};
use syncbridge_protocols::BufferId;

use self::{
    kms::{
        atomic::{self, Modeset},
        device::KmsDevice,
        failed_commit::{self, Attempt, FailedCommitStats},
        in_fence::{InFenceStats, InFenceStub},
        planes::ClientFbCache,
        scanout::{ClientScanout, PendingFlip, ScanoutReport, Shown, TtyOutput},
    },
    release::{ActiveRelease, KmsStats, ReleaseMode},
    renderer::TtyRenderer,
};
use super::{gpu_renderer::RendererChoice, BackendError, RenderedFrame};

/// Background of the outputs (dark grey, opaque).
const CLEAR_COLOR: [f32; 4] = [0.1, 0.1, 0.12, 1.0];

/// Options of `--backend tty`.
#[derive(Debug, Clone, Default)]
pub struct TtyConfig {
    /// The KMS device (default: the seat's primary GPU).
    pub drm_device: Option<PathBuf>,
    /// When client buffers that were on a plane are released.
    pub release_mode: ReleaseMode,
    /// Which renderer composites (`--renderer`).
    pub renderer: RendererChoice,
    /// Testing: before every N-th frame commit, provoke a real EBUSY (see [`fault`]).
    pub inject_ebusy_every: Option<std::num::NonZeroU32>,
    /// Testing: real commits the kernel is made to refuse (see [`commit_fault`]).
    pub inject_commit_faults: commit_fault::CommitFaults,
    /// Testing: the out-fences of the first N commits signal this long after their flip
    /// (see [`out_fence_lag`]).
    pub inject_out_fence_lag: Option<(std::time::Duration, u32)>,
    /// Put windows on overlay planes where the kernel accepts them (`--overlay-planes`).
    pub overlay_planes: bool,
    /// Run each refresh cycle as late before the vblank as its measured work allows
    /// (`--late-latch`; see [`latch_deadline`]).
    pub late_latch: bool,
}

/// Errors of the TTY backend. Kernel errors keep their errno (`io::Error`).
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    /// libseat could not open a session.
    #[error("libseat session: {0} (run under seatd-launch, logind or seatd)")]
    Session(#[source] smithay::backend::session::libseat::Error),
    /// The session is not active (another VT is in front).
    #[error("the session is not active")]
    Inactive,
    /// The session could not open the device.
    #[error("opening {path}: {source}")]
    Open {
        /// Device path.
        path: String,
        /// Why.
        #[source]
        source: smithay::backend::session::libseat::Error,
    },
    /// udev failed.
    #[error("udev: {0}")]
    Udev(#[source] std::io::Error),
    /// No KMS device.
    #[error("no KMS device found on seat {0} (use --drm-device)")]
    NoDevice(String),
    /// A KMS ioctl failed.
    #[error("{what} on {path}: {source}")]
    Kms {
        /// What was attempted.
        what: &'static str,
        /// Device path.
        path: String,
        /// The kernel's answer (errno inside).
        #[source]
        source: std::io::Error,
    },
    /// A KMS object lacks a property atomic modesetting needs.
    #[error("missing KMS property {0}")]
    MissingProperty(&'static str),
    /// No connected connector.
    #[error("no connected connector on {0}")]
    NoOutputs(String),
    /// A connector has no mode.
    #[error("connector without modes")]
    NoMode,
    /// No free CRTC for a connector.
    #[error("no free CRTC for a connector")]
    NoCrtc,
    /// No primary plane for a CRTC.
    #[error("no primary plane for the CRTC")]
    NoPrimaryPlane,
    /// Making a framebuffer of a dumb buffer failed.
    #[error("framebuffer: {0}")]
    Framebuffer(String),
    /// Creating the pixman renderer failed.
    #[error("pixman: {0}")]
    Pixman(String),
    /// GLES was asked for by name and cannot run on this device.
    #[error("GLES: {0}")]
    Gles(#[source] super::gpu_renderer::GpuSetupError),
    /// Compositing a frame failed.
    #[error("render: {0}")]
    Render(String),
    /// Registering an event source failed.
    #[error("event loop: {0}")]
    Source(String),
    /// No output with this index, or it is gone.
    #[error("output #{0} is gone")]
    OutputGone(usize),
    /// A test's fault injection could not be set up.
    #[error("out-fence lag injection: {0}")]
    OutFenceLag(#[from] out_fence_lag::OutFenceLagError),
    /// The commit failed; presenting continues at the next cycle.
    #[error("atomic commit on {output}: {source}")]
    Commit {
        /// Output name.
        output: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
}

/// The TTY backend.
#[derive(Debug)]
pub struct TtyBackend {
    /// The libseat session.
    pub session: LibSeatSession,
    notifier: Option<smithay::backend::session::libseat::LibSeatSessionNotifier>,
    /// The KMS device.
    pub device: KmsDevice,
    /// The renderer and the allocator of its composition buffers.
    pub renderer: TtyRenderer,
    /// Outputs, in creation order (indices are stable; vanished ones stay, not alive).
    pub outputs: Vec<TtyOutput>,
    fbs: ClientFbCache,
    /// Release mode in effect.
    pub release: ActiveRelease,
    /// Whether `--release-mode auto` may switch each CRTC between early release and
    /// release at the flip as its out-fence delay goes (see [`release_policy`]).
    pub release_adaptive: bool,
    /// Whether the CRTCs have OUT_FENCE_PTR.
    pub out_fences: bool,
    /// Whether the session is active (we are master).
    pub active: bool,
    /// Counters.
    pub stats: KmsStats,
    /// A compositor-made, already-signalled fence for IN_FENCE_FD (see [`kms::in_fence`]).
    in_fence_stub: Option<InFenceStub>,
    /// Plane changes committed with and without IN_FENCE_FD (with: stub or render fence).
    in_fence_stats: InFenceStats,
    /// What refused real commits led to.
    failed_stats: FailedCommitStats,
    /// Presentation feedback sent at page flips, and the last flips.
    pub(crate) presentation: presentation::PresentationStats,
    /// Out-fences that had not signalled at their flip event, measured once they did.
    pub(crate) late_fences: Vec<out_fence_delay::LateFence>,
    /// libinput, to suspend it while the session is paused.
    pub(crate) libinput: Option<smithay::reexports::input::Libinput>,
    /// `--kms-inject-out-fence-lag-ms`.
    pub(crate) inject_lag: Option<out_fence_lag::OutFenceLag>,
    /// `--kms-inject-ebusy-every`.
    inject_busy: Option<fault::BusyInjector>,
    /// `--kms-inject-client-commit-failure`, `--kms-inject-composited-commit-failure-every`.
    inject_commit: Option<commit_fault::CommitFaultInjector>,
    /// A wake-up of idle outputs is in the idle queue.
    pub(crate) wake_queued: bool,
    /// Whether windows may go on overlay planes (`--overlay-planes`).
    overlays_enabled: bool,
    /// `--late-latch`, for outputs added later.
    late_latch: bool,
    /// Client buffers an overlay plane refused: composited from then on.
    overlay_refused: kms::overlay::Refused,
    /// The pointer for the next refresh cycle (set by the compositor before each render).
    pub cursor: Option<cursor::CursorView>,
    dh: DisplayHandle,
}

impl TtyBackend {
    /// Open the session and the device, create one output per connected connector.
    pub fn new(dh: &DisplayHandle, config: &TtyConfig) -> Result<Self, TtyError> {
        let (mut session, notifier) =
            smithay::backend::session::libseat::LibSeatSession::new().map_err(TtyError::Session)?;
        let seat = session.seat();
        tracing::info!(seat = %seat, active = session.is_active(), "libseat session");
        let path = udev::select_device(&seat, config.drm_device.as_deref())?;
        let fd = session
            .open(&path, KmsDevice::open_flags())
            .map_err(|source| TtyError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let device = KmsDevice::new(&path, fd)?;
        let res = device
            .fd
            .resource_handles()
            .map_err(|source| TtyError::Kms {
                what: "reading resources",
                path: path.display().to_string(),
                source,
            })?;
        let mut renderer = TtyRenderer::new(config.renderer, &device)?;
        match renderer.gpu_info() {
            Some(gpu) => tracing::info!(
                renderer = "gles",
                gl_renderer = %gpu.gl_renderer,
                gl_version = %gpu.gl_version,
                render_node = ?gpu.render_node,
                native_fences = gpu.native_fences,
                reason = %renderer.reason,
                "tty: renderer: GLES on {}{}",
                path.display(),
                if gpu.native_fences {
                    ": render fences go to IN_FENCE_FD and into the buffers each frame sampled"
                } else {
                    ": no EGL_ANDROID_native_fence_sync, sampled buffers are held until the render is done"
                }
            ),
            None => {
                tracing::info!(renderer = "pixman", reason = %renderer.reason, "tty: renderer: pixman (CPU)")
            }
        }
        let mut outputs: Vec<TtyOutput> = Vec::new();
        let mut x = 0;
        for conn in kms::scanout::connected(&device, &res) {
            let used: Vec<crtc::Handle> = outputs.iter().map(|o| o.crtc).collect();
            let used_planes: Vec<_> = outputs.iter().flat_map(|o| o.planes()).collect();
            match kms::scanout::create_output(
                &device,
                &res,
                &conn,
                kms::scanout::Taken {
                    crtcs: &used,
                    planes: &used_planes,
                    overlays: config.overlay_planes,
                },
                &mut renderer,
                dh,
                x,
            ) {
                Ok(out) => {
                    x += i32::try_from(out.size().0).unwrap_or(0);
                    outputs.push(out);
                }
                Err(err) => tracing::warn!(connector = ?conn.handle(), %err, "connector skipped"),
            }
        }
        if outputs.is_empty() {
            return Err(TtyError::NoOutputs(path.display().to_string()));
        }
        let out_fences = outputs.iter().all(|o| o.crtc_props.out_fence_ptr.is_some());
        // Before any commit: our own buffers hold no fence yet.
        let in_fence_stub = kms::in_fence::make(
            outputs
                .first()
                .and_then(|o| o.slots.first())
                .map(|s| &s.dmabuf),
        );
        let import = syncbridge_bridge::dmabuf::DmabufFenceSupport::probe().is_supported();
        let (release, why) = release::resolve(config.release_mode, out_fences, import);
        tracing::info!(
            device = %path.display(),
            driver = %device.driver,
            outputs = outputs.len(),
            "tty: KMS device"
        );
        tracing::info!(
            out_fences,
            in_fence_fd = outputs.iter().all(|o| o.plane_props.in_fence_fd.is_some()),
            in_fence_stub = in_fence_stub.as_ref().map_or("none", |s| s.source.name()),
            dmabuf_fence_import = import,
            "tty: sync features: every commit requests OUT_FENCE_PTR{}",
            if out_fences {
                ""
            } else {
                " (not available on this driver)"
            }
        );
        tracing::info!(mode = release.name(), reason = %why, "tty: release of scanned-out buffers");
        for out in &outputs {
            tracing::info!(
                output = %out.output.name(),
                overlay_planes = out.overlays.len(),
                cursor_plane = out.cursor.as_ref().map(|c| format!("{}x{}", c.size().0, c.size().1)),
                "tty: planes: {}",
                if config.overlay_planes {
                    "windows whose buffer a plane shows as is go on the overlay planes (TEST_ONLY decides), the pointer on the cursor plane"
                } else {
                    "overlay planes off (--overlay-planes off): windows are composited; the pointer on the cursor plane"
                }
            );
        }
        let release_adaptive =
            config.release_mode == ReleaseMode::Auto && release == ActiveRelease::Early;
        for out in &mut outputs {
            out.release = release_policy::ReleasePolicy::new(release, release_adaptive);
            out.latch = latch_deadline::LatchDeadline::new(config.late_latch);
        }
        if config.late_latch {
            tracing::info!(
                window = latch_deadline::WINDOW,
                slack_us = latch_deadline::SLACK.as_micros() as u64,
                "tty: late latching: after a page flip the next cycle waits until the 90th percentile of its last cycles plus slack before the vblank, so commits made meanwhile make that vblank (at the flip until measured; back-off on missed vblanks)"
            );
        } else {
            tracing::info!(
                "tty: late latching off (--late-latch off): each cycle runs at its page flip"
            );
        }
        if release_adaptive {
            tracing::info!(
                window = release_policy::DECIDE_WINDOW,
                "tty: release mode per CRTC: at the flip while the out-fence's median delay after the flip exceeds refresh/{}, early again under refresh/{}",
                release_policy::LAG_DIVISOR,
                release_policy::RECOVER_DIVISOR
            );
        }
        let inject_lag = match config.inject_out_fence_lag {
            Some((lag, commits)) => Some(out_fence_lag::OutFenceLag::open(lag, commits)?),
            None => None,
        };
        if let Some(n) = config.inject_ebusy_every {
            tracing::warn!(
                every = n,
                "tty: testing: provoking EBUSY before every {n}th frame commit"
            );
        }
        if let Some(stub) = &in_fence_stub {
            tracing::info!(
                source = stub.source.name(),
                "tty: IN_FENCE_FD carries a signalled stub exported from our {}: the kernel ignores client buffers' implicit fences",
                stub.source.name()
            );
        }
        let faults = config.inject_commit_faults;
        if faults.any() {
            tracing::warn!(
                client = faults.client,
                composited_every = faults.composited_every,
                "tty: testing: making the kernel refuse real commits (read-only OUT_FENCE_PTR)"
            );
        }
        let inject_commit =
            commit_fault::CommitFaultInjector::new(faults).map_err(|e| TtyError::Kms {
                what: "mapping the fault injector's page",
                path: path.display().to_string(),
                source: e,
            })?;
        let active = session.is_active();
        Ok(Self {
            session,
            notifier: Some(notifier),
            device,
            renderer,
            outputs,
            fbs: ClientFbCache::default(),
            release,
            release_adaptive,
            out_fences,
            active,
            stats: KmsStats::default(),
            in_fence_stub,
            in_fence_stats: InFenceStats::default(),
            failed_stats: FailedCommitStats::default(),
            presentation: presentation::PresentationStats::default(),
            late_fences: Vec::new(),
            libinput: None,
            inject_lag,
            inject_busy: config.inject_ebusy_every.map(fault::BusyInjector::new),
            inject_commit,
            wake_queued: false,
            overlays_enabled: config.overlay_planes,
            late_latch: config.late_latch,
            overlay_refused: kms::overlay::Refused::default(),
            cursor: None,
            dh: dh.clone(),
        })
    }

    /// The outputs.
    pub fn outputs(&self) -> Vec<Output> {
        self.outputs.iter().map(|o| o.output.clone()).collect()
    }

    /// Index of the output driven by `crtc`.
    pub fn output_index(&self, crtc: crtc::Handle) -> Option<usize> {
        self.outputs.iter().position(|o| o.alive && o.crtc == crtc)
    }

    /// dma-buf formats the compositor uses (composition needs pixman to read them).
    pub fn dmabuf_formats(&self) -> Vec<Format> {
        self.renderer.dmabuf_formats()
    }

    /// Check a client dma-buf at creation (without mapping it).
    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<(), BackendError> {
        self.renderer.check_dmabuf(dmabuf)
    }

    /// The `kms` section of `--stats-json`.
    pub fn stats_json(&self) -> serde_json::Value {
        let mut json = self.stats.json(
            &self.device.path.display().to_string(),
            &self.device.driver,
            self.release,
            self.out_fences,
        );
        json["failed_commits"] = self.failed_stats.json();
        json["presentation"] = self.presentation.json();
        json["out_fence_delay_per_crtc"] = self
            .outputs
            .iter()
            .map(|o| {
                o.out_fence_delay
                    .json(&o.output.name(), u32::from(o.crtc), &o.release)
            })
            .collect();
        let alive = self.outputs.iter().filter(|o| o.alive);
        json["overlay_planes"] =
            serde_json::json!(alive.clone().map(|o| o.overlays.len()).sum::<usize>());
        json["cursor_planes"] = serde_json::json!(alive.filter(|o| o.cursor.is_some()).count());
        json["late_latch_per_output"] = self
            .outputs
            .iter()
            .map(|o| o.latch.json(&o.output.name(), o.clock.refresh()))
            .collect();
        json["injected_out_fence_lags"] =
            serde_json::json!(self.inject_lag.as_ref().map_or(0, |i| i.injected));
        json["injected_commit_failures"] =
            serde_json::json!(self.inject_commit.as_ref().map_or(0, |i| i.injected()));
        json["in_fence"] = serde_json::json!({
            "stub": self.in_fence_stub.as_ref().map(|s| s.source.name()),
            "plane_commits_with_in_fence": self.in_fence_stats.with,
            "plane_commits_without_in_fence": self.in_fence_stats.without,
            "plane_commits_with_render_fence": self.in_fence_stats.render_fences,
        });
        json["renderer"] = serde_json::json!({
            "name": self.renderer.name(),
            "reason": self.renderer.reason,
            "gpu": self.renderer.gpu_info(),
            "cpu_waits_before_commit": self.stats.render_cpu_waits,
        });
        json
    }

    /// One refresh cycle of output `index`: direct scanout or composition, then the atomic
    /// commit. `buffer_id` is the fence bridge's id of a surface's current buffer: a client
    /// buffer's id is taken when it is picked for the plane. The scanout transition waits
    /// in the output's `report` for [`State::tty_report_commit`](crate::State), which
    /// must run before any client commit can be applied.
    pub fn render(
        &mut self,
        index: usize,
        space: &Space<Window>,
        buffer_id: &dyn Fn(&WlSurface) -> Option<BufferId>,
    ) -> Result<RenderedFrame, BackendError> {
        let rendered = self.render_cycle(index, space, buffer_id);
        if rendered.is_err() {
            // What this cycle drew (or meant to) may not be on screen: the next cycle
            // must not skip its composition for want of a change.
            if let Some(out) = self.outputs.get_mut(index) {
                out.last_scene = None;
                out.scene_changed = true;
            }
        }
        rendered
    }

    /// [`Self::render`], without the clean-up after an error.
    fn render_cycle(
        &mut self,
        index: usize,
        space: &Space<Window>,
        buffer_id: &dyn Fn(&WlSurface) -> Option<BufferId>,
    ) -> Result<RenderedFrame, BackendError> {
        if !self.active {
            return Err(TtyError::Inactive.into());
        }
        let Self {
            device,
            renderer,
            outputs,
            fbs,
            stats,
            in_fence_stub,
            in_fence_stats,
            failed_stats,
            inject_busy,
            inject_commit,
            inject_lag,
            overlays_enabled,
            overlay_refused,
            cursor,
            ..
        } = self;
        let signalled_stub = in_fence_stub.as_ref().map(|s| &s.fence);
        let out = outputs
            .get_mut(index)
            .filter(|o| o.alive)
            .ok_or(TtyError::OutputGone(index))?;
        // Whatever happens from here on (commits applied when the barriers are released
        // after this render) wakes the output again.
        out.scene_changed = false;
        let modeset = out.needs_modeset;
        let size = out.size();
        let modeset_part = if modeset {
            match out.mode_blob {
                Some(mode_blob) => Some(Modeset {
                    connector: out.connector,
                    connector_crtc_id: out.connector_crtc_id,
                    mode_blob,
                }),
                None => return Err(TtyError::MissingProperty("MODE_ID blob").into()),
            }
        } else {
            None
        };

        // Direct scanout?
        let mut chosen: Option<(kms::planes::Candidate, Rc<kms::planes::ClientFb>)> = None;
        fbs.cleanup();
        if let Some(c) = kms::planes::candidate(space, &out.output, size, buffer_id) {
            if let Some(fb) = fbs.get(&device.fd, &c.dmabuf) {
                let already = matches!(&out.shown, Shown::Client(s) if Rc::ptr_eq(&s.fb, &fb));
                if already && !modeset {
                    chosen = Some((c, fb));
                } else {
                    let req = out.request(modeset_part, Some(fb.fb), false, signalled_stub)?;
                    match atomic::test(&device.fd, req, modeset) {
                        Ok(()) => chosen = Some((c, fb)),
                        Err(err) => {
                            stats.test_only_failures += 1;
                            tracing::info!(%err, "TEST_ONLY refused a client buffer on the primary plane; compositing it");
                            fbs.refuse(&c.dmabuf);
                        }
                    }
                }
            }
        }

        // Overlay planes: none with a client buffer on the primary (it covers the output),
        // and a modeset sets every plane again.
        overlay_refused.cleanup();
        let overlay_candidates = if *overlays_enabled && chosen.is_none() && !modeset {
            kms::overlay::candidates(space, &out.output, out.overlays.len(), buffer_id)
        } else {
            Vec::new()
        };
        let overlay_plan = kms::overlay::plan(
            device,
            fbs,
            overlay_refused,
            &out.overlays,
            out.crtc,
            overlay_candidates,
            chosen.is_some(),
            modeset,
            &mut stats.overlay_test_failures,
        );
        // Re-commits of buffers that stay on an overlay: read from now on.
        let mut overlay_rereads = Vec::new();
        let mut on_overlays: Vec<(WlSurface, usize)> = Vec::new();
        for (plane, a) in out.overlays.iter_mut().zip(&overlay_plan) {
            match a {
                kms::overlay::Assignment::Keep { reread, commit } => {
                    if let Some((shown, dst)) = plane.shown.as_mut() {
                        if let Some(id) = reread {
                            shown.ids.push(*id);
                            overlay_rereads.push(*id);
                        }
                        if let Some(commit) = commit {
                            shown.commit = *commit;
                        }
                        on_overlays.push((shown.surface.clone(), plane_cycle::area(dst.size)));
                    }
                }
                kms::overlay::Assignment::Show { candidate, dst, .. } => {
                    on_overlays.push((candidate.surface.clone(), plane_cycle::area(dst.size)));
                }
                kms::overlay::Assignment::Clear | kms::overlay::Assignment::Idle => {}
            }
        }
        let overlays_change = overlay_plan.iter().any(|a| a.changes());
        let cursor_plan =
            plane_cycle::plan_cursor(device, out, cursor.as_ref(), space, modeset, stats);

        let mut states = RenderElementStates::default();
        let mut sync = SyncPoint::signaled();
        // A composited frame's render fence, for IN_FENCE_FD (GLES with native fences).
        let mut render_fence: Option<SyncFile> = None;
        // A re-commit of the client buffer that stays on the plane: the plane reads this
        // attachment too, from now on (whether or not this cycle commits).
        let mut reread = None;
        // The client buffer this cycle puts on the plane (refused for scanout if the
        // kernel refuses the real commit; see [`kms::failed_commit`]).
        let mut placed_client: Option<Dmabuf> = None;
        let (new_shown, fb, damaged) = match chosen {
            Some((c, fb)) => {
                let same = matches!(&out.shown, Shown::Client(s) if Rc::ptr_eq(&s.fb, &fb));
                let mut recommitted = false;
                if let (true, Shown::Client(s)) = (same, &mut out.shown) {
                    if let Some(id) = c.id.filter(|id| !s.ids.contains(id)) {
                        s.ids.push(id);
                        reread = Some(id);
                    }
                    recommitted = s.commit != c.commit;
                    s.commit = c.commit;
                }
                states.states.insert(
                    Id::from_wayland_resource(&c.surface),
                    RenderElementState {
                        visible_area: (size.0 as usize) * (size.1 as usize),
                        presentation_state: RenderElementPresentationState::ZeroCopy,
                    },
                );
                // A re-commit of the buffer on the plane is committed again too: the
                // client's presentation feedback and frame callbacks follow a flip.
                let plane_fb = (!same || modeset || recommitted).then_some(fb.fb);
                if plane_fb.is_some() {
                    placed_client = Some(c.dmabuf.clone());
                }
                let shown = (!same).then(|| Shown::Client(ClientScanout::new(&c, fb.clone())));
                (shown, plane_fb, !same || recommitted)
            }
            None => {
                // Composite into the buffer that is not on screen.
                let on_screen = match &out.shown {
                    Shown::Composited(i) => Some(*i),
                    _ => None,
                };
                let slot_index = (0..out.slots.len())
                    .find(|i| Some(*i) != on_screen)
                    .unwrap_or(0);
                let render_count = out.render_count + 1;
                let slot = &mut out.slots[slot_index];
                let age = if slot.rendered_at == 0 {
                    0
                } else {
                    usize::try_from(render_count - slot.rendered_at).unwrap_or(0)
                };
                let on_planes: Vec<Id> = on_overlays
                    .iter()
                    .map(|(s, _)| Id::from_wayland_resource(s))
                    .collect();
                let composited = renderer.composite(
                    &mut out.slots[slot_index].dmabuf,
                    &mut out.damage_tracker,
                    &mut out.last_scene,
                    on_screen.is_some() && !modeset,
                    age,
                    space,
                    &out.output,
                    &on_planes,
                )?;
                if composited.rendered {
                    out.render_count = render_count;
                    out.slots[slot_index].rendered_at = render_count;
                } else {
                    stats.composites_skipped += 1;
                }
                sync = composited.sync;
                render_fence = composited.in_fence;
                if composited.cpu_waited {
                    stats.render_cpu_waits += 1;
                }
                if composited.held_back {
                    out.scene_changed = true;
                }
                let rendered = composited.states;
                let damage = composited.damaged.then_some(());
                states = rendered;
                let damaged = damage.is_some() || on_screen.is_none();
                if damaged || modeset {
                    (
                        Some(Shown::Composited(slot_index)),
                        Some(out.slots[slot_index].fb.handle()),
                        damaged,
                    )
                } else {
                    // The slot on screen already shows this: no flip.
                    (None, None, false)
                }
            }
        };
        let direct = matches!(new_shown.as_ref().unwrap_or(&out.shown), Shown::Client(_));
        // Windows on overlay planes: shown without a copy (presentation feedback's
        // zero_copy), not sampled by the render.
        for (surface, visible_area) in &on_overlays {
            states.states.insert(
                Id::from_wayland_resource(surface),
                RenderElementState {
                    visible_area: *visible_area,
                    presentation_state: RenderElementPresentationState::ZeroCopy,
                },
            );
        }
        let rereads: Vec<BufferId> = reread.into_iter().chain(overlay_rereads).collect();
        let planes_change =
            overlays_change || !matches!(cursor_plan, kms::cursor::CursorPlan::Keep);

        if fb.is_none() && modeset_part.is_none() && !planes_change {
            // Nothing new for the display: no commit, no flip. The output idles until a
            // client request wakes it; a buffer re-committed while on the plane is read
            // from now on (no fence: it was on screen already).
            out.report = Some(ScanoutReport {
                shown: rereads,
                ..Default::default()
            });
            out.idle = true;
            stats.idle_cycles += 1;
            return Ok(RenderedFrame {
                output: out.output.clone(),
                damaged: false,
                states,
                sync,
            });
        }
        // The kernel waits for a composited frame's render (its fence as IN_FENCE_FD);
        // otherwise the signalled stub makes it ignore client buffers' implicit fences.
        let in_fence = render_fence.as_ref().or(signalled_stub);
        let mut req = match out.request(modeset_part, fb, true, in_fence) {
            Ok(req) => req,
            Err(err) => {
                // No commit; re-committed buffers that stay on their planes are read still.
                out.report = Some(ScanoutReport {
                    shown: rereads,
                    ..Default::default()
                });
                return Err(err.into());
            }
        };
        plane_cycle::add_planes(&mut req, out, &overlay_plan, cursor_plan, signalled_stub);
        if let (Some(injector), false) = (inject_busy.as_mut(), modeset) {
            injector.before_commit(device, out, stats);
        }
        let composited_fb = fb.is_some() && !direct;
        if let (Some(injector), false) = (inject_commit.as_mut(), modeset) {
            injector.poison(out, &mut req, placed_client.is_some(), composited_fb);
        }
        let committed_at = Instant::now();
        tracing::trace!(output = %out.output.name(), modeset, direct, ?fb, "atomic commit");
        let mut committed = device.fd.atomic_commit(atomic::commit_flags(modeset), req);
        if committed
            .as_ref()
            .is_err_and(|e| matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)))
        {
            // Out of fds: the kernel refuses a commit whose OUT_FENCE_PTR it cannot fill.
            // Commit without it rather than freeze the output until fds come back; this
            // frame's replaced buffer then goes back at the page-flip event (no fence).
            let _ = out.out_fence_slot.take();
            if let Ok(mut req) = out.request(modeset_part, fb, false, in_fence) {
                plane_cycle::add_planes(&mut req, out, &overlay_plan, cursor_plan, signalled_stub);
                stats.commits_without_out_fence += 1;
                let times = stats.commits_without_out_fence;
                // While fds stay exhausted this happens every frame: warn at 1, 2, 4, 8...
                if times.is_power_of_two() {
                    tracing::warn!(
                        output = %out.output.name(),
                        times,
                        "out of fds for the out-fence: committing without it (release at the flip)"
                    );
                }
                committed = device.fd.atomic_commit(atomic::commit_flags(modeset), req);
            }
        }
        if let Err(source) = committed {
            stats.commit_errors += 1;
            if source.raw_os_error() == Some(libc::EBUSY) {
                stats.commit_ebusy += 1;
            }
            // Nothing changed on screen: our clones stay, the candidate's is dropped (it
            // never reached the plane: no reader to report). A re-committed buffer that
            // stays on the plane is read all the same.
            let _ = out.out_fence_slot.take();
            let attempt = match &placed_client {
                Some(dmabuf) => Attempt::Client(dmabuf),
                None if composited_fb => Attempt::Composited,
                None => Attempt::Other,
            };
            failed_commit::after_refused_commit(out, fbs, attempt, &source, failed_stats);
            // Buffers this commit put on overlay planes are composited from now on.
            for a in &overlay_plan {
                if let kms::overlay::Assignment::Show { candidate, .. } = a {
                    overlay_refused.insert(&candidate.dmabuf);
                }
            }
            out.report = Some(ScanoutReport {
                shown: rereads,
                ..Default::default()
            });
            return Err(TtyError::Commit {
                output: out.output.name(),
                source,
            }
            .into());
        }
        stats.commits += 1;
        if fb.is_some() {
            if in_fence.is_some() && out.plane_props.in_fence_fd.is_some() {
                in_fence_stats.with += 1;
                if render_fence.is_some() {
                    in_fence_stats.render_fences += 1;
                }
            } else {
                in_fence_stats.without += 1;
            }
        }
        if direct {
            stats.direct_scanout_frames += 1;
        } else {
            stats.composited_frames += 1;
        }
        out.needs_modeset = false;
        let out_fence = match out.out_fence_slot.take() {
            Ok(f) => f,
            Err(err) => {
                tracing::warn!(%err, "out-fence unusable");
                None
            }
        };
        let (out_fence, lag_fence) = match (out_fence, inject_lag.as_mut()) {
            (Some(fence), Some(injector)) => {
                let (fence, id) = injector.lag(fence);
                (Some(fence), id)
            }
            (fence, _) => (fence, None),
        };
        syncbridge_protocols::timeline::atomic_commit(index as u64, out_fence.is_some());
        if out_fence.is_some() {
            stats.out_fences += 1;
        }
        // The fence goes with the report; [`State::tty_report_commit`] gives the flip its
        // share (for the delay after the flip, and whether it had signalled by now).
        let mut pending = PendingFlip {
            out_fence_committed_ns: monotonic_now_ns(),
            committed_at: Some(committed_at),
            lag_fence,
            ..Default::default()
        };
        let mut report = ScanoutReport {
            out_fence,
            shown: rereads,
            ..Default::default()
        };
        plane_cycle::commit_planes(
            out,
            overlay_plan,
            cursor_plan,
            &mut report,
            &mut pending,
            stats,
        );
        if let Some(new) = new_shown {
            if let Shown::Client(c) = &new {
                report.shown.extend(c.ids.iter().copied());
            }
            match std::mem::replace(&mut out.shown, new) {
                Shown::Client(old) => {
                    report.no_longer_shown.push((old.ids, old.buffer));
                    pending.retiring.push(old.fb);
                }
                Shown::Composited(_) | Shown::Nothing => {}
            }
        }
        out.pending = Some(pending);
        out.report = Some(report);
        Ok(RenderedFrame {
            output: out.output.clone(),
            // A new frame on screen: composited, or a window's buffer on a plane.
            damaged: damaged || modeset || overlays_change,
            states,
            sync,
        })
    }

    /// The session went away (VT switch): stop committing.
    pub fn pause(&mut self) {
        self.active = false;
        self.stats.session_pauses += 1;
    }

    /// The session is back: every output needs a modeset.
    pub fn resume(&mut self) {
        self.active = true;
        for out in &mut self.outputs {
            out.needs_modeset = true;
        }
    }

    pub(crate) fn take_notifier(
        &mut self,
    ) -> Option<smithay::backend::session::libseat::LibSeatSessionNotifier> {
        self.notifier.take()
    }

    pub(crate) fn display_handle(&self) -> &DisplayHandle {
        &self.dh
    }
}
