//! The compositor state and per-client data.

use std::sync::{Arc, LazyLock};

use smithay::{
    desktop::{PopupManager, Space, Window},
    input::{Seat, SeatState},
    reexports::{
        calloop::{LoopHandle, LoopSignal},
        wayland_server::{
            backend::{ClientData, ClientId, DisconnectReason},
            Client, DisplayHandle,
        },
    },
    utils::{Clock, Monotonic},
    wayland::{
        commit_timing::CommitTimingManagerState,
        compositor::{CompositorClientState, CompositorState},
        dmabuf::DmabufState,
        fifo::FifoManagerState,
        output::OutputManagerState,
        presentation::PresentationState,
        shell::xdg::XdgShellState,
        shm::ShmState,
        viewporter::ViewporterState,
    },
};

use syncbridge_protocols::SyncBridge;

use crate::{
    backend::Backend,
    config::CompositorConfig,
    device::RenderDevice,
    handlers::dmabuf::DmabufSupport,
    stats::{ClientCounters, CompositorStats},
};

/// The smithay protocol states syncbridge advertises.
#[derive(Debug)]
pub struct Protocols {
    /// wl_compositor (v6) + wl_subcompositor.
    pub compositor: CompositorState,
    /// xdg_wm_base.
    pub xdg_shell: XdgShellState,
    /// wl_shm.
    pub shm: ShmState,
    /// linux-dmabuf (a global exists only when [`State::dmabuf`] is `Some`).
    pub dmabuf: DmabufState,
    /// wl_seat.
    pub seat: SeatState<State>,
    /// wl_output + zxdg_output_manager_v1.
    pub output_manager: OutputManagerState,
    /// wp_presentation.
    pub presentation: PresentationState,
    /// wp_viewporter.
    pub viewporter: ViewporterState,
    /// wp_fifo_manager_v1 (managed: barriers are signalled after each frame).
    pub fifo: FifoManagerState,
    /// wp_commit_timing_manager_v1 (managed: timers are signalled per frame deadline).
    pub commit_timing: CommitTimingManagerState,
}

/// Why the event loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The command given after `--` exited with this code.
    ChildExited(i32),
    /// `--exit-after-frames` was reached.
    FrameLimit,
    /// SIGINT or SIGTERM.
    Signal,
    /// The nested window was closed.
    WindowClosed,
}

/// The compositor.
#[derive(Debug)]
pub struct State {
    /// Handle to the Wayland display.
    pub display_handle: DisplayHandle,
    /// Handle to the event loop.
    pub loop_handle: LoopHandle<'static, State>,
    /// Stops the event loop.
    pub loop_signal: LoopSignal,
    /// CLOCK_MONOTONIC, the presentation clock.
    pub clock: Clock<Monotonic>,
    /// Protocol globals.
    pub protocols: Protocols,
    /// linux-dmabuf, when a DRM device is available.
    pub dmabuf: Option<DmabufSupport>,
    /// The only seat.
    pub seat: Seat<State>,
    /// Windows and outputs.
    pub space: Space<Window>,
    /// xdg popups.
    pub popups: PopupManager,
    /// The pointer's image as the focused client last set it (`wl_pointer.set_cursor`).
    pub cursor_status: smithay::input::pointer::CursorImageStatus,
    /// zwp_relative_pointer_manager_v1, once an embedder enabled it.
    pub relative_pointer: Option<smithay::wayland::relative_pointer::RelativePointerManagerState>,
    /// Where frames go.
    pub backend: Backend,
    /// The DRM device advertised for dma-buf feedback, if any.
    pub render_device: Option<RenderDevice>,
    /// The fence bridge (acquire gating, release fences, syncobj + explicit-sync-v1).
    pub sync_bridge: SyncBridge<State>,
    /// The thread that waits for renders whose sync point cannot be exported.
    pub render_waits: crate::render_wait::RenderWaits,
    /// Counters.
    pub stats: CompositorStats,
    /// Counters updated from client callbacks (connect, disconnect, protocol errors).
    pub client_counters: Arc<ClientCounters>,
    /// Stop after an output has presented this many frames.
    pub exit_after_frames: Option<u64>,
    /// Set when something asked the loop to stop.
    pub exit_reason: Option<ExitReason>,
    /// A commit or a window move may have changed the surface under the pointer: the
    /// focus is refreshed once before this loop iteration's events go out
    /// ([`State::flush_clients`]), not once per commit.
    pub(crate) pointer_focus_stale: bool,
    /// The command started after `--`, if any.
    pub child: Option<crate::child::ChildStatus>,
    pub(crate) config: CompositorConfig,
}

