//! GL on the VM's virgl card from the test process: EGL on GBM on its render node, a
//! GLES renderer there, and a GPU load that keeps the virgl pipeline busy.
//!
//! QEMU runs the guest's virgl command streams on one host thread, in submission order,
//! and retires their fences in order: a long render submitted by the test delays every
//! render submitted after it, the compositor's included. That makes "the compositor's
//! render is still running" a state a test can create rather than hope for.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use smithay::backend::allocator::dmabuf::{AsDmabuf, Dmabuf};
use smithay::backend::allocator::gbm::{GbmAllocator, GbmBufferFlags, GbmDevice};
use smithay::backend::allocator::{Allocator as _, Fourcc, Modifier};
use smithay::backend::egl::{EGLContext, EGLDisplay};
use smithay::backend::renderer::gles::{
    GlesPixelProgram, GlesRenderer, Uniform, UniformName, UniformType,
};
use smithay::backend::renderer::{Bind, Frame, Renderer};
use smithay::utils::{Rectangle, Transform};
use syncbridge_bridge::SyncFile;

fn open_fd(path: &Path) -> OwnedFd {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// EGL on GBM on `render_node`: the display's extensions, and a GLES renderer on it.
pub fn egl_on(render_node: &Path) -> (Vec<String>, GlesRenderer, GbmDevice<Arc<OwnedFd>>) {
    let gbm = GbmDevice::new(Arc::new(open_fd(render_node)))
        .unwrap_or_else(|e| panic!("GBM on {}: {e}", render_node.display()));
    // SAFETY: nothing else in this process calls eglGetPlatformDisplay/eglTerminate on
    // this device; the display keeps its own clone of the GBM device alive.
    let display = unsafe { EGLDisplay::new(gbm.clone()) }
        .unwrap_or_else(|e| panic!("EGL display on {}: {e}", render_node.display()));
    let extensions = display.extensions().to_vec();
    let context = EGLContext::new(&display).expect("EGL context");
    // SAFETY: the context was just created on this thread and is current nowhere else.
    let renderer = unsafe { GlesRenderer::new(context) }.expect("GLES renderer");
    (extensions, renderer, gbm)
}

/// A pixel shader whose cost is `iterations` steps per pixel (a uniform, so the
/// compiler cannot fold the loop away).
const LOAD_SHADER: &str = r#"
precision highp float;
uniform float alpha;
uniform vec2 size;
uniform float iterations;
varying vec2 v_coords;
void main() {
    float v = v_coords.x + v_coords.y;
    for (int i = 0; i < 65536; i++) {
        if (float(i) >= iterations) {
            break;
        }
        v = fract(sin(v * 12.9898 + float(i)) * 43758.5453);
    }
    gl_FragColor = vec4(v, v, v, 1.0) * alpha;
}
"#;

/// Keeps the virgl GPU busy on demand.
pub struct GpuLoad {
    renderer: GlesRenderer,
    allocator: GbmAllocator<Arc<OwnedFd>>,
    program: GlesPixelProgram,
    target: Dmabuf,
    size: (i32, i32),
}

impl std::fmt::Debug for GpuLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuLoad")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl GpuLoad {
    /// A `w`x`h` render target on the virgl render node `render_node`.
    pub fn new(render_node: &Path, w: u32, h: u32) -> GpuLoad {
        let (_ext, mut renderer, gbm) = egl_on(render_node);
        let mut allocator = GbmAllocator::new(gbm, GbmBufferFlags::RENDERING);
        let bo = allocator
            .create_buffer(
                w,
                h,
                Fourcc::Argb8888,
                &[Modifier::Linear, Modifier::Invalid],
            )
            .expect("a GBM buffer for the GPU load");
        let target = bo.export().expect("the load's buffer as a dma-buf");
        let program = renderer
            .compile_custom_pixel_shader(
                LOAD_SHADER,
                &[UniformName::new("iterations", UniformType::_1f)],
            )
            .expect("compile the load shader");
        GpuLoad {
            renderer,
            allocator,
            program,
            target,
            size: (w as i32, h as i32),
        }
    }

    /// A `w`x`h` XRGB8888 LINEAR buffer for a client, allocated by GBM on the same
    /// device: a host resource, which the compositor samples without the guest-to-host
    /// transfers (and their fences) that dumb buffers need.
    pub fn client_buffer(&mut self, w: u32, h: u32) -> crate::client::buffers::DmaBuffer {
        let bo = self
            .allocator
            .create_buffer(w, h, Fourcc::Xrgb8888, &[Modifier::Linear])
            .expect("a LINEAR GBM buffer for the client");
        let dmabuf = bo.export().expect("the client buffer as a dma-buf");
        let fd = dmabuf
            .handles()
            .next()
            .expect("one plane")
            .try_clone_to_owned()
            .expect("dup the dma-buf fd");
        let stride = dmabuf.strides().next().expect("one plane");
        crate::client::buffers::DmaBuffer {
            fd,
            width: w,
            height: h,
            stride,
            vgem: None,
        }
    }

    /// Submit one full-target draw of `iterations` steps per pixel and return its native
    /// fence without waiting: the GPU is busy until it signals.
    #[must_use = "the fence says when the load is done"]
    pub fn submit(&mut self, iterations: u32) -> SyncFile {
        let mut fb = self
            .renderer
            .bind(&mut self.target)
            .expect("bind the load target");
        let size = self.size.into();
        let mut frame = self
            .renderer
            .render(&mut fb, size, Transform::Normal)
            .expect("start the load frame");
        let area = Rectangle::from_size(size);
        frame
            .render_pixel_shader_to(
                &self.program,
                Rectangle::from_size((self.size.0 as f64, self.size.1 as f64).into()),
                area,
                (self.size.0, self.size.1).into(),
                None,
                1.0,
                &[Uniform::new("iterations", iterations as f32)],
            )
            .expect("draw the load");
        let sync = frame.finish().expect("submit the load");
        let fence = sync.export().expect("the load's native fence");
        SyncFile::from_fd(fence).expect("the load's fence is a sync_file")
    }
}
