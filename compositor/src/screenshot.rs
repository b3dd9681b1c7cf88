//! PNG screenshots of an output, for people (`--screenshot PATH`, SIGUSR1) and for
//! tests that check what the compositor showed.
//!
//! Each backend reads its output back into a [`Screenshot`] (8-bit RGBA, top row
//! first): the headless backend from its pixman offscreen image or (GLES) its GBM
//! buffer through GL, the nested backend from the GLES framebuffer. This module converts and encodes; it knows no renderer.

use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
};

/// Errors taking or writing a screenshot.
#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    /// There is no output with this index.
    #[error("no output #{0} to capture")]
    NoSuchOutput(usize),
    /// The backend has nothing to read back (for example a frame never rendered).
    #[error("the {0} backend cannot capture its output")]
    Unsupported(&'static str),
    /// The renderer failed to read its framebuffer back.
    #[error("reading back the framebuffer: {0}")]
    Readback(String),
    /// The pixels do not match the stated size and layout.
    #[error("framebuffer layout: {0}")]
    Layout(&'static str),
    /// Creating the file failed.
    #[error("creating {path}: {source}")]
    Create {
        /// Target path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Encoding or writing the PNG failed.
    #[error("writing PNG {path}: {source}")]
    Encode {
        /// Target path.
        path: PathBuf,
        /// Why.
        #[source]
        source: png::EncodingError,
    },
}

/// An opaque 8-bit RGBA image, rows top to bottom, no padding.
#[derive(Clone, PartialEq, Eq)]
pub struct Screenshot {
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

impl std::fmt::Debug for Screenshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Screenshot")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

/// Source byte order of one pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelOrder {
    /// DRM `XRGB8888`/`ARGB8888` in memory on little endian: B, G, R, X.
    Bgrx,
    /// DRM `ABGR8888`/`XBGR8888` (GL `RGBA`/`UNSIGNED_BYTE`): R, G, B, A.
    Rgbx,
}

/// Bytes of a row of `width` 4-byte pixels, and of the whole image at `stride`.
fn layout(width: u32, height: u32, stride: usize) -> Result<(usize, usize), ScreenshotError> {
    let row = usize::try_from(width)
        .ok()
        .and_then(|w| w.checked_mul(4))
        .ok_or(ScreenshotError::Layout("width overflows"))?;
    if stride < row {
        return Err(ScreenshotError::Layout("stride shorter than a row"));
    }
    let total = usize::try_from(height)
        .ok()
        .and_then(|h| h.checked_mul(stride))
        .ok_or(ScreenshotError::Layout("height overflows"))?;
    Ok((row, total))
}

impl Screenshot {
    /// Convert `data` (`height` rows of `stride` bytes, 4 bytes per pixel in `order`,
    /// bottom row first when `flipped`) into an opaque RGBA screenshot.
    pub fn from_pixels(
        width: u32,
        height: u32,
        stride: usize,
        order: PixelOrder,
        flipped: bool,
        data: &[u8],
    ) -> Result<Self, ScreenshotError> {
        let (row_len, total) = layout(width, height, stride)?;
        if data.len() < total {
            return Err(ScreenshotError::Layout("fewer bytes than height * stride"));
        }
        let mut rgba = Vec::with_capacity(row_len * height as usize);
        let mut push_row = |row: &[u8]| {
            for px in row[..row_len].chunks_exact(4) {
                let (r, g, b) = match order {
                    PixelOrder::Bgrx => (px[2], px[1], px[0]),
                    PixelOrder::Rgbx => (px[0], px[1], px[2]),
                };
                rgba.extend_from_slice(&[r, g, b, 0xff]);
            }
        };
        let rows = data[..total].chunks_exact(stride);
        if flipped {
            rows.rev().for_each(&mut push_row);
        } else {
            rows.for_each(&mut push_row);
        }
        Ok(Self {
            width,
            height,
            rgba,
        })
    }

    /// Draw `data` (`height` rows of `stride` bytes, `width` 4-byte pixels in `order`)
    /// with its top-left corner at (`x`, `y`), clipped to this image: copied when
    /// `alpha` is false, else blended over (premultiplied alpha, as KMS blends planes).
    #[allow(clippy::too_many_arguments)]
    pub fn draw_over(
        &mut self,
        (x, y): (i32, i32),
        width: u32,
        height: u32,
        stride: usize,
        order: PixelOrder,
        alpha: bool,
        data: &[u8],
    ) -> Result<(), ScreenshotError> {
        let (_, total) = layout(width, height, stride)?;
        if data.len() < total {
            return Err(ScreenshotError::Layout("fewer bytes than height * stride"));
        }
        for sy in 0..height {
            let ty = i64::from(y) + i64::from(sy);
            let Ok(ty) = u32::try_from(ty) else {
                continue;
            };
            if ty >= self.height {
                break;
            }
            for sx in 0..width {
                let Ok(tx) = u32::try_from(i64::from(x) + i64::from(sx)) else {
                    continue;
                };
                if tx >= self.width {
                    break;
                }
                let at = sy as usize * stride + sx as usize * 4;
                let px = &data[at..at + 4];
                let (r, g, b, a) = match order {
                    PixelOrder::Bgrx => (px[2], px[1], px[0], px[3]),
                    PixelOrder::Rgbx => (px[0], px[1], px[2], px[3]),
                };
                let i = (ty as usize * self.width as usize + tx as usize) * 4;
                let dst = &mut self.rgba[i..i + 3];
                if !alpha || a == 0xff {
                    dst.copy_from_slice(&[r, g, b]);
                } else {
                    let keep = u16::from(0xff - a);
                    for (d, s) in dst.iter_mut().zip([r, g, b]) {
                        let v = u16::from(s) + (u16::from(*d) * keep + 127) / 255;
                        *d = v.min(0xff) as u8;
                    }
                }
            }
        }
        Ok(())
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// RGBA bytes, top row first.
    pub fn rgba(&self) -> &[u8] {
        &self.rgba
    }

    /// The pixel at (`x`, `y`) as `[r, g, b, a]`, if inside.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 4;
        let px = self.rgba.get(i..i + 4)?;
        Some([px[0], px[1], px[2], px[3]])
    }

    /// Write this image as an 8-bit RGBA PNG at `path`. The file is written next to
    /// it and renamed into place, so a reader never sees half a PNG.
    pub fn write_png(&self, path: &Path) -> Result<(), ScreenshotError> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let create = |source| ScreenshotError::Create {
            path: path.to_owned(),
            source,
        };
        let result = self
            .encode(&partial)
            .and_then(|()| std::fs::rename(&partial, path).map_err(create));
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    fn encode(&self, path: &Path) -> Result<(), ScreenshotError> {
        let encode = |source| ScreenshotError::Encode {
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(|source| ScreenshotError::Create {
            path: path.to_owned(),
            source,
        })?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), self.width, self.height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(encode)?;
        writer.write_image_data(&self.rgba).map_err(encode)?;
        writer.finish().map_err(encode)
    }
}

/// Read back output `index` of the headless backend: its pixman image holds the last
/// rendered frame, or (GLES) its GBM buffer, read back through GL (a GPU buffer's CPU
/// mapping need not show what the GPU wrote, and its layout may be tiled).
pub fn capture_headless(
    backend: &mut crate::backend::HeadlessBackend,
    index: usize,
) -> Result<Screenshot, ScreenshotError> {
    use crate::backend::headless::HeadlessTarget;
    let image = match backend
        .framebuffer(index)
        .ok_or(ScreenshotError::NoSuchOutput(index))?
    {
        HeadlessTarget::Pixman(image) => image,
        HeadlessTarget::Gles { dmabuf, .. } => {
            let dmabuf = dmabuf.clone();
            let gpu = backend
                .gles()
                .ok_or(ScreenshotError::Readback("no GLES renderer".into()))?;
            return crate::backend::gpu_renderer::read_back(gpu.gles(), dmabuf);
        }
    };
    let width = u32::try_from(image.width()).map_err(|_| ScreenshotError::Layout("width"))?;
    let height = u32::try_from(image.height()).map_err(|_| ScreenshotError::Layout("height"))?;
    let stride = image.stride();
    let len = stride
        .checked_mul(image.height())
        .ok_or(ScreenshotError::Layout("size overflows"))?;
    // SAFETY: `data()` only reads the pointer to the image's bits.
    let bits = unsafe { image.data() };
    if bits.is_null() {
        return Err(ScreenshotError::Unsupported("headless"));
    }
    // SAFETY: the headless backend creates this image with its own bits (pixman
    // allocates `stride * height` bytes, alive as long as the image, which `backend`
    // borrows for this whole function); nothing writes to it while we read, since
    // rendering needs `&mut` of the backend.
    let data = unsafe { std::slice::from_raw_parts(bits.cast::<u8>().cast_const(), len) };
    // The headless outputs are XRGB8888 (B, G, R, X in memory).
    Screenshot::from_pixels(width, height, stride, PixelOrder::Bgrx, false, data)
}

impl crate::State {
    /// Capture output `index` as it is now and write it as a PNG at `path`.
    pub fn write_screenshot(&mut self, index: usize, path: &Path) -> Result<(), ScreenshotError> {
        let shot = self.backend.capture(index, &self.space)?;
        shot.write_png(path)?;
        tracing::info!(
            path = %path.display(),
            size = ?(shot.width(), shot.height()),
            "screenshot written"
        );
        Ok(())
    }
}

/// Write a screenshot of the first output to `path` whenever SIGUSR1 arrives.
pub fn on_sigusr1(
    server: &mut crate::Server,
    path: PathBuf,
) -> Result<(), crate::server::ServerError> {
    use smithay::reexports::calloop::signals::{Signal, Signals};
    let source_error = |message: String| crate::server::ServerError::Source {
        what: "the SIGUSR1 handler",
        message,
    };
    let signals = Signals::new(&[Signal::SIGUSR1]).map_err(|e| source_error(e.to_string()))?;
    server
        .event_loop
        .handle()
        .insert_source(signals, move |_, _, state| {
            if let Err(err) = state.write_screenshot(0, &path) {
                tracing::warn!(%err, "SIGUSR1 screenshot");
            }
        })
        .map_err(|e| source_error(e.error.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_over_clips_copies_and_blends_premultiplied() {
        // A 3x2 grey image.
        let grey = [100u8, 100, 100, 0].repeat(6);
        let mut shot = Screenshot::from_pixels(3, 2, 12, PixelOrder::Bgrx, false, &grey)
            .expect("valid layout");
        // 2x2 BGRA, drawn at (-1, 1): only its right column's top pixel lands, at (0, 1).
        let over = [
            0, 0, 0, 0xff, 10, 20, 0x80, 0x80, // row 0: opaque black, half-alpha red-ish
            1, 1, 1, 0xff, 1, 1, 1, 0xff, // row 1: below the image
        ];
        shot.draw_over((-1, 1), 2, 2, 8, PixelOrder::Bgrx, true, &over)
            .expect("draw");
        // Premultiplied: src + dst * (255 - a) / 255, with a = 0x80.
        let keep = |d: u16| ((d * (255 - 0x80) + 127) / 255) as u8;
        assert_eq!(
            shot.pixel(0, 1),
            Some([0x80 + keep(100), 20 + keep(100), 10 + keep(100), 255])
        );
        // Untouched elsewhere.
        assert_eq!(shot.pixel(1, 1), Some([100, 100, 100, 255]));
        assert_eq!(shot.pixel(0, 0), Some([100, 100, 100, 255]));
        // Without alpha the source is copied, even where its alpha byte says 0.
        let x = [5u8, 6, 7, 0];
        shot.draw_over((2, 0), 1, 1, 4, PixelOrder::Bgrx, false, &x)
            .expect("draw");
        assert_eq!(shot.pixel(2, 0), Some([7, 6, 5, 255]));
    }

    #[test]
    fn converts_bgrx_with_stride_and_rgbx_flipped() {
        // 2x2, stride 12 (4 bytes padding per row).
        let bgrx = [
            1, 2, 3, 0, 4, 5, 6, 0, 9, 9, 9, 9, //
            7, 8, 9, 0, 10, 11, 12, 0, 9, 9, 9, 9,
        ];
        let shot = Screenshot::from_pixels(2, 2, 12, PixelOrder::Bgrx, false, &bgrx)
            .expect("valid layout");
        assert_eq!(shot.pixel(0, 0), Some([3, 2, 1, 255]));
        assert_eq!(shot.pixel(1, 1), Some([12, 11, 10, 255]));
        assert_eq!(shot.pixel(2, 0), None);

        let rgbx = [1, 2, 3, 0, 4, 5, 6, 0];
        let shot =
            Screenshot::from_pixels(1, 2, 4, PixelOrder::Rgbx, true, &rgbx).expect("valid layout");
        assert_eq!(shot.pixel(0, 0), Some([4, 5, 6, 255]), "bottom row first");
    }

    #[test]
    fn rejects_short_buffers() {
        assert!(Screenshot::from_pixels(2, 2, 8, PixelOrder::Rgbx, false, &[0; 15]).is_err());
        assert!(Screenshot::from_pixels(2, 2, 4, PixelOrder::Rgbx, false, &[0; 16]).is_err());
    }

    #[test]
    fn writes_a_png_that_decodes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shot.png");
        let data: Vec<u8> = (0..3 * 2 * 4).map(|i| i as u8).collect();
        let shot = Screenshot::from_pixels(3, 2, 12, PixelOrder::Rgbx, false, &data)
            .expect("valid layout");
        shot.write_png(&path).expect("written");
        let decoder = png::Decoder::new(File::open(&path).expect("exists"));
        let mut reader = decoder.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("png data");
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(&buf[..info.buffer_size()], shot.rgba());
    }
}
