//! What a plane can scan out: its `IN_FORMATS` blob (struct `drm_format_modifier_blob`:
//! the formats, and per modifier a 64-bit mask of which of them take it), or, on drivers
//! without modifiers (no `IN_FORMATS`), its format list with the implicit modifier.
//!
//! Read for the scanout tranche of linux-dmabuf feedback
//! ([`dmabuf_scanout`](crate::backend::tty::dmabuf_scanout)).

use smithay::{
    backend::allocator::{Format, Fourcc, Modifier},
    reexports::drm::control::plane,
};

use super::device::PropMap;

/// Errors reading a plane's formats. Kernel errors keep their errno.
#[derive(Debug, thiserror::Error)]
pub enum InFormatsError {
    /// An ioctl failed.
    #[error("{what} of plane {plane:?}: {source}")]
    Kms {
        /// What was read.
        what: &'static str,
        /// The plane.
        plane: plane::Handle,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The blob is shorter than its header says.
    #[error("IN_FORMATS blob of plane {plane:?} is malformed: {why}")]
    Malformed {
        /// The plane.
        plane: plane::Handle,
        /// What does not fit.
        why: &'static str,
    },
}

/// Size of `struct drm_format_modifier_blob` (six u32).
const HEADER: usize = 24;
/// Size of `struct drm_format_modifier` (u64 formats, u32 offset, u32 pad, u64 modifier).
const MODIFIER: usize = 24;

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

/// Decode a `drm_format_modifier_blob` into (fourcc, modifier) pairs. Fourccs unknown to
/// `drm-fourcc` are skipped (no client can name them to us either).
pub fn parse_blob(data: &[u8]) -> Result<Vec<Format>, &'static str> {
    if data.len() < HEADER {
        return Err("shorter than its header");
    }
    let field = |i: usize| u32_at(data, i * 4).map(|v| v as usize);
    let (Some(count_formats), Some(formats_offset), Some(count_modifiers), Some(modifiers_offset)) =
        (field(2), field(3), field(4), field(5))
    else {
        return Err("shorter than its header");
    };
    let mut codes = Vec::with_capacity(count_formats);
    for i in 0..count_formats {
        let at = formats_offset
            .checked_add(i.checked_mul(4).ok_or("format count overflows")?)
            .ok_or("format offset overflows")?;
        codes.push(u32_at(data, at).ok_or("format list past the end")?);
    }
    let mut out = Vec::new();
    for m in 0..count_modifiers {
        let at = modifiers_offset
            .checked_add(m.checked_mul(MODIFIER).ok_or("modifier count overflows")?)
            .ok_or("modifier offset overflows")?;
        let (Some(mask), Some(offset), Some(modifier)) = (
            u64_at(data, at),
            u32_at(data, at + 8),
            u64_at(data, at + 16),
        ) else {
            return Err("modifier list past the end");
        };
        for bit in 0..64usize {
            if mask & (1u64 << bit) == 0 {
                continue;
            }
            let Some(code) = codes.get(offset as usize + bit) else {
                return Err("modifier names a format past the list");
            };
            if let Ok(code) = Fourcc::try_from(*code) {
                let format = Format {
                    code,
                    modifier: Modifier::from(modifier),
                };
                if !out.contains(&format) {
                    out.push(format);
                }
            }
        }
    }
    Ok(out)
}

/// The formats `plane` scans out: `IN_FORMATS` when the driver has it, else the plane's
/// format list with [`Modifier::Invalid`] (the driver takes no modifiers: its layout is
/// implicit, which is how [`planes::import`](super::planes::import) adds such buffers).
pub fn plane_formats(
    dev: &impl smithay::reexports::drm::control::Device,
    plane: plane::Handle,
) -> Result<Vec<Format>, InFormatsError> {
    let kms = |what| {
        move |source| InFormatsError::Kms {
            what,
            plane,
            source,
        }
    };
    let props = PropMap::read(dev, plane).map_err(kms("reading the properties"))?;
    match props.value("IN_FORMATS").filter(|b| *b != 0) {
        Some(blob) => {
            let data = dev
                .get_property_blob(blob)
                .map_err(kms("reading IN_FORMATS"))?;
            parse_blob(&data).map_err(|why| InFormatsError::Malformed { plane, why })
        }
        None => {
            let info = dev.get_plane(plane).map_err(kms("reading the plane"))?;
            Ok(info
                .formats()
                .iter()
                .filter_map(|c| Fourcc::try_from(*c).ok())
                .map(|code| Format {
                    code,
                    modifier: Modifier::Invalid,
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(formats: &[u32], modifiers: &[(u64, u32, u64)]) -> Vec<u8> {
        let formats_offset = HEADER as u32;
        let modifiers_offset = formats_offset + 4 * formats.len() as u32;
        let mut data = Vec::new();
        for v in [
            1,
            0,
            formats.len() as u32,
            formats_offset,
            modifiers.len() as u32,
            modifiers_offset,
        ] {
            data.extend_from_slice(&u32::to_ne_bytes(v));
        }
        for f in formats {
            data.extend_from_slice(&f.to_ne_bytes());
        }
        for (mask, offset, modifier) in modifiers {
            data.extend_from_slice(&mask.to_ne_bytes());
            data.extend_from_slice(&offset.to_ne_bytes());
            data.extend_from_slice(&0u32.to_ne_bytes());
            data.extend_from_slice(&modifier.to_ne_bytes());
        }
        data
    }

    #[test]
    fn each_modifier_applies_to_the_formats_its_mask_names() {
        let xr24 = Fourcc::Xrgb8888 as u32;
        let ar24 = Fourcc::Argb8888 as u32;
        let rg16 = Fourcc::Rgb565 as u32;
        // LINEAR for all three; a vendor modifier for the second only.
        let data = blob(
            &[xr24, ar24, rg16],
            &[(0b111, 0, 0), (0b010, 0, 0x0100_0000_0000_0001)],
        );
        let formats = parse_blob(&data).expect("well-formed");
        let pairs: Vec<(u32, u64)> = formats
            .iter()
            .map(|f| (f.code as u32, u64::from(f.modifier)))
            .collect();
        assert_eq!(
            pairs,
            vec![
                (xr24, 0),
                (ar24, 0),
                (rg16, 0),
                (ar24, 0x0100_0000_0000_0001)
            ]
        );
    }

    #[test]
    fn a_truncated_blob_is_refused_not_read_past() {
        let data = blob(&[Fourcc::Xrgb8888 as u32], &[(0b1, 0, 0)]);
        assert!(parse_blob(&data[..data.len() - 4]).is_err());
        assert!(parse_blob(&data[..10]).is_err());
        // A mask naming a format past the list.
        let bad = blob(&[Fourcc::Xrgb8888 as u32], &[(0b10, 0, 0)]);
        assert!(parse_blob(&bad).is_err());
    }
}
