//! A minimal atomic KMS pipe for VM tests: one connected connector, its CRTC and primary
//! plane, and request builders for a full-screen modeset or flip.
//!
//! ```no_run
//! use syncbridge_tests::kernel::kms::KmsPipe;
//! let pipe = KmsPipe::open("vkms");
//! let fb = pipe.dumb_fb();
//! let req = pipe.flip_request(fb, true); // modeset + plane state + FB_ID
//! ```

use drm::control::{
    atomic::AtomicModeReq, connector, crtc, framebuffer, plane, property, Device as _, Mode,
    ResourceHandle,
};
use drm::{ClientCapability, Device as _};

use super::card::{open_card_by_driver, Card, NodeKind};

/// One display pipe of a KMS device, with atomic and universal planes enabled.
#[derive(Debug)]
pub struct KmsPipe {
    pub card: Card,
    pub connector: connector::Handle,
    pub crtc: crtc::Handle,
    pub primary: plane::Handle,
    pub mode: Mode,
    /// Mode size in pixels.
    pub size: (u32, u32),
}

impl KmsPipe {
    /// Opens the primary node of `driver` and picks its first connected connector, the
    /// first CRTC and that CRTC's primary plane. Panics (test scaffolding) when missing.
    pub fn open(driver: &str) -> KmsPipe {
        Self::on_card(open_card_by_driver(driver, NodeKind::Primary))
    }

    /// [`KmsPipe::open`] on an already opened primary node (e.g. one of the two
    /// virtio_gpu cards, see [`super::virtio_gpu`]).
    pub fn on_card(card: Card) -> KmsPipe {
        let driver = card.driver.clone();
        card.set_client_capability(ClientCapability::UniversalPlanes, true)
            .expect("universal planes");
        card.set_client_capability(ClientCapability::Atomic, true)
            .expect("atomic");
        let res = card.resource_handles().expect("resources");
        let conn = res
            .connectors()
            .iter()
            .map(|c| card.get_connector(*c, false).expect("connector"))
            .find(|c| c.state() == connector::State::Connected)
            .unwrap_or_else(|| panic!("a connected {driver} connector"));
        let mode = conn.modes()[0];
        let crtc = res.crtcs()[0];
        let primary = card
            .plane_handles()
            .expect("planes")
            .iter()
            .copied()
            .find(|p| plane_type(&card, *p) == Some(1))
            .expect("primary plane");
        let size = (u32::from(mode.size().0), u32::from(mode.size().1));
        KmsPipe {
            card,
            connector: conn.handle(),
            crtc,
            primary,
            mode,
            size,
        }
    }

    /// The property called `name` of `handle`; panics when there is none.
    pub fn prop(&self, handle: impl ResourceHandle, name: &str) -> property::Handle {
        let props = self.card.get_properties(handle).expect("get_properties");
        let found = props
            .iter()
            .map(|(h, _)| *h)
            .find(|h| {
                self.card
                    .get_property(*h)
                    .is_ok_and(|i| i.name().to_str() == Ok(name))
            })
            .unwrap_or_else(|| panic!("no KMS property {name}"));
        found
    }

    /// A full-screen XRGB8888 dumb buffer wrapped in a framebuffer.
    pub fn dumb_fb(&self) -> framebuffer::Handle {
        let db = self
            .card
            .create_dumb_buffer(self.size, drm::buffer::DrmFourcc::Xrgb8888, 32)
            .expect("dumb buffer");
        self.card.add_framebuffer(&db, 24, 32).expect("framebuffer")
    }

    /// A request showing `fb` full screen on the primary plane; with `modeset`, it also
    /// routes connector -> CRTC -> plane, sets the mode and activates the CRTC.
    pub fn flip_request(&self, fb: framebuffer::Handle, modeset: bool) -> AtomicModeReq {
        let mut req = AtomicModeReq::new();
        if modeset {
            let blob = self
                .card
                .create_property_blob(&self.mode)
                .expect("mode blob");
            let (conn, crtc, primary) = (self.connector, self.crtc, self.primary);
            req.add_property(
                conn,
                self.prop(conn, "CRTC_ID"),
                property::Value::CRTC(Some(crtc)),
            );
            req.add_property(crtc, self.prop(crtc, "MODE_ID"), blob);
            req.add_property(
                crtc,
                self.prop(crtc, "ACTIVE"),
                property::Value::Boolean(true),
            );
            req.add_property(
                primary,
                self.prop(primary, "CRTC_ID"),
                property::Value::CRTC(Some(crtc)),
            );
            let (w, h) = (u64::from(self.size.0), u64::from(self.size.1));
            for (name, v) in [
                ("SRC_X", 0),
                ("SRC_Y", 0),
                ("SRC_W", w << 16),
                ("SRC_H", h << 16),
            ] {
                req.add_property(
                    primary,
                    self.prop(primary, name),
                    property::Value::UnsignedRange(v),
                );
            }
            for (name, v) in [
                ("CRTC_X", 0),
                ("CRTC_Y", 0),
                ("CRTC_W", w as i64),
                ("CRTC_H", h as i64),
            ] {
                req.add_property(
                    primary,
                    self.prop(primary, name),
                    property::Value::SignedRange(v),
                );
            }
        }
        req.add_property(
            self.primary,
            self.prop(self.primary, "FB_ID"),
            property::Value::Framebuffer(Some(fb)),
        );
        req
    }
}

