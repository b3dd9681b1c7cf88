//! One output of the TTY backend: connector, CRTC, primary, overlay and cursor planes, mode, our own dumb
//! buffers to composite into, and what the screen currently shows.

use std::{
    rc::Rc,
    time::{Duration, Instant},
};

use smithay::{
    backend::renderer::{damage::OutputDamageTracker, utils::Buffer},
    output::{Mode as OutputMode, Output, PhysicalProperties, Subpixel},
    reexports::{
        drm::control::{
            atomic::AtomicModeReq, connector, crtc, framebuffer, plane, property, Device as _,
            Mode, ResourceHandles,
        },
        wayland_server::{backend::GlobalId, protocol::wl_surface::WlSurface, DisplayHandle},
    },
    utils::Transform,
};
use syncbridge_bridge::{kms::OutFenceSlot, SyncFile};
use syncbridge_protocols::BufferId;

use super::{
    atomic::{CommitPlan, CrtcProps, Modeset},
    cursor::CursorPlane,
    device::{KmsDevice, PropMap},
    overlay::OverlayPlane,
    planes::ClientFb,
};
use crate::{
    backend::tty::{
        handover::Handover,
        out_fence_delay::OutFenceDelay,
        release_policy::ReleasePolicy,
        renderer::{Slot, TtyRenderer},
        scene_snapshot::LastScene,
        TtyError,
    },
    frame_clock::FrameClock,
    state::State,
};

/// Handles of a plane's properties.
#[derive(Debug, Clone)]
pub struct PlaneProps {
    pub fb_id: property::Handle,
    pub crtc_id: property::Handle,
    pub src_x: property::Handle,
    pub src_y: property::Handle,
    pub src_w: property::Handle,
    pub src_h: property::Handle,
    pub crtc_x: property::Handle,
    pub crtc_y: property::Handle,
    pub crtc_w: property::Handle,
    pub crtc_h: property::Handle,
    /// IN_FENCE_FD, when the driver has it.
    pub in_fence_fd: Option<property::Handle>,
}

impl PlaneProps {
    /// Look up the properties of a plane.
    pub fn new(p: &PropMap) -> Result<Self, TtyError> {
        Ok(Self {
            fb_id: p.require("FB_ID")?,
            crtc_id: p.require("CRTC_ID")?,
            src_x: p.require("SRC_X")?,
            src_y: p.require("SRC_Y")?,
            src_w: p.require("SRC_W")?,
            src_h: p.require("SRC_H")?,
            crtc_x: p.require("CRTC_X")?,
            crtc_y: p.require("CRTC_Y")?,
            crtc_w: p.require("CRTC_W")?,
            crtc_h: p.require("CRTC_H")?,
            in_fence_fd: p.get("IN_FENCE_FD"),
        })
    }
}

/// What a committed frame shows on the primary plane.
#[derive(Debug)]
pub enum Shown {
    /// Nothing yet.
    Nothing,
    /// One of our composition buffers.
    Composited(usize),
    /// A client buffer, scanned out directly.
    Client(ClientScanout),
}

/// A client buffer on the plane: our clone of smithay's `Buffer` keeps the client from
/// getting `wl_buffer.release` while the display reads it.
#[derive(Debug)]
pub struct ClientScanout {
    /// Its surface.
    pub surface: WlSurface,
    /// Our clone.
    pub buffer: Buffer,
    /// The bridge's ids: the one the buffer had when the plane was assigned, plus one per
    /// later re-commit of the same buffer while it stays there (each a reader until the
    /// buffer leaves the plane). Recorded in the cycle that assigns or keeps the plane,
    /// never looked up afterwards.
    pub ids: Vec<BufferId>,
    /// Its framebuffer (kept until the flip that stops showing it).
    pub fb: Rc<ClientFb>,
    /// The surface's commit counter when the plane last took this buffer: a later
    /// commit (the buffer attached again) is committed to KMS again, so its presentation
    /// feedback and frame callbacks follow a flip.
    pub commit: smithay::backend::renderer::utils::CommitCounter,
}

impl ClientScanout {
    /// `candidate`'s buffer, shown from `fb` (its id is the plane's first reader).
    pub fn new(candidate: &super::planes::Candidate, fb: Rc<ClientFb>) -> Self {
        Self {
            surface: candidate.surface.clone(),
            buffer: candidate.buffer.clone(),
            ids: candidate.id.into_iter().collect(),
            commit: candidate.commit,
            fb,
        }
    }
}

/// The bridge's ids of client buffers planes held, in order.
pub fn ids_of(held: &[(Vec<BufferId>, Buffer)]) -> Vec<BufferId> {
    held.iter()
        .flat_map(|(ids, _)| ids.iter().copied())
        .collect()
}

