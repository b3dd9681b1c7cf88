//! Screenshots on the tty backend: read back what the display is scanning out.
//!
//! The primary plane's current framebuffer is looked up with GETFB2 (we are DRM master,
//! so the kernel hands out its GEM handle), exported as a dma-buf and mapped read-only.
//! That is the composited dumb buffer, or the client's own buffer during direct scanout:
//! what the display showed, not a re-render. The overlay planes' client buffers and the
//! cursor plane's image are then drawn over it where the planes show them, as the
//! display blends them (premultiplied alpha for formats with alpha).
//!
//! With pixman the dma-buf is mapped and read on the CPU. With GLES the buffer the plane
//! shows (our slot, or the client's during direct scanout) is read back with GL instead: a
//! GPU buffer's CPU mapping need not show what the GPU wrote (virgl keeps the pixels on
//! the host until a transfer), and tiled layouts cannot be read linearly.

use std::os::fd::AsFd;

use smithay::reexports::drm::{
    buffer::{DrmFourcc, Handle as BufferHandle},
    control::Device as ControlDevice,
};

use super::{kms::scanout::Shown, TtyBackend};
use crate::screenshot::{PixelOrder, Screenshot, ScreenshotError};

/// Closes GEM handles GETFB2 created, whatever happens.
struct GemHandles<'a> {
    dev: &'a smithay::backend::drm::DrmDeviceFd,
    handles: Vec<BufferHandle>,
}

impl Drop for GemHandles<'_> {
    fn drop(&mut self) {
        for h in self.handles.drain(..) {
            let _ = self.dev.close_buffer(h);
        }
    }
}

impl TtyBackend {
    /// Reads back what output `index` shows as a [`Screenshot`]: its primary plane, then
    /// its overlay and cursor planes over it.
    pub fn capture(&mut self, index: usize) -> Result<Screenshot, ScreenshotError> {
        let mut shot = self.capture_primary(index)?;
        self.draw_planes(index, &mut shot);
        Ok(shot)
    }

    /// Draw output `index`'s overlay and cursor planes over `shot`. A plane whose buffer
    /// cannot be read is left out, with a log line.
    fn draw_planes(&mut self, index: usize, shot: &mut Screenshot) {
        let Some(output) = self.outputs.get_mut(index) else {
            return;
        };
        for plane in &output.overlays {
            let Some((scanout, dst)) = &plane.shown else {
                continue;
            };
            let Ok(dmabuf) = smithay::wayland::dmabuf::get_dmabuf(&scanout.buffer).cloned() else {
                continue;
            };
            let at = (dst.loc.x, dst.loc.y);
            let drawn = match self.renderer.gles() {
                Some(gles) => crate::backend::gpu_renderer::read_back(gles, dmabuf).and_then(|o| {
                    shot.draw_over(
                        at,
                        o.width(),
                        o.height(),
                        o.width() as usize * 4,
                        PixelOrder::Rgbx,
                        false,
                        o.rgba(),
                    )
                }),
                None => draw_mapped_dmabuf(shot, at, &dmabuf),
            };
            if let Err(err) = drawn {
                tracing::warn!(%err, "screenshot: an overlay plane's buffer left out");
            }
        }
        if let Some(cursor) = output.cursor.as_mut() {
            let drawn = cursor.with_shown_pixels(&self.device, |data, stride, size, at| {
                shot.draw_over(at, size.0, size.1, stride, PixelOrder::Bgrx, true, data)
            });
            if let Some(Err(err)) = drawn {
                tracing::warn!(%err, "screenshot: the cursor left out");
            }
        }
    }

