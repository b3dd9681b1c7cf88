//! GLES composition on a DRM device: smithay's `GlesRenderer` on EGL over GBM, and GBM
//! buffers to composite into.
//!
//! The frame's truth is its render fence. With `EGL_ANDROID_native_fence_sync` (every
//! hardware Mesa driver, virgl included) each render's sync point exports as a
//! `sync_file`: the tty backend sets it as the primary plane's `IN_FENCE_FD` (the
//! compositor never waits for its own render on the CPU before a commit) and the fence
//! bridge imports it into every buffer the frame sampled. Without native fences
//! (llvmpipe), sampled buffers are held until a thread saw the render finish
//! ([`crate::render_wait`]).
//!
//! A software EGL driver (Mesa's kms_swrast/llvmpipe on VKMS or a virtio-gpu without
//! virgl) is refused unless GLES was asked for by name: pixman composites there with
//! less CPU and no GL context, and [`RendererChoice::Auto`] falls back to it. Where the
//! kernel driver settles it ([`super::gl_driver`]), EGL is not even loaded.
//!
//! Fds: the GBM device and EGL display hold their own duplicates of the DRM device fd
//! (`DrmDeviceFd` is reference counted); buffers allocated here are owned by the caller.

use std::{ffi::CStr, os::fd::OwnedFd, path::PathBuf};

use super::gl_driver;
use smithay::backend::{
    allocator::{
        dmabuf::{AsDmabuf, Dmabuf},
        gbm::{GbmAllocator, GbmBuffer, GbmBufferFlags, GbmDevice},
        Allocator, Format, Fourcc, Modifier,
    },
    drm::DrmDeviceFd,
    egl::{EGLContext, EGLDevice, EGLDisplay},
    renderer::{
        gles::{ffi, GlesError, GlesRenderer},
        ImportDma,
    },
};

/// `--renderer`: which renderer composites.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RendererChoice {
    /// GLES on a hardware EGL driver, otherwise pixman (the reason is logged).
    #[default]
    Auto,
    /// GLES, also on a software EGL driver; fail when EGL or GBM cannot be set up.
    Gles,
    /// pixman, on the CPU.
    Pixman,
}

/// Why GLES cannot composite on a device. `Software` is "unsupported here" for
/// [`RendererChoice::Auto`] (fall back to pixman); the others keep the OS's answer.
#[derive(Debug, thiserror::Error)]
pub enum GpuSetupError {
    /// The renderer's own file on the GPU could not be opened.
    #[error("opening {path} for the renderer: {source}")]
    Open {
        /// Device path.
        path: String,
        /// The OS's answer (errno inside).
        #[source]
        source: std::io::Error,
    },
    /// GBM could not open the device.
    #[error("GBM on {path}: {source}")]
    Gbm {
        /// Device path.
        path: String,
        /// The OS's answer (errno inside).
        #[source]
        source: std::io::Error,
    },
    /// EGL could not be initialised on the GBM device.
    #[error("EGL on {path}: {source}")]
    Egl {
        /// Device path.
        path: String,
        /// EGL's answer.
        #[source]
        source: smithay::backend::egl::Error,
    },
    /// The GLES renderer could not be created.
    #[error("GLES renderer on {path}: {source}")]
    Gles {
        /// Device path.
        path: String,
        /// Why.
        #[source]
        source: GlesError,
    },
    /// The kernel says EGL would render on the CPU ([`super::gl_driver`]); EGL was not loaded.
    #[error("the EGL driver of {path} would render in software: {why}")]
    NoHardwareGl {
        /// Device path.
        path: String,
        /// The kernel driver and what it lacks.
        why: String,
    },
    /// The EGL driver renders on the CPU.
    #[error("the EGL driver of {path} renders in software ({gl_renderer})")]
    Software {
        /// Device path.
        path: String,
        /// GL_RENDERER.
        gl_renderer: String,
    },
}

impl GpuSetupError {
    /// GLES would run on a CPU rasterizer: "unsupported here" for [`RendererChoice::Auto`],
    /// which composites with pixman instead.
    pub fn is_software(&self) -> bool {
        matches!(self, Self::Software { .. } | Self::NoHardwareGl { .. })
    }
}

