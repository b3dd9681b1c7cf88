//! The cursor plane: the pointer drawn by the display, from two ARGB8888 dumb buffers of
//! our own (the driver's cursor size, `DRM_CAP_CURSOR_WIDTH` x `HEIGHT`).
//!
//! The image ([`CursorImage`](crate::backend::tty::cursor::CursorImage)) is written into
//! the buffer that is not on the plane, and the commit flips the plane to it; a move
//! only changes CRTC_X/Y. A client's cursor pixels are copied on the CPU when they
//! change (as wlroots draws a cursor into its own cursor buffer): the plane never reads
//! a client buffer, so a cursor image is never a scanout reader to release.

use smithay::reexports::drm::{
    buffer::{Buffer as _, DrmFourcc},
    control::{
        atomic::AtomicModeReq, crtc, dumbbuffer::DumbBuffer, framebuffer, plane, Device as _,
    },
    Device as _, DriverCapability,
};

use super::{
    atomic::{set_plane, PlaneState},
    device::KmsDevice,
    scanout::PlaneProps,
};
use crate::backend::tty::cursor::{CursorImage, CursorPixels};

/// One of our cursor buffers and its framebuffer. Removed (framebuffer, then the dumb
/// buffer) on drop: keep it until no commit shows it.
#[derive(Debug)]
struct CursorBuffer {
    dumb: Option<DumbBuffer>,
    fb: framebuffer::Handle,
    dev: smithay::backend::drm::DrmDeviceFd,
}

impl Drop for CursorBuffer {
    fn drop(&mut self) {
        let _ = self.dev.destroy_framebuffer(self.fb);
        if let Some(dumb) = self.dumb.take() {
            let _ = self.dev.destroy_dumb_buffer(dumb);
        }
    }
}

/// What the cursor plane shows after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorShown {
    /// Which of our buffers.
    pub buffer: usize,
    /// Where (CRTC coordinates of the image's top-left corner).
    pub at: (i32, i32),
}

/// The cursor plane an output owns.
#[derive(Debug)]
pub struct CursorPlane {
    /// The plane.
    pub handle: plane::Handle,
    props: PlaneProps,
    size: (u32, u32),
    buffers: Vec<CursorBuffer>,
    /// The image each buffer holds (`None`: never written).
    contents: Vec<Option<u64>>,
    /// What the plane shows (as of the last successful commit).
    pub shown: Option<CursorShown>,
}

/// What one refresh cycle does with the cursor plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorPlan {
    /// Nothing changes.
    Keep,
    /// Show buffer `buffer` at `at`.
    Show(CursorShown),
    /// Switch the plane off.
    Clear,
}

