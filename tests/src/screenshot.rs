//! Reading the compositor's `--screenshot` PNGs, and what the tests look for in them.

use std::path::Path;

/// A decoded screenshot: RGB per pixel, rows top first.
#[derive(Debug)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<[u8; 3]>,
}

/// Reads an 8-bit RGBA or RGB PNG (what `--screenshot` writes).
pub fn read_png(path: &Path) -> Result<Image, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = png::Decoder::new(file)
        .read_info()
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let channels = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => return Err(format!("colour type {other:?}")),
    };
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(Image {
        width: info.width,
        height: info.height,
        rgb,
    })
}

impl Image {
    /// Pixels of strong colour (the clients' red/green/blue gradients; the compositor's
    /// background is dark grey and weston's window backgrounds are grey or black).
    pub fn coloured_pixels(&self) -> usize {
        self.count(|max, min| max >= 150 && max - min >= 100)
    }

    /// Pixels with any hue at all, dark ones included: everything but greys.
    pub fn hued_pixels(&self) -> usize {
        self.count(|max, min| max - min >= 24)
    }

    fn count(&self, keep: impl Fn(u8, u8) -> bool) -> usize {
        self.rgb
            .iter()
            .filter(|p| {
                let max = p[0].max(p[1]).max(p[2]);
                let min = p[0].min(p[1]).min(p[2]);
                keep(max, min)
            })
            .count()
    }
}

/// Asserts that weston-simple-egl's triangle is in `image`.
///
/// The triangle (red, green and blue corners) turns about its vertical axis, so the area
/// it covers in one frame goes with |cos| of its angle: about 4,000 strongly coloured
/// pixels face-on in its 250x250 window, 192 in a frame caught 3 degrees from edge-on,
/// none exactly edge-on. A fixed area threshold therefore fails on some frames of a
/// correct compositor; what does not depend on the angle is that a frame with the
/// client's pixels has some hue, and that a frame without them (the all-black read-back
/// this guards against) has none. Exactly edge-on (within about 0.01 degree) the triangle
/// has no area and this would fail: about one frame in 10,000.
pub fn assert_simple_egl_triangle(image: &Image, what: &str) {
    let hued = image.hued_pixels();
    let coloured = image.coloured_pixels();
    println!(
        "{what}: {hued} hued pixels, {coloured} strongly coloured, in {}x{}",
        image.width, image.height
    );
    assert!(
        hued >= 1,
        "{what}: weston-simple-egl's triangle is on screen: {hued} pixels with any hue in {}x{}",
        image.width,
        image.height
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(pixels: &[[u8; 3]]) -> Image {
        Image {
            width: pixels.len() as u32,
            height: 1,
            rgb: pixels.to_vec(),
        }
    }

    #[test]
    fn greys_and_black_have_no_hue_and_a_sliver_of_triangle_has() {
        // The compositor's background, a translucent black window over it, black.
        let empty = image(&[[26, 26, 31], [13, 13, 15], [0, 0, 0]]);
        assert_eq!(empty.hued_pixels(), 0);
        assert!(std::panic::catch_unwind(|| assert_simple_egl_triangle(&empty, "empty")).is_err());
        // One dark-blue pixel of the triangle's edge.
        let sliver = image(&[[26, 26, 31], [10, 12, 90]]);
        assert_eq!(sliver.hued_pixels(), 1);
        assert_eq!(sliver.coloured_pixels(), 0);
        assert_simple_egl_triangle(&sliver, "sliver");
    }
}
