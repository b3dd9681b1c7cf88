//! The fence bridge: linux-drm-syncobj-v1, zwp_linux_explicit_synchronization_v1 and
//! acquire gating of every commit, all from [`SyncBridge`]'s public API. This file plus
//! the calls in `new_surface` and after each render is the whole integration.

use smithay::{
    backend::renderer::{
        element::{Id, RenderElementPresentationState, RenderElementStates},
        sync::SyncPoint,
    },
    desktop::{Space, Window},
    reexports::calloop::LoopHandle,
    reexports::wayland_server::DisplayHandle,
};
use syncbridge_bridge::sync_file::SyncFile;
use syncbridge_protocols::{
    delegate_sync_bridge, BridgeConfig, BufferId, ImplicitWait, SyncBridge, SyncBridgeHandler,
};

use crate::{device::RenderDevice, state::State};

impl SyncBridgeHandler for State {
    fn sync_bridge(&mut self) -> &mut SyncBridge<Self> {
        &mut self.sync_bridge
    }
}

delegate_sync_bridge!(State);

/// Probe the kernel, pick the timeline device (the render device, when it has
/// timelines), create the globals, and log which sync features run and why.
pub fn create_sync_bridge(
    loop_handle: LoopHandle<'static, State>,
    dh: &DisplayHandle,
    render_device: Option<&RenderDevice>,
    implicit_wait: ImplicitWait,
) -> SyncBridge<State> {
    let mut config = match BridgeConfig::detect(render_device.map(|d| d.path.as_path())) {
        Ok(config) => config,
        Err(err) => {
            tracing::warn!(%err, "sync: timeline device unusable; continuing without it");
            BridgeConfig::without_devices()
        }
    };
    config.implicit_wait = implicit_wait;
    let mut bridge = SyncBridge::new(loop_handle, config);
    bridge.create_globals(dh);
    log_sync_features(&bridge);
    bridge
}

fn log_sync_features(bridge: &SyncBridge<State>) {
    let config = bridge.config();
    let stats = bridge.stats();
    tracing::info!(
        acquire = stats.implicit_acquire_mode,
        release = stats.implicit_release_mode,
        kernel = ?config.dmabuf_fences,
        probe = syncbridge_bridge::dmabuf::DmabufFenceSupport::probe_method(),
        "sync: implicit (dma-buf) fences"
    );
    match &config.syncobj_device {
        Some(device) => tracing::info!(
            driver = device.driver_name(),
            "sync: linux-drm-syncobj-v1 advertised (timeline waits by eventfd)"
        ),
        None => tracing::info!(
            reason = config
                .syncobj_disabled_reason
                .as_deref()
                .unwrap_or("unknown"),
            "sync: linux-drm-syncobj-v1 not advertised"
        ),
    }
    tracing::info!(
        mode = stats.explicit_sync_v1_mode,
        "sync: zwp_linux_explicit_synchronization_v1"
    );
}

/// What a render's sync point means for the buffers it sampled.
#[must_use = "the sampled buffers must be reported with it (frame_rendered or hold_readers)"]
#[derive(Debug)]
pub enum RenderSync {
    /// Reached already (pixman renders on the CPU; or the GPU is done): no fence.
    Reached,
    /// Exported as a sync_file (GLES with `EGL_ANDROID_native_fence_sync`): the render
    /// fence, which the bridge puts into the releases.
    Fence(SyncFile),
    /// Not reached and not exportable (a plain EGL fence, e.g. llvmpipe; or the export
    /// failed, e.g. out of fds): the sampled buffers must be held until it is reached.
    Pending(SyncPoint),
}

/// Classifies a render's sync point. Never takes an unreached sync point as finished.
pub fn render_sync(sync: SyncPoint) -> RenderSync {
    if sync.is_reached() {
        return RenderSync::Reached;
    }
    if !sync.is_exportable() {
        return RenderSync::Pending(sync);
    }
    let Some(fd) = sync.export() else {
        tracing::warn!(
            "render fence export failed; holding the sampled buffers until the render is done"
        );
        return RenderSync::Pending(sync);
    };
    match SyncFile::from_fd(fd) {
        Ok(fence) => RenderSync::Fence(fence),
        Err(err) => {
            tracing::warn!(%err, "render fence is not a sync_file; holding the sampled buffers until the render is done");
            RenderSync::Pending(sync)
        }
    }
}

/// The bridge's ids of the buffers a render read: every surface of every window whose
/// element was rendered in `states`. A buffer scanned out directly (`ZeroCopy`) was not
/// read by the render: its reader is the plane's, reported with the atomic commit.
pub fn sampled_buffers(
    bridge: &SyncBridge<State>,
    space: &Space<Window>,
    states: &RenderElementStates,
) -> Vec<BufferId> {
    // Collect first: the traversal holds each surface's state lock, which
    // `buffer_id` takes too.
    let mut drawn = Vec::new();
    for window in space.elements() {
        window.with_surfaces(|surface, _| {
            let was_drawn = states
                .element_render_state(Id::from_wayland_resource(surface))
                .is_some_and(|s| {
                    matches!(
                        s.presentation_state,
                        RenderElementPresentationState::Rendering { .. }
                    )
                });
            if was_drawn {
                drawn.push(surface.clone());
            }
        });
    }
    drawn.iter().filter_map(|s| bridge.buffer_id(s)).collect()
}