/// What the GLES renderer runs on, for the start-up log and the stats.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GpuInfo {
    /// The DRM device it was opened on.
    pub device: PathBuf,
    /// The EGL device's render node, when EGL names one.
    pub render_node: Option<PathBuf>,
    /// GL_RENDERER (for example "virgl (LLVMPIPE ...)").
    pub gl_renderer: String,
    /// GL_VERSION.
    pub gl_version: String,
    /// EGL renders on the CPU (llvmpipe, softpipe).
    pub software: bool,
    /// `EGL_ANDROID_native_fence_sync`: render fences export as sync_files.
    pub native_fences: bool,
}

/// smithay's GLES renderer plus a GBM allocator on the same device.
#[derive(Debug)]
pub struct GpuRenderer {
    renderer: GlesRenderer,
    allocator: GbmAllocator<DrmDeviceFd>,
    /// What it runs on.
    pub info: GpuInfo,
}

fn gl_string(renderer: &mut GlesRenderer, name: ffi::types::GLenum) -> String {
    renderer
        .with_context(|gl| {
            // SAFETY: the context is current inside `with_context`; glGetString returns
            // a static, NUL-terminated string or NULL, which is checked first.
            unsafe {
                let ptr = gl.GetString(name);
                if ptr.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(ptr.cast()).to_string_lossy().into_owned()
                }
            }
        })
        .unwrap_or_default()
}

/// Renderer names of Mesa's CPU rasterizers.
fn is_software_renderer(gl_renderer: &str) -> bool {
    let lower = gl_renderer.to_ascii_lowercase();
    // "virgl (LLVMPIPE ...)" is a virtio-gpu whose host renders with llvmpipe: the guest's
    // driver is virgl, a real GPU driver with native fences, so it does not count.
    !lower.starts_with("virgl")
        && ["llvmpipe", "softpipe", "swrast"]
            .iter()
            .any(|s| lower.contains(s))
}

impl GpuRenderer {
    /// GLES on EGL over GBM on `fd` (a KMS card or a render node at `path`).
    /// `allow_software` accepts a CPU rasterizer (`--renderer gles`).
    pub fn new(
        fd: DrmDeviceFd,
        path: &std::path::Path,
        allow_software: bool,
    ) -> Result<Self, GpuSetupError> {
        let path_str = path.display().to_string();
        if !allow_software {
            if let Some(why) = gl_driver::kernel_says_software(&fd) {
                return Err(GpuSetupError::NoHardwareGl {
                    path: path_str,
                    why,
                });
            }
        }
        let gbm = GbmDevice::new(fd).map_err(|source| GpuSetupError::Gbm {
            path: path_str.clone(),
            source,
        })?;
        // SAFETY: the GBM device stays alive as long as the display (EGLDisplay keeps a
        // clone of it), and nothing else makes EGL calls on it.
        let display =
            unsafe { EGLDisplay::new(gbm.clone()) }.map_err(|source| GpuSetupError::Egl {
                path: path_str.clone(),
                source,
            })?;
        let egl_device = EGLDevice::device_for_display(&display).ok();
        let render_node = egl_device
            .as_ref()
            .and_then(|d| d.render_device_path().ok());
        let egl_software = egl_device.as_ref().is_some_and(EGLDevice::is_software);
        let native_fences = display
            .extensions()
            .iter()
            .any(|e| e == "EGL_ANDROID_native_fence_sync");
        let context = EGLContext::new(&display).map_err(|source| GpuSetupError::Egl {
            path: path_str.clone(),
            source,
        })?;
        // SAFETY: the context was just created for this renderer and is used by it alone.
        let mut renderer =
            unsafe { GlesRenderer::new(context) }.map_err(|source| GpuSetupError::Gles {
                path: path_str.clone(),
                source,
            })?;
        let gl_renderer = gl_string(&mut renderer, ffi::RENDERER);
        let gl_version = gl_string(&mut renderer, ffi::VERSION);
        let software = egl_software || is_software_renderer(&gl_renderer);
        if software && !allow_software {
            return Err(GpuSetupError::Software {
                path: path_str,
                gl_renderer,
            });
        }
        let allocator = GbmAllocator::new(gbm, GbmBufferFlags::RENDERING | GbmBufferFlags::SCANOUT);
        Ok(Self {
            renderer,
            allocator,
            info: GpuInfo {
                device: path.to_path_buf(),
                render_node,
                gl_renderer,
                gl_version,
                software,
                native_fences,
            },
        })
    }