/// The value of a plane's `type` property (0 overlay, 1 primary, 2 cursor).
pub fn plane_type(card: &Card, plane: plane::Handle) -> Option<u64> {
    let props = card.get_properties(plane).ok()?;
    let ty = props.iter().find_map(|(h, v)| {
        card.get_property(*h)
            .is_ok_and(|i| i.name().to_str() == Ok("type"))
            .then_some(*v)
    });
    ty
}

/// The (fourcc, modifier) pairs of the `IN_FORMATS` blob of the primary plane that
/// scans out for an active CRTC (the card needs universal planes). Panics if there is no
/// such plane or it has no `IN_FORMATS` (VKMS has it).
pub fn active_primary_in_formats(card: &Card) -> Vec<(u32, u64)> {
    for p in card.plane_handles().expect("planes") {
        let Ok(info) = card.get_plane(p) else {
            continue;
        };
        if info.crtc().is_none() || plane_type(card, p) != Some(1) {
            continue;
        }
        return in_formats(card, p);
    }
    panic!("no active primary plane on {}", card.path.display());
}

/// The `IN_FORMATS` of every overlay plane of `card` (the card needs universal planes),
/// one list per plane. Panics if an overlay plane has no `IN_FORMATS` (VKMS has it).
pub fn overlay_in_formats(card: &Card) -> Vec<Vec<(u32, u64)>> {
    card.plane_handles()
        .expect("planes")
        .into_iter()
        .filter(|p| plane_type(card, *p) == Some(0))
        .map(|p| in_formats(card, p))
        .collect()
}

/// The (fourcc, modifier) pairs of `plane`'s `IN_FORMATS` blob. Panics without one.
fn in_formats(card: &Card, plane: drm::control::plane::Handle) -> Vec<(u32, u64)> {
    let props = card.get_properties(plane).expect("plane properties");
    let blob = props
        .iter()
        .find_map(|(h, v)| {
            card.get_property(*h)
                .is_ok_and(|i| i.name().to_str() == Ok("IN_FORMATS"))
                .then_some(*v)
        })
        .expect("the plane has IN_FORMATS");
    let data = card.get_property_blob(blob).expect("IN_FORMATS blob");
    decode_in_formats(&data)
}

/// `struct drm_format_modifier_blob`: header of six u32 (version, flags, count_formats,
/// formats_offset, count_modifiers, modifiers_offset), the fourccs, then per modifier
/// {u64 mask, u32 offset, u32 pad, u64 modifier}: bit i of the mask is format offset+i.
fn decode_in_formats(data: &[u8]) -> Vec<(u32, u64)> {
    let word = |at: usize| u32::from_ne_bytes(data[at..at + 4].try_into().expect("4 bytes"));
    let quad = |at: usize| u64::from_ne_bytes(data[at..at + 8].try_into().expect("8 bytes"));
    let (count_formats, formats_offset) = (word(8) as usize, word(12) as usize);
    let (count_modifiers, modifiers_offset) = (word(16) as usize, word(20) as usize);
    let fourccs: Vec<u32> = (0..count_formats)
        .map(|i| word(formats_offset + 4 * i))
        .collect();
    let mut out = Vec::new();
    for m in 0..count_modifiers {
        let at = modifiers_offset + 24 * m;
        let (mask, offset, modifier) = (quad(at), word(at + 8) as usize, quad(at + 16));
        for (bit, fourcc) in fourccs.iter().enumerate().skip(offset).take(64) {
            if mask & (1u64 << (bit - offset)) != 0 {
                out.push((*fourcc, modifier));
            }
        }
    }
    out
}