impl State {
    /// Ask the event loop to stop.
    pub fn request_exit(&mut self, reason: ExitReason) {
        if self.exit_reason.is_none() {
            tracing::info!(?reason, "exiting");
            self.exit_reason = Some(reason);
        }
        self.loop_signal.stop();
        self.loop_signal.wakeup();
    }

    /// Insert a client connected over `stream`.
    pub fn insert_client(
        &mut self,
        stream: std::os::unix::net::UnixStream,
    ) -> std::io::Result<Client> {
        let data = Arc::new(ClientState::new(self.client_counters.clone()));
        self.display_handle.insert_client(stream, data)
    }

    /// The configuration the compositor was started with.
    pub fn config(&self) -> &CompositorConfig {
        &self.config
    }
}

/// Per-client data.
#[derive(Debug)]
pub struct ClientState {
    /// smithay's per-client compositor state (commit queue).
    pub compositor_state: CompositorClientState,
    counters: Arc<ClientCounters>,
}

impl ClientState {
    /// Data for a new client, reporting to `counters`.
    pub fn new(counters: Arc<ClientCounters>) -> Self {
        Self {
            compositor_state: CompositorClientState::default(),
            counters,
        }
    }

    /// The compositor client state of `client`, or a shared empty one for a client
    /// that was not inserted with [`ClientState`] (never the case in syncbridge).
    pub fn compositor_state_of(client: &Client) -> &CompositorClientState {
        static FALLBACK: LazyLock<CompositorClientState> =
            LazyLock::new(CompositorClientState::default);
        match client.get_data::<ClientState>() {
            Some(data) => &data.compositor_state,
            None => &FALLBACK,
        }
    }
}

impl ClientData for ClientState {
    fn initialized(&self, client_id: ClientId) {
        tracing::debug!(?client_id, "client connected");
        self.counters.client_connected();
    }

    fn disconnected(&self, client_id: ClientId, reason: DisconnectReason) {
        match &reason {
            DisconnectReason::ConnectionClosed => {
                tracing::debug!(?client_id, "client disconnected");
            }
            DisconnectReason::ProtocolError(err) => {
                tracing::warn!(?client_id, error = %err, "client killed by protocol error");
            }
        }
        self.counters.client_disconnected(&reason);
    }
}

/// Errors creating the state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The backend could not start.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// The render device could not be used.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
}

