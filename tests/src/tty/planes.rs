//! The planes of an output's CRTC as the kernel holds them: each plane's `type`, the
//! framebuffer it shows and where (GETPLANE and the plane's atomic properties; open the
//! card with [`super::open_display`], which enables universal planes, or the primary and
//! cursor planes stay hidden). A nonblocking atomic commit changes these in its ioctl,
//! before its page flip. What a plane shows is read back with [`super::read_pixels`] of
//! its [`PlaneState::fb`].

use std::time::{Duration, Instant};

use drm::control::{crtc, framebuffer, plane, Device as _, ResourceHandle};
use drm::Device as _;

use crate::kernel::card::Card;

/// The value of a plane's `type` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneKind {
    /// `DRM_PLANE_TYPE_OVERLAY` (0).
    Overlay,
    /// `DRM_PLANE_TYPE_PRIMARY` (1).
    Primary,
    /// `DRM_PLANE_TYPE_CURSOR` (2).
    Cursor,
    /// Anything else (or no `type` property).
    Other(Option<u64>),
}

impl PlaneKind {
    fn of(value: Option<u64>) -> PlaneKind {
        match value {
            Some(0) => PlaneKind::Overlay,
            Some(1) => PlaneKind::Primary,
            Some(2) => PlaneKind::Cursor,
            other => PlaneKind::Other(other),
        }
    }
}

/// One plane that can scan out for a CRTC, as the kernel's current state has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneState {
    /// The plane.
    pub handle: plane::Handle,
    /// Its `type`.
    pub kind: PlaneKind,
    /// The CRTC it is on now (`None`: switched off).
    pub crtc: Option<crtc::Handle>,
    /// The framebuffer it shows (`FB_ID`; `None`: switched off).
    pub fb: Option<framebuffer::Handle>,
    /// `CRTC_X`, `CRTC_Y`: where its top-left corner is on the CRTC (may be negative).
    pub crtc_pos: (i64, i64),
    /// `CRTC_W`, `CRTC_H`: its size on the CRTC, in pixels.
    pub crtc_size: (u64, u64),
    /// `SRC_W`, `SRC_H`: the part of the framebuffer it reads, in whole pixels (the
    /// properties are 16.16 fixed point).
    pub src_size: (u64, u64),
}

impl PlaneState {
    /// Whether the plane shows a framebuffer on a CRTC.
    pub fn is_on(&self) -> bool {
        self.fb.is_some() && self.crtc.is_some()
    }

    /// Whether the plane shows a framebuffer with its top-left corner at `pos` and the
    /// size `size` on the CRTC.
    pub fn shows_at(&self, pos: (i64, i64), size: (u64, u64)) -> bool {
        self.is_on() && self.crtc_pos == pos && self.crtc_size == size
    }
}

/// The first CRTC of `card` that is active with a mode (the output of a one-connector
/// card such as VKMS).
pub fn first_active_crtc(card: &Card) -> Option<crtc::Handle> {
    let res = card.resource_handles().ok()?;
    res.crtcs()
        .iter()
        .copied()
        .find(|c| card.get_crtc(*c).is_ok_and(|i| i.mode().is_some()))
}

/// Every property of `handle` by name, with its raw value.
fn properties(card: &Card, handle: impl ResourceHandle) -> Vec<(String, u64)> {
    let Ok(props) = card.get_properties(handle) else {
        return Vec::new();
    };
    props
        .iter()
        .filter_map(|(h, v)| {
            let info = card.get_property(*h).ok()?;
            let name = info.name().to_str().ok()?.to_string();
            Some((name, *v))
        })
        .collect()
}

/// The planes that can scan out for `crtc` (its bit is in their `possible_crtcs`), with
/// their current state, in the kernel's plane order. Planes another CRTC uses now are
/// left out.
pub fn crtc_planes(card: &Card, crtc: crtc::Handle) -> Vec<PlaneState> {
    // CRTC_X/Y/W/H and SRC_* are atomic properties: listed only to atomic clients.
    let _ = card.set_client_capability(drm::ClientCapability::Atomic, true);
    let (Ok(res), Ok(handles)) = (card.resource_handles(), card.plane_handles()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in handles {
        let Ok(info) = card.get_plane(p) else {
            continue;
        };
        if !res.filter_crtcs(info.possible_crtcs()).contains(&crtc) {
            continue;
        }
        if info.crtc().is_some_and(|c| c != crtc) {
            continue;
        }
        let props = properties(card, p);
        let get = |name: &str| props.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        // CRTC_X/Y are signed ranges: the raw value is the i64's bits.
        let signed = |name: &str| get(name).map_or(0, |v| v as i64);
        let unsigned = |name: &str| get(name).unwrap_or(0);
        out.push(PlaneState {
            handle: p,
            kind: PlaneKind::of(get("type")),
            crtc: info.crtc(),
            fb: info.framebuffer(),
            crtc_pos: (signed("CRTC_X"), signed("CRTC_Y")),
            crtc_size: (unsigned("CRTC_W"), unsigned("CRTC_H")),
            src_size: (unsigned("SRC_W") >> 16, unsigned("SRC_H") >> 16),
        });
    }
    out
}

/// [`crtc_planes`] of the [`first_active_crtc`] (empty when no CRTC is active).
pub fn output_planes(card: &Card) -> Vec<PlaneState> {
    first_active_crtc(card).map_or_else(Vec::new, |crtc| crtc_planes(card, crtc))
}

/// The planes of `kind` among `planes`.
pub fn planes_of_kind(planes: &[PlaneState], kind: PlaneKind) -> Vec<&PlaneState> {
    planes.iter().filter(|p| p.kind == kind).collect()
}

/// The output's overlay planes that show a framebuffer now.
pub fn shown_overlays(card: &Card) -> Vec<PlaneState> {
    output_planes(card)
        .into_iter()
        .filter(|p| p.kind == PlaneKind::Overlay && p.is_on())
        .collect()
}

/// The output's cursor plane (the first, should a driver have more).
pub fn cursor_plane(card: &Card) -> Option<PlaneState> {
    output_planes(card)
        .into_iter()
        .find(|p| p.kind == PlaneKind::Cursor)
}

/// The cursor size the driver asks for (`DRM_CAP_CURSOR_WIDTH` x `HEIGHT`; 64x64, the
/// kernel's default, when it does not say).
pub fn cursor_size(card: &Card) -> (u64, u64) {
    let cap = |c| {
        card.get_driver_capability(c)
            .ok()
            .filter(|v| *v > 0)
            .unwrap_or(64)
    };
    (
        cap(drm::DriverCapability::CursorWidth),
        cap(drm::DriverCapability::CursorHeight),
    )
}

/// Polls the output's planes (every 5 ms) until `cond` holds for them or `within`
/// passes. `Ok` with the planes that satisfied it, `Err` with the last planes seen (for
/// the failure message).
pub fn wait_planes(
    card: &Card,
    within: Duration,
    mut cond: impl FnMut(&[PlaneState]) -> bool,
) -> Result<Vec<PlaneState>, Vec<PlaneState>> {
    let deadline = Instant::now() + within;
    loop {
        let planes = output_planes(card);
        if cond(&planes) {
            return Ok(planes);
        }
        if Instant::now() >= deadline {
            return Err(planes);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
