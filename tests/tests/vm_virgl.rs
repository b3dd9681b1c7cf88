//! The VM's virgl card is a real GL stack (run in the VM by `cargo xtask test`).
//!
//! QEMU's `virtio-gpu-gl-pci` renders the guest's GL on the host's Mesa (llvmpipe), so
//! inside the guest a GL client gets Mesa's virgl driver on a real kernel driver: GL
//! command submissions through virtio_gpu, and their completion as real kernel fences.
//! These tests find the card by driver name plus the virgl feature, and check, on its
//! render node: EGL offers `EGL_ANDROID_native_fence_sync`, GL is Mesa's virgl (not the
//! guest's own software renderer), a GLES render into a GBM buffer ends with a native
//! fence that virtio_gpu signals, and a real client (weston-simple-dmabuf-egl) renders
//! on it and gets frames presented. The same checks fail on the 2D virtio_gpu card
//! (no 3D: Mesa falls back to kms_swrast, which has no native fences).

#![cfg(feature = "vm")]

use std::ffi::CStr;
use std::process::Command;
use std::time::Duration;

use smithay::backend::allocator::dmabuf::AsDmabuf;
use smithay::backend::allocator::gbm::{GbmAllocator, GbmBufferFlags};
use smithay::backend::allocator::{Allocator as _, Fourcc, Modifier};
use smithay::backend::renderer::gles::{ffi, GlesRenderer};
use smithay::backend::renderer::{Bind, Color32F, ExportMem, Frame, Renderer};
use smithay::utils::{Rectangle, Transform};
use syncbridge_bridge::SyncFile;
use syncbridge_tests::compositor_bin::{runtime_dir, scratch, syncbridge_bin};
use syncbridge_tests::kernel::card::{Card, NodeKind};
use syncbridge_tests::kernel::require_vm;
use syncbridge_tests::kernel::virgl_gl::egl_on;
use syncbridge_tests::kernel::virtio_gpu::{
    self, has_virgl, path_has_virgl, sibling, virgl, virtio_gpu_node, VirtioGpu,
};

const NATIVE_FENCE_SYNC: &str = "EGL_ANDROID_native_fence_sync";

/// GL_RENDERER of `renderer`'s context, e.g. "virgl (LLVMPIPE (LLVM 15.0.6, 256 bits))".
fn gl_renderer_name(renderer: &mut GlesRenderer) -> String {
    renderer
        .with_context(|gl| {
            // SAFETY: the context is current inside with_context; glGetString(GL_RENDERER)
            // returns a static NUL-terminated string owned by the GL implementation (or
            // NULL on error, checked).
            unsafe {
                let name = gl.GetString(ffi::RENDERER);
                if name.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(name.cast()).to_string_lossy().into_owned()
                }
            }
        })
        .expect("GL context")
}

#[test]
fn the_virgl_card_is_found_by_driver_and_feature_and_the_2d_card_has_no_virgl() {
    require_vm();
    let nodes = virgl();
    println!("virgl card: {nodes:?}");
    for path in [&nodes.card, &nodes.render] {
        let card = Card::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        assert_eq!(card.driver, virtio_gpu::DRIVER, "{}", path.display());
        assert_eq!(
            has_virgl(std::os::fd::AsFd::as_fd(&card)).ok(),
            Some(true),
            "VIRTGPU_PARAM_3D_FEATURES on {}",
            path.display()
        );
    }
    assert_eq!(
        sibling(&nodes.card, NodeKind::Render).as_ref(),
        Some(&nodes.render),
        "the render node belongs to the virgl card's device"
    );
    // The 2D card is there too, answers the same ioctl with "no 3D", and is another device.
    let plain_card = virtio_gpu_node(VirtioGpu::Plain, NodeKind::Primary);
    let plain_render = virtio_gpu_node(VirtioGpu::Plain, NodeKind::Render);
    assert_eq!(path_has_virgl(&plain_render).ok(), Some(false));
    assert_ne!(plain_card, nodes.card);
    assert_ne!(plain_render, nodes.render);
}

#[test]
fn egl_on_the_virgl_render_node_is_mesa_virgl_with_native_fence_sync() {
    require_vm();
    let nodes = virgl();
    let (extensions, mut renderer, _gbm) = egl_on(&nodes.render);
    let name = gl_renderer_name(&mut renderer);
    // What the compositor advertises on this card (issue 13, "composite tiled buffers
    // where the driver offers them"): the modifiers EGL imports, by kind.
    let formats: Vec<_> = smithay::backend::renderer::ImportDma::dmabuf_formats(&renderer)
        .into_iter()
        .collect();
    let linear = formats
        .iter()
        .filter(|f| f.modifier == Modifier::Linear)
        .count();
    let implicit = formats
        .iter()
        .filter(|f| f.modifier == Modifier::Invalid)
        .count();
    let other: Vec<String> = formats
        .iter()
        .filter(|f| !matches!(f.modifier, Modifier::Linear | Modifier::Invalid))
        .map(|f| format!("{}/{:#x}", f.code, u64::from(f.modifier)))
        .collect();
    println!(
        "EGL on {}: GL_RENDERER {name:?}; {} EGL extensions; dma-buf imports: {} \
         format/modifier pairs, {linear} LINEAR, {implicit} implicit, {} other {other:?}",
        nodes.render.display(),
        extensions.len(),
        formats.len(),
        other.len()
    );
    // Mesa's virgl lists no explicit modifiers (41 formats, all implicit, in a run here):
    // there is nothing tiled to composite on this driver.
    assert!(!formats.is_empty(), "EGL on virgl imports dma-bufs");
    assert!(
        extensions.iter().any(|e| e == NATIVE_FENCE_SYNC),
        "{NATIVE_FENCE_SYNC} missing on {}: {extensions:?}",
        nodes.render.display()
    );
    // Mesa's virgl driver, whose GL runs on the host: not the guest's own software
    // rasterizer (kms_swrast/llvmpipe), which is what the 2D card gets.
    assert!(
        name.starts_with("virgl"),
        "GL_RENDERER on the virgl card is {name:?}"
    );
}