impl State {
    /// Create the globals, the headless backend and its outputs.
    pub fn new(
        display_handle: DisplayHandle,
        loop_handle: LoopHandle<'static, State>,
        loop_signal: LoopSignal,
        config: CompositorConfig,
    ) -> Result<Self, StateError> {
        let dh = &display_handle;
        let clock = Clock::<Monotonic>::new();
        let mut seat_state = SeatState::new();
        let seat = crate::handlers::seat::create_seat(&mut seat_state, dh);
        let mut protocols = Protocols {
            compositor: CompositorState::new_v6::<State>(dh),
            xdg_shell: XdgShellState::new::<State>(dh),
            shm: ShmState::new::<State>(dh, Vec::new()),
            dmabuf: DmabufState::new(),
            seat: seat_state,
            output_manager: OutputManagerState::new_with_xdg_output::<State>(dh),
            presentation: PresentationState::new::<State>(dh, clock.id() as u32),
            viewporter: ViewporterState::new::<State>(dh),
            fifo: FifoManagerState::new::<State>(dh),
            commit_timing: CommitTimingManagerState::new::<State>(dh),
        };

        // Headless composites on the render device (GLES) when there is one: it is
        // selected before the backend, which needs it to choose its renderer.
        let renderer = crate::backend::headless_renderer::HeadlessRendererConfig {
            choice: config.tty.renderer,
            device: match config.backend {
                crate::backend::BackendKind::Headless => {
                    crate::device::find_render_device(&config.render_device)?.map(|d| d.path)
                }
                _ => None,
            },
        };
        let backend = Backend::new(config.backend, dh, &config.outputs, &config.tty, &renderer)?;

        let mut space = Space::default();
        let mut stats = CompositorStats::default();
        // The backend decides: a nested window has its own name and size, the tty
        // backend one output per connected connector (however many `--outputs` says).
        for (i, output) in backend.outputs().iter().enumerate() {
            let config = config.outputs.get(i);
            let location = output.current_location();
            space.map_output(output, location);
            let mode = output.current_mode();
            let size = mode
                .map(|m| (m.size.w, m.size.h))
                .or(config.map(|c| c.size))
                .unwrap_or_default();
            let refresh_mhz = mode
                .and_then(|m| u32::try_from(m.refresh).ok())
                .filter(|r| *r > 0)
                .or(config.map(|c| c.refresh_mhz))
                .unwrap_or(60_000);
            stats.outputs.push(crate::stats::OutputStats {
                name: output.name(),
                size,
                refresh_mhz,
                ..Default::default()
            });
        }

        // The GPU that composites is the one clients should allocate for: with GLES on
        // the tty backend it is the main device unless `--render-device` names another.
        let composites_on = backend.render_node();
        let selection = match (&config.render_device, &composites_on) {
            (crate::config::RenderDeviceSelection::Auto, Some(node)) => {
                crate::config::RenderDeviceSelection::Path(node.clone())
            }
            (selection, _) => selection.clone(),
        };
        let render_device = crate::device::find_render_device(&selection)?;
        if let (Some(device), Some(node)) = (&render_device, &composites_on) {
            if !same_node(&device.path, node) {
                tracing::warn!(
                    main_device = %device.path.display(),
                    composites_on = %node.display(),
                    "linux-dmabuf: the main device clients are told to allocate on is not the \
                     GPU that composites: their buffers cross devices, and the feedback says \
                     so only through its main device (--render-device)"
                );
            }
        }
        let dmabuf = match &render_device {
            None => {
                tracing::info!("linux-dmabuf: not advertised: no DRM device (shm clients only)");
                None
            }
            Some(device) => {
                let formats = backend.dmabuf_formats();
                match DmabufSupport::new(dh, &mut protocols.dmabuf, device, formats.clone()) {
                    Ok(support) => {
                        tracing::info!(
                            main_device = %device.path.display(),
                            main_device_dev = device.dev_id(),
                            formats = formats.len(),
                            "linux-dmabuf v5 with feedback: main device is the render device, \
                             formats are what {} imports",
                            backend.renderer_name()
                        );
                        Some(support)
                    }
                    Err(err) => {
                        tracing::warn!(%err, "linux-dmabuf: not advertised");
                        None
                    }
                }
            }
        };

        let sync_bridge = crate::handlers::sync::create_sync_bridge(
            loop_handle.clone(),
            dh,
            render_device.as_ref(),
            config.implicit_wait,
        );

        let render_waits = crate::render_wait::RenderWaits::start(&loop_handle).unwrap_or_else(|err| {
            tracing::warn!(%err, "no render-wait thread; unexportable render sync points are waited for inline");
            crate::render_wait::RenderWaits::inline()
        });

        Ok(Self {
            display_handle,
            loop_handle,
            loop_signal,
            clock,
            protocols,
            dmabuf,
            seat,
            space,
            popups: PopupManager::default(),
            cursor_status: smithay::input::pointer::CursorImageStatus::default_named(),
            relative_pointer: None,
            backend,
            render_device,
            sync_bridge,
            render_waits,
            stats,
            client_counters: Arc::new(ClientCounters::default()),
            exit_after_frames: config.exit_after_frames,
            exit_reason: None,
            pointer_focus_stale: false,
            child: None,
            config,
        })
    }
}

/// Whether two paths name the same device node (symlinks such as /dev/dri/by-path).
fn same_node(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