/// An atomic commit waiting for its page-flip event.
#[derive(Debug, Default)]
pub struct PendingFlip {
    /// Its out-fence, given by [`State::tty_report_commit`](crate::State): a clone when
    /// the bridge got it too (early release), else the commit's own.
    pub out_fence: Option<syncbridge_bridge::SyncFile>,
    /// CLOCK_MONOTONIC ns right after the commit ioctl returned: an out-fence whose signal
    /// time is not later had signalled by then (the display flipped at once).
    pub out_fence_committed_ns: u64,
    /// CLOCK_MONOTONIC ns at which early releases of this commit were sent.
    pub released_at_ns: Vec<u64>,
    /// Client buffers to release at the flip (fallback mode).
    pub release_at_flip: Vec<(Vec<BufferId>, Buffer)>,
    /// Framebuffers to destroy once the flip completed.
    pub retiring: Vec<Rc<ClientFb>>,
    /// When the commit was made.
    pub committed_at: Option<Instant>,
    /// CLOCK_MONOTONIC ns at which the refresh cycle that made the commit started (before
    /// the commit ioctl): its page-flip event's vblank is never earlier.
    pub cycle_started_ns: u64,
    /// The presentation feedback of the surfaces this commit shows, sent at its page-flip
    /// event (see [`presentation`](crate::backend::tty::presentation)); set right after
    /// the render.
    pub feedback: Option<crate::backend::tty::presentation::FlipFeedback>,
    /// Testing: the vgem fence merged into the out-fence, signalled after the flip (see
    /// [`out_fence_lag`](crate::backend::tty::out_fence_lag)).
    pub lag_fence: Option<u32>,
    /// A cycle that waited for its deadline: the vblank sequence of the flip that
    /// started it (its commit should flip at the next one).
    pub latched_after_seq: Option<u32>,
    /// Such a cycle's commit ioctl returned this long before the vblank it aimed for
    /// (`None`: not before it, or no such cycle).
    pub latched_in_time: Option<Duration>,
    /// Each drawn surface's commit this commit shows (its flip calls back only those
    /// that did not commit since).
    pub shown_commits: crate::backend::tty::shown_commits::ShownCommits,
}

/// The transition a refresh cycle made, for the bridge: filled by the backend's render
/// with the ids captured when the plane was assigned, and handed to the bridge right after
/// the render, before anything can apply a client commit
/// ([`State::tty_report_commit`](crate::State::tty_report_commit)).
#[derive(Debug, Default)]
pub struct ScanoutReport {
    /// The commit's out-fence.
    pub out_fence: Option<syncbridge_bridge::SyncFile>,
    /// Ids the plane starts reading: the client buffer this commit put on the plane, or
    /// a re-commit of the client buffer that stays there.
    pub shown: Vec<BufferId>,
    /// Client buffers this commit stopped showing (primary and overlay planes).
    pub no_longer_shown: Vec<(Vec<BufferId>, Buffer)>,
}

/// One connector + CRTC + primary plane.
#[derive(Debug)]
pub struct TtyOutput {
    pub output: Output,
    pub global: Option<GlobalId>,
    pub connector: connector::Handle,
    pub connector_crtc_id: property::Handle,
    pub crtc: crtc::Handle,
    pub crtc_props: CrtcProps,
    pub plane: plane::Handle,
    pub plane_props: PlaneProps,
    /// Overlay planes this output owns (see [`overlay`](super::overlay)).
    pub overlays: Vec<OverlayPlane>,
    /// Its cursor plane, if the CRTC has one.
    pub cursor: Option<CursorPlane>,
    pub mode: Mode,
    pub mode_blob: Option<u64>,
    pub slots: Vec<Slot>,
    pub render_count: u64,
    pub damage_tracker: OutputDamageTracker,
    /// What the last composition drew (see
    /// [`TtyRenderer::composite`](crate::backend::tty::renderer::TtyRenderer::composite));
    /// `None`: unknown, the next cycle composes.
    pub last_scene: Option<LastScene>,
    pub clock: FrameClock,
    pub needs_modeset: bool,
    pub alive: bool,
    pub shown: Shown,
    pub pending: Option<PendingFlip>,
    pub report: Option<ScanoutReport>,
    pub out_fence_slot: OutFenceSlot,
    /// Nothing in flight and no cycle scheduled: the last cycle had nothing new to show,
    /// so no commit was made. A client request wakes it ([`State::tty_wake`]).
    ///
    /// [`State::tty_wake`]: crate::State::tty_wake
    pub idle: bool,
    /// Buffers whose end of scanout no commit has proven yet (a resume, a failed
    /// switch-off): see [`handover`](crate::backend::tty::handover).
    pub handover: Handover<(Vec<BufferId>, Buffer), Rc<ClientFb>>,
    /// How long after its page flips this CRTC's out-fences signal (sliding window).
    pub out_fence_delay: OutFenceDelay,
    /// Early release or release at the flip, for this CRTC (switched by `auto`).
    pub release: ReleasePolicy,
    /// When its refresh cycle runs after a flip (see
    /// [`latch_deadline`](crate::backend::tty::latch_deadline)).
    pub latch: crate::backend::tty::latch_deadline::LatchDeadline,
    /// The timer of a cycle waiting for its deadline.
    pub cycle_timer: Option<smithay::reexports::calloop::RegistrationToken>,
    /// The kernel time and vblank sequence of this CRTC's last page flip with a
    /// timestamp: the vblank phase a woken idle output's cycle is scheduled on.
    pub last_flip: Option<(Duration, u32)>,
    /// Something that may change what this output shows happened since its last render
    /// began (every such thing wakes idle outputs: [`State::tty_wake`]). A cycle started
    /// by a flip or a deadline without it has nothing new to show and skips the render.
    ///
    /// [`State::tty_wake`]: crate::State::tty_wake
    pub scene_changed: bool,
}

