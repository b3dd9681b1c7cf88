//! Whether a DRM device has a hardware GL driver, asked of the kernel before EGL is loaded.
//!
//! Mesa picks its GL driver from the kernel driver's name. A display-only or virtual
//! driver (VKMS, vgem, simpledrm, ...) and a virtio-gpu without virgl 3D get `kms_swrast`,
//! which renders with llvmpipe. `--renderer auto` refuses a software EGL driver anyway
//! (pixman composites there with less CPU), but finding that out through EGL costs
//! loading Mesa and LLVM, creating a context and compiling the renderer's shaders: about
//! two seconds per start in the test VM. Asking the kernel costs two ioctls.
//!
//! The answer is only ever "software for sure" or "don't know": a driver not listed here,
//! or a virtio-gpu that does not answer, goes through EGL, which has the last word
//! ([`super::gpu_renderer::GpuRenderer::new`] still checks `GL_RENDERER`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::ioctl::{ioctl, opcode, Updater};
use smithay::backend::drm::DrmDeviceFd;
use smithay::reexports::drm::Device;

use super::DRM_COMMAND_BASE;

/// Kernel drivers Mesa has no hardware GL driver for: display-only or virtual devices.
const NO_HARDWARE_GL: &[&str] = &[
    "vkms",
    "vgem",
    "simpledrm",
    "ofdrm",
    "bochs-drm",
    "cirrus",
    "cirrus-qemu",
    "qxl",
    "ast",
    "mgag200",
    "udl",
    "hyperv_drm",
];

/// The driver name of virtio-gpu, which has a hardware GL driver (virgl) only when the
/// device has 3D.
pub const VIRTIO_GPU: &str = "virtio_gpu";

/// Why EGL on a device of kernel driver `driver` would be a software rasterizer, if that
/// is certain. `virgl` is the virtio-gpu 3D answer (`None`: not asked, or no answer).
pub fn software_only(driver: &str, virgl: Option<bool>) -> Option<String> {
    if NO_HARDWARE_GL.contains(&driver) {
        return Some(format!(
            "kernel driver {driver} has no hardware GL driver in Mesa"
        ));
    }
    (driver == VIRTIO_GPU && virgl == Some(false))
        .then(|| format!("kernel driver {driver} without virgl 3D (VIRTGPU_PARAM_3D_FEATURES = 0)"))
}

/// Why EGL on `fd` would surely be a software rasterizer, from the kernel driver's name
/// (and, for virtio-gpu, its 3D feature); `None` when the kernel does not settle it.
pub fn kernel_says_software(fd: &DrmDeviceFd) -> Option<String> {
    let driver = fd.get_driver().ok()?;
    let name = driver.name().to_string_lossy();
    let virgl = (name == VIRTIO_GPU)
        .then(|| has_virgl(fd.as_fd()).ok())
        .flatten();
    software_only(&name, virgl)
}

// The virtio-gpu uAPI (include/uapi/drm/virtgpu_drm.h). No maintained crate carries the
// driver-specific virtio-gpu ioctls (drm-ffi has only the core DRM ones), so the one
// needed here is written out by hand.

/// `struct drm_virtgpu_getparam`: the kernel writes one `int` to the address in `value`.
#[repr(C)]
#[derive(Debug, Default)]
struct DrmVirtgpuGetparam {
    param: u64,
    value: u64,
}

/// `DRM_VIRTGPU_GETPARAM`.
const DRM_VIRTGPU_GETPARAM: u8 = 0x03;
/// `VIRTGPU_PARAM_3D_FEATURES`: 1 when the device has virgl 3D.
const VIRTGPU_PARAM_3D_FEATURES: u64 = 1;

/// Whether the virtio_gpu device behind `fd` (a card or render node) has virgl 3D,
/// from `DRM_IOCTL_VIRTGPU_GETPARAM(VIRTGPU_PARAM_3D_FEATURES)`. Fails (EINVAL, ENOTTY)
/// on a node of another driver, and may fail (EACCES) on a card node of a client that is
/// neither DRM master nor authenticated. The fd stays the caller's.
pub fn has_virgl(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut value: i32 = 0;
    let mut param = DrmVirtgpuGetparam {
        param: VIRTGPU_PARAM_3D_FEATURES,
        value: std::ptr::addr_of_mut!(value) as u64,
    };
    // SAFETY: the opcode is DRM_IOWR(DRM_COMMAND_BASE + DRM_VIRTGPU_GETPARAM, struct
    // drm_virtgpu_getparam), whose layout `DrmVirtgpuGetparam` repeats (two u64, 16
    // bytes); `param` outlives the call. The kernel writes sizeof(int) bytes to
    // `param.value`, the address of `value`, a live i32 on this stack frame that nothing
    // else touches during the call.
    unsafe {
        let ctl = Updater::<
            {
                opcode::read_write::<DrmVirtgpuGetparam>(
                    b'd',
                    DRM_COMMAND_BASE + DRM_VIRTGPU_GETPARAM,
                )
            },
            DrmVirtgpuGetparam,
        >::new(&mut param);
        ioctl(fd, ctl)?;
    }
    Ok(value != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_only_drivers_and_2d_virtio_gpu_are_software_and_the_rest_is_unknown() {
        assert!(software_only("vkms", None).is_some());
        assert!(software_only("vgem", Some(false)).is_some());
        assert!(software_only("simpledrm", None).is_some());
        assert!(software_only(VIRTIO_GPU, Some(false)).is_some());
        // virgl is a hardware driver to the guest; an unanswered query is not a "no".
        assert_eq!(software_only(VIRTIO_GPU, Some(true)), None);
        assert_eq!(software_only(VIRTIO_GPU, None), None);
        for hardware in [
            "i915", "xe", "amdgpu", "nouveau", "msm", "panfrost", "vmwgfx",
        ] {
            assert_eq!(software_only(hardware, None), None, "{hardware}");
        }
    }
}