impl CursorPlane {
    /// The cursor plane `handle` of an output, with two buffers of the driver's cursor
    /// size. Fails when the device cannot allocate or add them.
    pub fn new(
        dev: &KmsDevice,
        handle: plane::Handle,
        props: PlaneProps,
    ) -> std::io::Result<CursorPlane> {
        let cap = |c| {
            dev.fd
                .get_driver_capability(c)
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0 && *v <= 512)
                .unwrap_or(64)
        };
        let size = (
            cap(DriverCapability::CursorWidth),
            cap(DriverCapability::CursorHeight),
        );
        let mut buffers = Vec::with_capacity(2);
        for _ in 0..2 {
            let dumb = dev.fd.create_dumb_buffer(size, DrmFourcc::Argb8888, 32)?;
            let fb = match dev.fd.add_framebuffer(&dumb, 32, 32) {
                Ok(fb) => fb,
                Err(err) => {
                    let _ = dev.fd.destroy_dumb_buffer(dumb);
                    return Err(err);
                }
            };
            buffers.push(CursorBuffer {
                dumb: Some(dumb),
                fb,
                dev: dev.fd.clone(),
            });
        }
        Ok(CursorPlane {
            handle,
            props,
            size,
            buffers,
            contents: vec![None, None],
            shown: None,
        })
    }

    /// The plane's image size in pixels.
    pub fn size(&self) -> (u32, u32) {
        self.size
    }

    /// Plan this cycle: `image` with its hotspot at `pointer` (CRTC pixels; `None`: the
    /// pointer is not on this output). A new image is written into the buffer the plane
    /// does not show (returns whether one was written). Write failures hide the cursor.
    pub fn plan(
        &mut self,
        dev: &KmsDevice,
        image: &CursorImage,
        pointer: Option<(i32, i32)>,
        uploads: &mut u64,
    ) -> CursorPlan {
        let (Some(pointer), Some(key)) = (pointer, image.key()) else {
            return if self.shown.is_some() {
                CursorPlan::Clear
            } else {
                CursorPlan::Keep
            };
        };
        let hotspot = image.hotspot();
        let at = (pointer.0 - hotspot.0, pointer.1 - hotspot.1);
        // The buffer that holds this image already, preferring the one on the plane.
        let on_plane = self.shown.map(|s| s.buffer);
        let holding = on_plane
            .filter(|b| self.contents.get(*b) == Some(&Some(key)))
            .or_else(|| self.contents.iter().position(|c| *c == Some(key)));
        let buffer = match holding {
            Some(b) => b,
            None => {
                let free = (0..self.buffers.len())
                    .find(|b| Some(*b) != on_plane)
                    .unwrap_or(0);
                if let Err(err) = self.write(dev, free, image) {
                    tracing::warn!(%err, "writing the cursor image failed: cursor hidden");
                    return if self.shown.is_some() {
                        CursorPlan::Clear
                    } else {
                        CursorPlan::Keep
                    };
                }
                *uploads += 1;
                self.contents[free] = Some(key);
                free
            }
        };
        let next = CursorShown { buffer, at };
        if self.shown == Some(next) {
            CursorPlan::Keep
        } else {
            CursorPlan::Show(next)
        }
    }

    fn write(&mut self, dev: &KmsDevice, index: usize, image: &CursorImage) -> std::io::Result<()> {
        let size = self.size;
        let buffer = self
            .buffers
            .get_mut(index)
            .and_then(|b| b.dumb.as_mut())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let pitch = buffer.pitch() as usize;
        let mut map = dev.fd.map_dumb_buffer(buffer)?;
        let pixels: &mut [u8] = map.as_mut();
        pixels.fill(0);
        let mut target = CursorPixels {
            data: pixels,
            stride: pitch,
            size,
        };
        image.draw(&mut target);
        Ok(())
    }

    /// Add `plan` to `req`.
    pub fn add_to_request(&self, req: &mut AtomicModeReq, crtc: crtc::Handle, plan: CursorPlan) {
        match plan {
            CursorPlan::Keep => {}
            CursorPlan::Clear => set_plane(req, self.handle, &self.props, crtc, None, None),
            CursorPlan::Show(s) => {
                let Some(buffer) = self.buffers.get(s.buffer) else {
                    return;
                };
                let state = PlaneState {
                    fb: buffer.fb,
                    src: self.size,
                    dst: s.at,
                    dst_size: self.size,
                };
                set_plane(req, self.handle, &self.props, crtc, Some(state), None);
            }
        }
    }

    /// The commit that carried `plan` succeeded.
    pub fn committed(&mut self, plan: CursorPlan) {
        match plan {
            CursorPlan::Keep => {}
            CursorPlan::Clear => self.shown = None,
            CursorPlan::Show(s) => self.shown = Some(s),
        }
    }

    /// Call `f` with the pixels the plane shows (ARGB8888, premultiplied: the bytes,
    /// the stride, the size, where on the CRTC); `None` when it shows nothing.
    pub fn with_shown_pixels<T>(
        &mut self,
        dev: &KmsDevice,
        f: impl FnOnce(&[u8], usize, (u32, u32), (i32, i32)) -> T,
    ) -> Option<T> {
        let shown = self.shown?;
        let buffer = self.buffers.get_mut(shown.buffer)?.dumb.as_mut()?;
        let pitch = buffer.pitch() as usize;
        let map = dev.fd.map_dumb_buffer(buffer).ok()?;
        Some(f(map.as_ref(), pitch, self.size, shown.at))
    }

    /// Forget what the plane shows (a modeset sets every plane again: another DRM
    /// master may have changed it).
    pub fn forget(&mut self) {
        self.shown = None;
    }
}