impl TtyOutput {
    /// Every plane this output owns.
    pub fn planes(&self) -> impl Iterator<Item = plane::Handle> + '_ {
        std::iter::once(self.plane)
            .chain(self.overlays.iter().map(|o| o.handle))
            .chain(self.cursor.as_ref().map(|c| c.handle))
    }

    /// Mode size in pixels.
    pub fn size(&self) -> (u32, u32) {
        let (w, h) = self.mode.size();
        (u32::from(w), u32::from(h))
    }

    /// The atomic request that shows `fb` over the whole output on its primary plane
    /// (`None`: keep the plane as it is), with `modeset` if given. `arm_out_fence` asks
    /// for the CRTC's out-fence into [`Self::out_fence_slot`]; `in_fence` is
    /// compositor-made only (see [`atomic`](super::atomic)).
    pub fn request(
        &mut self,
        modeset: Option<Modeset>,
        fb: Option<framebuffer::Handle>,
        arm_out_fence: bool,
        in_fence: Option<&SyncFile>,
    ) -> Result<AtomicModeReq, TtyError> {
        let size = self.size();
        let plan = CommitPlan {
            modeset,
            fb,
            src: size,
            dst: size,
        };
        super::atomic::build(
            self.crtc,
            &self.crtc_props,
            self.plane,
            &self.plane_props,
            &plan,
            arm_out_fence.then_some(&mut self.out_fence_slot),
            in_fence,
        )
    }
}

/// The preferred mode of a connector (or its first).
pub fn preferred_mode(conn: &connector::Info) -> Option<Mode> {
    use smithay::reexports::drm::control::ModeTypeFlags;
    conn.modes()
        .iter()
        .find(|m| m.mode_type().contains(ModeTypeFlags::PREFERRED))
        .or_else(|| conn.modes().first())
        .copied()
}

/// Connected connectors of the device, by handle, with their info.
pub fn connected(dev: &KmsDevice, res: &ResourceHandles) -> Vec<connector::Info> {
    res.connectors()
        .iter()
        .filter_map(|c| match dev.fd.get_connector(*c, true) {
            Ok(info) => Some(info),
            Err(err) => {
                tracing::warn!(connector = ?c, %err, "reading a connector failed");
                None
            }
        })
        .filter(|c| c.state() == connector::State::Connected && !c.modes().is_empty())
        .collect()
}

fn plane_type(props: &PropMap) -> Option<u64> {
    props.value("type")
}

/// What a new output may take: CRTCs and planes other outputs hold are not free.
#[derive(Debug, Clone, Copy)]
pub struct Taken<'a> {
    /// CRTCs in use.
    pub crtcs: &'a [crtc::Handle],
    /// Planes in use.
    pub planes: &'a [plane::Handle],
    /// Whether the output takes overlay planes (`--overlay-planes`).
    pub overlays: bool,
}