    /// Reads back the primary plane of output `index`.
    fn capture_primary(&mut self, index: usize) -> Result<Screenshot, ScreenshotError> {
        let output = self
            .outputs
            .get(index)
            .filter(|o| o.alive)
            .ok_or(ScreenshotError::NoSuchOutput(index))?;
        if self.renderer.gles().is_some() {
            // The buffers are known: ours (a slot) or the client's (direct scanout). Read
            // the one the plane shows with GL; a re-import of GETFB2's handles would be a
            // new resource to virgl, without the pixels the host holds for the old one.
            let dmabuf = match &output.shown {
                Shown::Composited(i) => output.slots.get(*i).map(|s| s.dmabuf.clone()),
                Shown::Client(c) => smithay::wayland::dmabuf::get_dmabuf(&c.buffer)
                    .ok()
                    .cloned(),
                Shown::Nothing => None,
            }
            .ok_or(ScreenshotError::Readback(
                "the primary plane shows nothing".into(),
            ))?;
            let gles = self
                .renderer
                .gles()
                .ok_or(ScreenshotError::Readback("no GLES".into()))?;
            return crate::backend::gpu_renderer::read_back(gles, dmabuf);
        }
        let dev = &self.device.fd;
        let os = |what: &'static str| {
            move |e: std::io::Error| ScreenshotError::Readback(format!("{what}: {e}"))
        };
        let fb = dev
            .get_plane(output.plane)
            .map_err(os("GETPLANE"))?
            .framebuffer()
            .ok_or(ScreenshotError::Readback(
                "the primary plane shows nothing".into(),
            ))?;
        let info = dev
            .get_planar_framebuffer(fb)
            .map_err(|e| ScreenshotError::Readback(format!("GETFB2: {e}")))?;
        let handles = GemHandles {
            dev,
            handles: info.buffers().iter().flatten().copied().collect(),
        };
        let format = info.pixel_format();
        if !matches!(format, DrmFourcc::Xrgb8888 | DrmFourcc::Argb8888) {
            return Err(ScreenshotError::Readback(format!(
                "unsupported scanout format {format:?}"
            )));
        }
        if info.modifier().is_some_and(|m| u64::from(m) != 0) {
            return Err(ScreenshotError::Readback("tiled scanout buffer".into()));
        }
        let handle = *handles.handles.first().ok_or(ScreenshotError::Readback(
            "framebuffer without a buffer handle".into(),
        ))?;
        let (width, height) = info.size();
        let stride = info.pitches()[0] as usize;
        let offset = info.offsets()[0] as usize;
        let len = offset + stride * height as usize;
        let flags = (rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::RDONLY).bits();
        let dmabuf = dev
            .buffer_to_prime_fd(handle, flags)
            .map_err(os("PRIME export"))?;
        with_mapping(dmabuf.as_fd(), len, |data| {
            Screenshot::from_pixels(
                width,
                height,
                stride,
                PixelOrder::Bgrx,
                false,
                &data[offset..],
            )
        })?
    }
}

/// Call `f` with a shared read-only mapping of the first `len` bytes of the dma-buf `fd`.
fn with_mapping<T>(
    fd: std::os::fd::BorrowedFd<'_>,
    len: usize,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T, ScreenshotError> {
    // SAFETY: a shared read-only mapping of `len` bytes of a dma-buf the caller holds
    // open, whose layout lies within the buffer (the caller's check). The mapping is
    // removed below and only read through `data` in between.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(|e| ScreenshotError::Readback(format!("mmap of a scanout buffer: {e}")))?;
    // SAFETY: `ptr` maps `len` readable bytes (above) until the munmap below.
    let data = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>().cast_const(), len) };
    let out = f(data);
    // SAFETY: unmapping exactly the mapping made above; `data` is not used after this.
    let _ = unsafe { rustix::mm::munmap(ptr, len) };
    Ok(out)
}

/// Draw a client's LINEAR XRGB8888/ARGB8888 dma-buf over `shot` at `at`, read on the CPU.
fn draw_mapped_dmabuf(
    shot: &mut Screenshot,
    at: (i32, i32),
    dmabuf: &smithay::backend::allocator::dmabuf::Dmabuf,
) -> Result<(), ScreenshotError> {
    use smithay::backend::allocator::{Buffer as _, Fourcc, Modifier};
    let format = dmabuf.format();
    let alpha = match format.code {
        Fourcc::Argb8888 => true,
        Fourcc::Xrgb8888 => false,
        other => {
            return Err(ScreenshotError::Readback(format!(
                "unsupported overlay format {other:?}"
            )))
        }
    };
    if !matches!(format.modifier, Modifier::Linear | Modifier::Invalid) {
        return Err(ScreenshotError::Readback("tiled overlay buffer".into()));
    }
    let (Some(fd), Some(offset), Some(stride)) = (
        dmabuf.handles().next(),
        dmabuf.offsets().next(),
        dmabuf.strides().next(),
    ) else {
        return Err(ScreenshotError::Readback("a dma-buf without planes".into()));
    };
    let (width, height) = (dmabuf.width(), dmabuf.height());
    let (offset, stride) = (offset as usize, stride as usize);
    let len = offset + stride * height as usize;
    with_mapping(fd, len, |data| {
        shot.draw_over(
            at,
            width,
            height,
            stride,
            PixelOrder::Bgrx,
            alpha,
            &data[offset..],
        )
    })?
}
