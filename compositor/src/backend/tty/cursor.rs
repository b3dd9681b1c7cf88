//! What the pointer looks like on tty: the client's cursor surface (`wl_pointer.set_cursor`)
//! while the pointer is over one of its surfaces, a built-in arrow otherwise, nothing when
//! the client hid it. Drawn on the cursor plane ([`kms::cursor`](super::kms::cursor)).
//!
//! A client cursor is copied from its shm buffer (what `wl_cursor` and every toolkit
//! use). A cursor surface with a dma-buf buffer is shown as the default arrow: mapping a
//! client dma-buf for the CPU would have to wait for its fences in the loop. The arrow is
//! built in, so no cursor theme has to be installed.

use std::hash::{Hash, Hasher};

use smithay::{
    backend::renderer::utils::{with_renderer_surface_state, CommitCounter},
    input::pointer::{CursorImageAttributes, CursorImageStatus},
    reexports::wayland_server::{protocol::wl_shm, protocol::wl_surface::WlSurface, Resource},
    wayland::{compositor::with_states, shm::with_buffer_contents},
};

/// A mutable view of a cursor buffer: ARGB8888 (premultiplied), `stride` bytes a row.
pub struct CursorPixels<'a> {
    /// The pixels.
    pub data: &'a mut [u8],
    /// Bytes per row.
    pub stride: usize,
    /// Size in pixels.
    pub size: (u32, u32),
}

impl std::fmt::Debug for CursorPixels<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorPixels")
            .field("stride", &self.stride)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl CursorPixels<'_> {
    fn put(&mut self, x: usize, y: usize, argb: u32) {
        if x >= self.size.0 as usize || y >= self.size.1 as usize {
            return;
        }
        let at = y * self.stride + x * 4;
        if let Some(px) = self.data.get_mut(at..at + 4) {
            px.copy_from_slice(&argb.to_le_bytes());
        }
    }
}

/// The built-in arrow, hotspot at its tip (0, 0): `X` black, `.` white.
const ARROW: [&str; 17] = [
    "X",
    "XX",
    "X.X",
    "X..X",
    "X...X",
    "X....X",
    "X.....X",
    "X......X",
    "X.......X",
    "X........X",
    "X.....XXXXX",
    "X..X..X",
    "X.X X..X",
    "XX  X..X",
    "X    X..X",
    "     X..X",
    "      XX",
];

/// The pointer for one refresh cycle: where it is (global logical coordinates) and how
/// it looks.
#[derive(Debug, Clone)]
pub struct CursorView {
    /// Where.
    pub location: smithay::utils::Point<f64, smithay::utils::Logical>,
    /// What.
    pub image: CursorImage,
}

/// The image of the pointer, for one refresh cycle.
#[derive(Debug, Clone)]
pub enum CursorImage {
    /// No cursor.
    Hidden,
    /// The built-in arrow.
    Default,
    /// A client's cursor surface, with its hotspot.
    Client(WlSurface, (i32, i32)),
}

impl CursorImage {
    /// What to show for the seat's `status` while the pointer's focus is `focused`
    /// (`false`: over no client surface, where the client's cursor does not apply).
    pub fn from_status(status: &CursorImageStatus, focused: bool) -> CursorImage {
        match status {
            _ if !focused => CursorImage::Default,
            CursorImageStatus::Hidden => CursorImage::Hidden,
            CursorImageStatus::Named(_) => CursorImage::Default,
            CursorImageStatus::Surface(surface) if !surface.is_alive() => CursorImage::Default,
            CursorImageStatus::Surface(surface) => {
                let hotspot = with_states(surface, |states| {
                    states
                        .data_map
                        .get::<std::sync::Mutex<CursorImageAttributes>>()
                        .and_then(|a| a.lock().ok().map(|a| (a.hotspot.x, a.hotspot.y)))
                        .unwrap_or((0, 0))
                });
                if client_pixels(surface).is_some() {
                    CursorImage::Client(surface.clone(), hotspot)
                } else {
                    CursorImage::Default
                }
            }
        }
    }

    /// Identifies the pixels (`None`: nothing to show). A client image changes with
    /// every commit of its surface.
    pub fn key(&self) -> Option<u64> {
        match self {
            CursorImage::Hidden => None,
            CursorImage::Default => Some(1),
            CursorImage::Client(surface, _) => {
                let commit = with_renderer_surface_state(surface, |st| st.current_commit())
                    .and_then(|c| c.distance(Some(CommitCounter::from(0))))
                    .unwrap_or(0);
                let mut h = std::collections::hash_map::DefaultHasher::new();
                surface.id().hash(&mut h);
                commit.hash(&mut h);
                // 0 and 1 stay free for "nothing" and the arrow.
                Some(h.finish().max(2))
            }
        }
    }