/// Set up an output for `conn`, using a CRTC, its primary plane, a cursor plane and (if
/// `taken.overlays`) the overlay planes it can use, none of them `taken`.
pub fn create_output(
    dev: &KmsDevice,
    res: &ResourceHandles,
    conn: &connector::Info,
    taken: Taken<'_>,
    renderer: &mut TtyRenderer,
    dh: &DisplayHandle,
    x: i32,
) -> Result<TtyOutput, TtyError> {
    let kms = |what: &'static str| {
        let path = dev.path.display().to_string();
        move |source: std::io::Error| TtyError::Kms { what, path, source }
    };
    let mode = preferred_mode(conn).ok_or(TtyError::NoMode)?;
    let crtc = conn
        .encoders()
        .iter()
        .filter_map(|e| dev.fd.get_encoder(*e).ok())
        .flat_map(|e| res.filter_crtcs(e.possible_crtcs()))
        .find(|c| !taken.crtcs.contains(c))
        .ok_or(TtyError::NoCrtc)?;
    let planes = dev.fd.plane_handles().map_err(kms("listing planes"))?;
    let mut primary = None;
    let mut overlays = Vec::new();
    let mut cursor = None;
    for p in planes {
        if taken.planes.contains(&p) {
            continue;
        }
        let Ok(info) = dev.fd.get_plane(p) else {
            continue;
        };
        if !res.filter_crtcs(info.possible_crtcs()).contains(&crtc) {
            continue;
        }
        let props = PropMap::read(&dev.fd, p).map_err(kms("reading plane properties"))?;
        // DRM_PLANE_TYPE_OVERLAY = 0, PRIMARY = 1, CURSOR = 2.
        match plane_type(&props) {
            Some(1) if primary.is_none() => primary = Some((p, props)),
            Some(0) if taken.overlays => match PlaneProps::new(&props) {
                Ok(props) => overlays.push(OverlayPlane {
                    handle: p,
                    props,
                    shown: None,
                }),
                Err(err) => tracing::debug!(plane = ?p, %err, "overlay plane skipped"),
            },
            Some(2) if cursor.is_none() => match PlaneProps::new(&props)
                .map_err(|e| e.to_string())
                .and_then(|props| CursorPlane::new(dev, p, props).map_err(|e| e.to_string()))
            {
                Ok(plane) => cursor = Some(plane),
                Err(err) => {
                    tracing::warn!(plane = ?p, %err, "cursor plane unusable: no cursor on this output")
                }
            },
            _ => {}
        }
    }
    let (plane, plane_props) = primary.ok_or(TtyError::NoPrimaryPlane)?;
    if cursor.is_none() {
        tracing::warn!(crtc = ?crtc, "no cursor plane: the pointer is not drawn on this output");
    }
    let conn_props =
        PropMap::read(&dev.fd, conn.handle()).map_err(kms("reading connector properties"))?;
    let crtc_props = PropMap::read(&dev.fd, crtc).map_err(kms("reading CRTC properties"))?;

    let (w, h) = mode.size();
    let mut slots = Vec::with_capacity(2);
    for _ in 0..2 {
        slots.push(renderer.allocate_slot(dev, u32::from(w), u32::from(h))?);
    }

    let name = format!("{}-{}", conn.interface().as_str(), conn.interface_id());
    let (mm_w, mm_h) = conn.size().unwrap_or((0, 0));
    let output = Output::new(
        name,
        PhysicalProperties {
            size: (
                i32::try_from(mm_w).unwrap_or(0),
                i32::try_from(mm_h).unwrap_or(0),
            )
                .into(),
            subpixel: Subpixel::Unknown,
            make: dev.driver.clone(),
            model: "KMS".into(),
        },
    );
    let refresh_mhz = i32::try_from(mode.vrefresh().saturating_mul(1000)).unwrap_or(60_000);
    let omode = OutputMode {
        size: (i32::from(w), i32::from(h)).into(),
        refresh: refresh_mhz,
    };
    output.change_current_state(
        Some(omode),
        Some(Transform::Normal),
        None,
        Some((x, 0).into()),
    );
    output.set_preferred(omode);
    let global = output.create_global::<State>(dh);
    let refresh = crate::config::refresh_interval(u32::try_from(refresh_mhz).unwrap_or(60_000));
    let mode_blob = match dev.fd.create_property_blob(&mode) {
        Ok(property::Value::Blob(b)) => Some(b),
        Ok(_) => None,
        Err(err) => return Err(kms("creating the mode blob")(err)),
    };
    Ok(TtyOutput {
        damage_tracker: OutputDamageTracker::from_output(&output),
        last_scene: None,
        output,
        global: Some(global),
        connector: conn.handle(),
        connector_crtc_id: conn_props.require("CRTC_ID")?,
        crtc,
        crtc_props: CrtcProps::new(&crtc_props)?,
        plane,
        plane_props: PlaneProps::new(&plane_props)?,
        overlays,
        cursor,
        mode,
        mode_blob,
        slots,
        render_count: 0,
        clock: FrameClock::starting_now(refresh),
        needs_modeset: true,
        alive: true,
        shown: Shown::Nothing,
        pending: None,
        report: None,
        out_fence_slot: OutFenceSlot::new(),
        idle: false,
        handover: Handover::default(),
        out_fence_delay: OutFenceDelay::default(),
        // Set by the backend once the release mode is resolved.
        release: ReleasePolicy::default(),
        // Set by the backend from `--late-latch`.
        latch: crate::backend::tty::latch_deadline::LatchDeadline::new(false),
        cycle_timer: None,
        last_flip: None,
        scene_changed: true,
    })
}

/// CLOCK_MONOTONIC now.
pub fn monotonic_now() -> std::time::Duration {
    std::time::Duration::from_nanos(syncbridge_bridge::sync_file::monotonic_now_ns())
}
