//! The overlay and cursor planes in one refresh cycle of the tty backend: the cursor
//! plane's plan, the planes' part of the atomic request, and what a successful commit
//! changes (the buffers put on overlays become scanout readers, those taken off are
//! reported as no longer shown). Which windows go on overlays is
//! [`kms::overlay`](super::kms::overlay); the cursor image is [`cursor`](super::cursor).

use smithay::desktop::{Space, Window};
use syncbridge_bridge::SyncFile;

use super::{
    cursor,
    kms::{
        self,
        device::KmsDevice,
        scanout::{ClientScanout, PendingFlip, ScanoutReport, TtyOutput},
    },
    release::KmsStats,
};

/// Pixels in a rectangle of `size`.
pub(super) fn area(size: smithay::utils::Size<i32, smithay::utils::Physical>) -> usize {
    usize::try_from(size.w).unwrap_or(0) * usize::try_from(size.h).unwrap_or(0)
}

/// This cycle's cursor plane change on `out`: the pointer's image where it is, if it is
/// on this output. A modeset sets the plane again (another DRM master may have used it).
pub(super) fn plan_cursor(
    device: &KmsDevice,
    out: &mut TtyOutput,
    view: Option<&cursor::CursorView>,
    space: &Space<Window>,
    modeset: bool,
    stats: &mut KmsStats,
) -> kms::cursor::CursorPlan {
    let geo = space.output_geometry(&out.output);
    let Some(plane) = out.cursor.as_mut() else {
        return kms::cursor::CursorPlan::Keep;
    };
    if modeset {
        plane.forget();
    }
    let hidden = cursor::CursorImage::Hidden;
    let image = view.map_or(&hidden, |v| &v.image);
    // Output-local pixels (tty outputs are at scale 1, untransformed).
    let pointer = view.zip(geo).and_then(|(v, geo)| {
        let p = v.location.to_i32_floor::<i32>();
        geo.contains(p).then(|| (p.x - geo.loc.x, p.y - geo.loc.y))
    });
    stats.cursor_source = image.source();
    let plan = plane.plan(device, image, pointer, &mut stats.cursor_uploads);
    if modeset && plan == kms::cursor::CursorPlan::Keep {
        kms::cursor::CursorPlan::Clear
    } else {
        plan
    }
}

/// Add the overlay and cursor planes' changes to `req` (client buffers on overlays get
/// `stub`, the compositor's signalled in-fence: their acquire fences were waited for).
pub(super) fn add_planes(
    req: &mut smithay::reexports::drm::control::atomic::AtomicModeReq,
    out: &TtyOutput,
    overlay_plan: &[kms::overlay::Assignment],
    cursor_plan: kms::cursor::CursorPlan,
    stub: Option<&SyncFile>,
) {
    for (plane, a) in out.overlays.iter().zip(overlay_plan) {
        kms::overlay::add_to_request(req, out.crtc, plane, a, stub);
    }
    if let Some(plane) = &out.cursor {
        plane.add_to_request(req, out.crtc, cursor_plan);
    }
}

/// The commit that carried `overlay_plan` and `cursor_plan` succeeded: the overlay planes
/// show their new buffers (readers begin: `report.shown`) and what they replaced goes to
/// `report.no_longer_shown`, its framebuffer kept until the flip.
pub(super) fn commit_planes(
    out: &mut TtyOutput,
    overlay_plan: Vec<kms::overlay::Assignment>,
    cursor_plan: kms::cursor::CursorPlan,
    report: &mut ScanoutReport,
    pending: &mut PendingFlip,
    stats: &mut KmsStats,
) {
    let mut showing = false;
    for (plane, a) in out.overlays.iter_mut().zip(overlay_plan) {
        let replaced = match a {
            kms::overlay::Assignment::Show { candidate, fb, dst } => {
                stats.overlay_assignments += 1;
                report.shown.extend(candidate.id);
                plane
                    .shown
                    .replace((ClientScanout::new(&candidate, fb), dst))
            }
            kms::overlay::Assignment::Clear => plane.shown.take(),
            kms::overlay::Assignment::Keep { .. } | kms::overlay::Assignment::Idle => None,
        };
        if let Some((old, _)) = replaced {
            report.no_longer_shown.push((old.ids, old.buffer));
            pending.retiring.push(old.fb);
        }
        showing |= plane.shown.is_some();
    }
    if showing {
        stats.overlay_frames += 1;
    }
    if let Some(plane) = out.cursor.as_mut() {
        plane.committed(cursor_plan);
        if plane.shown.is_some() {
            stats.cursor_frames += 1;
        }
    }
}