    /// The GLES renderer.
    pub fn gles(&mut self) -> &mut GlesRenderer {
        &mut self.renderer
    }

    /// Formats and modifiers the renderer imports from clients (linux-dmabuf).
    pub fn dmabuf_formats(&self) -> Vec<Format> {
        self.renderer.dmabuf_formats().into_iter().collect()
    }

    /// Check that a client dma-buf imports (creates the EGLImage now, so a buffer the
    /// driver cannot use fails at `create`, not at render time).
    pub fn check_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<(), GlesError> {
        self.renderer.import_dmabuf(dmabuf, None).map(|_| ())
    }

    /// A buffer to composite into and scan out: GBM chooses a scannable layout
    /// (`GBM_BO_USE_SCANOUT | GBM_BO_USE_RENDERING`, implicit modifier).
    pub fn allocate(
        &mut self,
        width: u32,
        height: u32,
        format: Fourcc,
    ) -> Result<(GbmBuffer, Dmabuf), std::io::Error> {
        let buffer = self
            .allocator
            .create_buffer(width, height, format, &[Modifier::Invalid])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let dmabuf = buffer
            .export()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok((buffer, dmabuf))
    }
}

/// Read a dma-buf back through GL: bind it, copy it into memory (RGBA bytes), wait.
pub fn read_back(
    renderer: &mut GlesRenderer,
    mut dmabuf: Dmabuf,
) -> Result<crate::screenshot::Screenshot, crate::screenshot::ScreenshotError> {
    use crate::screenshot::{PixelOrder, Screenshot, ScreenshotError};
    use smithay::{
        backend::{
            allocator::Buffer,
            renderer::{Bind, ExportMem},
        },
        utils::Rectangle,
    };
    let readback = |e: &dyn std::fmt::Display| ScreenshotError::Readback(e.to_string());
    let size = dmabuf.size();
    let fb = renderer.bind(&mut dmabuf).map_err(|e| readback(&e))?;
    let region = Rectangle::from_size((size.w, size.h).into());
    let mapping = renderer
        .copy_framebuffer(&fb, region, Fourcc::Abgr8888)
        .map_err(|e| readback(&e))?;
    drop(fb);
    // smithay's mappings say "flipped" (GL's bottom-up rows), but it renders into dma-buf
    // targets top row first, and glReadPixels returns rows in memory order: the first
    // row read is the top one, whatever `TextureMapping::flipped` says.
    let flipped = false;
    let bytes = renderer.map_texture(&mapping).map_err(|e| readback(&e))?;
    let width = u32::try_from(size.w).map_err(|_| ScreenshotError::Layout("width"))?;
    let height = u32::try_from(size.h).map_err(|_| ScreenshotError::Layout("height"))?;
    Screenshot::from_pixels(
        width,
        height,
        width as usize * 4,
        PixelOrder::Rgbx,
        flipped,
        bytes,
    )
}

/// The render's fence as an fd the kernel can wait on (`IN_FENCE_FD`), when EGL exports
/// one. `None` when the render is already done or EGL has no native fences.
pub fn render_fence_fd(sync: &smithay::backend::renderer::sync::SyncPoint) -> Option<OwnedFd> {
    if sync.is_reached() {
        return None;
    }
    sync.export()
}

#[cfg(test)]
mod tests {
    use super::is_software_renderer;

    #[test]
    fn software_rasterizers_are_recognised_and_virgl_is_not() {
        assert!(is_software_renderer("llvmpipe (LLVM 15.0.6, 256 bits)"));
        assert!(is_software_renderer("softpipe"));
        assert!(!is_software_renderer(
            "virgl (LLVMPIPE (LLVM 15.0.6, 256 bits))"
        ));
        assert!(!is_software_renderer(
            "AMD Radeon RX 6600 (radeonsi, navi23)"
        ));
    }
}