#[test]
fn a_gles_render_into_a_gbm_buffer_ends_with_a_virtio_gpu_fence() {
    require_vm();
    let nodes = virgl();
    let (_extensions, mut renderer, gbm) = egl_on(&nodes.render);
    let mut allocator = GbmAllocator::new(gbm, GbmBufferFlags::RENDERING);
    let (w, h) = (256, 128);
    let bo = allocator
        .create_buffer(
            w,
            h,
            Fourcc::Argb8888,
            &[Modifier::Linear, Modifier::Invalid],
        )
        .expect("a GBM buffer on the virgl card");
    let mut dmabuf = bo.export().expect("the GBM buffer as a dma-buf");
    let mut fb = renderer.bind(&mut dmabuf).expect("bind the dma-buf");
    let size = (w as i32, h as i32).into();
    let mut frame = renderer
        .render(&mut fb, size, Transform::Normal)
        .expect("start a frame");
    let color = Color32F::new(0.0, 1.0, 0.0, 1.0);
    frame
        .clear(color, &[Rectangle::from_size(size)])
        .expect("clear");
    let sync = frame.finish().expect("finish the frame");
    // The render's completion, as a native fence fd (EGL_ANDROID_native_fence_sync):
    // created by virtio_gpu for the virgl command submission.
    let fence = sync
        .export()
        .expect("the frame's sync point exports a native fence fd");
    let fence = SyncFile::from_fd(fence).expect("the native fence is a sync_file");
    let info = fence.info().expect("SYNC_IOC_FILE_INFO");
    println!("render fence: {info:?}");
    assert!(
        info.fences
            .iter()
            .all(|f| f.driver_name == virtio_gpu::DRIVER),
        "the render fence comes from virtio_gpu: {info:?}"
    );
    // Liveness bound only (an emulated CPU under load).
    fence
        .wait(Duration::from_secs(60))
        .expect("the render fence signals");
    // What GL drew is in the buffer.
    let region = Rectangle::from_size((w as i32, h as i32).into());
    let mapping = renderer
        .copy_framebuffer(&fb, region, Fourcc::Argb8888)
        .expect("read the buffer back");
    let bytes = renderer.map_texture(&mapping).expect("map the readback");
    // ARGB8888 is little-endian B, G, R, A in memory.
    let px = &bytes[..4];
    assert_eq!(px, [0, 255, 0, 255], "the first pixel is the cleared green");
}

#[test]
fn weston_simple_dmabuf_egl_renders_on_the_virgl_render_node() {
    require_vm();
    let nodes = virgl();
    let render = nodes.render.to_str().expect("utf-8 path");
    let name = "virgl-simple-dmabuf-egl";
    let dir = runtime_dir(name);
    let stats_path = scratch().join(format!("{name}-stats.json"));
    let _ = std::fs::remove_file(&stats_path);
    // A liveness bound only: Mesa's start-up under an emulated CPU takes 10-40 s.
    let out = Command::new("timeout")
        .args(["--kill-after=10", "180"])
        .arg(syncbridge_bin())
        .args(["--backend", "headless", "--stats-interval", "0"])
        .args(["--exit-after-frames", "60"])
        .args(["--render-device", render])
        .arg("--stats-json")
        .arg(&stats_path)
        .args(["--", "weston-simple-dmabuf-egl", "-d", render])
        .env("XDG_RUNTIME_DIR", &dir)
        .env("RUST_LOG", "info")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .expect("run syncbridge");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::write(scratch().join(format!("{name}.log")), &log);
    let text = std::fs::read_to_string(&stats_path)
        .unwrap_or_else(|e| panic!("stats JSON {}: {e}; log:\n{log}", stats_path.display()));
    let stats: serde_json::Value = serde_json::from_str(&text).expect("stats JSON");
    assert_eq!(
        out.status.code(),
        Some(0),
        "syncbridge stopped at the frame limit; log:\n{log}"
    );
    assert_eq!(stats["protocol_errors_sent"], 0, "{stats:#}\n{log}");
    assert!(
        stats["dmabuf_imports"].as_u64() >= Some(1),
        "{stats:#}\n{log}"
    );
    let frames = stats["frames_presented_total"].as_u64().unwrap_or(0);
    assert!(frames >= 60, "only {frames} frames: {stats:#}\n{log}");
}
