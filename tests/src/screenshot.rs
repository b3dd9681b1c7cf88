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
/// pixels face-on in its 250x250 window, 192 in a frame caught 3 degrees from edge-on. A
/// fixed area threshold therefore fails on some frames of a correct compositor; what does
/// not depend on the angle is that a frame with the client's pixels has some hue, and that
/// a frame without them (the all-black read-back this guards against) has none. Edge-on,
/// though, the triangle has no area at all, and that is not rare: see
/// [`run_with_simple_egl_triangle`], which the tests go through.
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

/// Runs `shoot` (a compositor run whose client is weston-simple-egl, returning what the
/// test asserts on and the screenshot taken at its end) and asserts that the triangle is in
/// the screenshot; returns that run.
///
/// weston-simple-egl's angle is whole degrees of its wall clock (`(ms / 5) % 360`), so at
/// 90 and 270 degrees, for 5 ms in every 900, the triangle is exactly edge-on and the
/// client's frame has no hue at all: one screenshot in 180 (CI met one; with the client's
/// `gettimeofday` pinned to 450 or 1350 ms the screenshot had 0 hued pixels, at 0 and 200
/// ms 37,728 and 28,914). So a screenshot without hue is taken again, once, in a new run:
/// an empty buffer (what this guards against) is empty in both, while two edge-on frames
/// in a row come once in 32,400.
pub fn run_with_simple_egl_triangle<T>(
    what: &str,
    mut shoot: impl FnMut() -> (T, Image),
) -> (T, Image) {
    let first = shoot();
    if first.1.hued_pixels() > 0 {
        assert_simple_egl_triangle(&first.1, what);
        return first;
    }
    println!(
        "{what}: no hue in the last frame of the first run: an edge-on triangle (1 frame in \
         180) looks like that as well as an empty buffer does; running again"
    );
    let second = shoot();
    assert_simple_egl_triangle(&second.1, what);
    second
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

    #[test]
    fn a_frame_without_hue_is_taken_again_once_and_the_second_decides() {
        let empty = || image(&[[26, 26, 31], [0, 0, 0]]);
        let sliver = || image(&[[26, 26, 31], [10, 12, 90]]);
        // Hue in the first run: one run.
        let mut runs = 0;
        let (n, _) = run_with_simple_egl_triangle("first", || {
            runs += 1;
            (runs, sliver())
        });
        assert_eq!((n, runs), (1, 1));
        // Edge-on first, hue second: the second run is returned.
        let mut runs = 0;
        let (n, _) = run_with_simple_egl_triangle("edge-on once", || {
            runs += 1;
            (runs, if runs == 1 { empty() } else { sliver() })
        });
        assert_eq!((n, runs), (2, 2));
        // Empty in both: fails, after two runs and no more.
        let mut runs = 0;
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_with_simple_egl_triangle("empty", || {
                runs += 1;
                ((), empty())
            })
        }))
        .is_err();
        assert!(failed);
        assert_eq!(runs, 2);
    }
}