    /// Where in the image the pointer is.
    pub fn hotspot(&self) -> (i32, i32) {
        match self {
            CursorImage::Client(_, hotspot) => *hotspot,
            _ => (0, 0),
        }
    }

    /// Source name for the stats.
    pub fn source(&self) -> &'static str {
        match self {
            CursorImage::Hidden => "hidden",
            CursorImage::Default => "default",
            CursorImage::Client(..) => "client",
        }
    }

    /// Draw into `target` (cleared to transparent by the caller), top-left aligned,
    /// clipped to its size.
    pub fn draw(&self, target: &mut CursorPixels<'_>) {
        match self {
            CursorImage::Hidden => {}
            CursorImage::Default => {
                for (y, row) in ARROW.iter().enumerate() {
                    for (x, c) in row.bytes().enumerate() {
                        match c {
                            b'X' => target.put(x, y, 0xff00_0000),
                            b'.' => target.put(x, y, 0xffff_ffff),
                            _ => {}
                        }
                    }
                }
            }
            CursorImage::Client(surface, _) => {
                if copy_client(surface, target).is_none() {
                    tracing::debug!("client cursor unreadable: drawn empty");
                }
            }
        }
    }
}

/// Whether `surface`'s buffer is shm in a format we copy.
fn client_pixels(surface: &WlSurface) -> Option<()> {
    let buffer = with_renderer_surface_state(surface, |st| st.buffer().cloned())??;
    with_buffer_contents(&buffer, |_, _, data| {
        matches!(
            data.format,
            wl_shm::Format::Argb8888 | wl_shm::Format::Xrgb8888
        )
        .then_some(())
    })
    .ok()?
}

/// Copy `surface`'s shm pixels into `target`; `None` if they cannot be read.
fn copy_client(surface: &WlSurface, target: &mut CursorPixels<'_>) -> Option<()> {
    let buffer = with_renderer_surface_state(surface, |st| st.buffer().cloned())??;
    with_buffer_contents(&buffer, |ptr, len, data| {
        // SAFETY: smithay hands us the pool's mapping: `len` readable bytes at `ptr`,
        // valid for this closure (SIGBUS from a shrunk pool is caught by smithay).
        let pool = unsafe { std::slice::from_raw_parts(ptr, len) };
        let opaque = data.format == wl_shm::Format::Xrgb8888;
        let (w, h, stride) = (
            usize::try_from(data.width).ok()?,
            usize::try_from(data.height).ok()?,
            usize::try_from(data.stride).ok()?,
        );
        let offset = usize::try_from(data.offset).ok()?;
        for y in 0..h.min(target.size.1 as usize) {
            for x in 0..w.min(target.size.0 as usize) {
                let at = offset + y * stride + x * 4;
                let px = pool.get(at..at + 4)?;
                let mut argb = u32::from_le_bytes([px[0], px[1], px[2], px[3]]);
                if opaque {
                    argb |= 0xff00_0000;
                }
                target.put(x, y, argb);
            }
        }
        Some(())
    })
    .ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_arrow_has_its_tip_at_the_hotspot_and_is_clipped() {
        let (w, h) = (8u32, 8u32);
        let mut data = vec![0u8; (w * h * 4) as usize];
        let mut target = CursorPixels {
            data: &mut data,
            stride: (w * 4) as usize,
            size: (w, h),
        };
        CursorImage::Default.draw(&mut target);
        let px = |x: usize, y: usize| {
            let at = (y * w as usize + x) * 4;
            u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
        };
        assert_eq!(CursorImage::Default.hotspot(), (0, 0));
        assert_eq!(px(0, 0), 0xff00_0000, "the tip is opaque black");
        assert_eq!(px(1, 2), 0xffff_ffff, "white inside the outline");
        assert_eq!(px(7, 0), 0, "transparent outside the arrow");
        // The arrow is wider and taller than 8x8: clipped, nothing written past the end.
        assert_eq!(data.len(), (w * h * 4) as usize);
        assert_eq!(CursorImage::Hidden.key(), None);
        assert_eq!(CursorImage::Default.key(), Some(1));
    }
}
