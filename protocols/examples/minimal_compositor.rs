//! The smallest complete smithay compositor that uses syncbridge end to end: copy it.
//!
//! Headless (pixman renders into an offscreen image, no display needed), with
//! wl_compositor, xdg_shell, wl_shm, linux-dmabuf, and the two sync globals the bridge owns
//! (linux-drm-syncobj-v1 when `--syncobj-device` names a DRM node with timelines,
//! zwp_linux_explicit_synchronization_v1 always). Every commit is gated on its acquire
//! fence (implicit dma-buf fences, syncobj points, explicit-sync fences) before smithay
//! applies it, and every frame reports the buffers it sampled, with the render's fence, so
//! their releases carry it.
//!
//! It has no KMS, so it never calls `SyncBridge::scanout_committed`: a compositor that puts
//! client buffers on planes reports each atomic commit's out-fence there (see the README
//! and the reference compositor's tty backend).
//!
//! Every line that exists because of syncbridge sits inside a pair of `syncbridge {` /
//! `} syncbridge` marker comments; the rest is plain smithay (the README counts both).
//!
//! ```sh
//! cargo run -p syncbridge-protocols --example minimal_compositor -- \
//!     --socket wayland-min [--syncobj-device /dev/dri/renderD128] [--exit-after-frames N] \
//!     [--exit-when-idle]
//! WAYLAND_DISPLAY=wayland-min weston-simple-shm
//! ```
//!
//! On exit (`--exit-after-frames`, `--exit-when-idle` once its last client left, or when
//! the listening socket fails) it prints `minimal_compositor: frames_presented=..
//! buffers_released=.. ...` on stdout, and, when a commit waited for its fence, the
//! bridge's latch latencies (`minimal_compositor: latch_us latency=p50/p99/count ...`):
//! `cargo xtask bench` reads them as the floor that smithay and the bridge set for any
//! compositor built on them.

use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smithay::backend::allocator::{dmabuf::Dmabuf, Buffer as _, Fourcc};
use smithay::backend::renderer::damage::OutputDamageTracker;
use smithay::backend::renderer::element::surface::{
    render_elements_from_surface_tree, WaylandSurfaceRenderElement,
};
use smithay::backend::renderer::element::{
    Id, Kind, RenderElementPresentationState, RenderElementStates,
};
use smithay::backend::renderer::pixman::PixmanRenderer;
use smithay::backend::renderer::sync::SyncPoint;
use smithay::backend::renderer::utils::on_commit_buffer_handler;
use smithay::backend::renderer::{Bind, ImportDma, Offscreen};
use smithay::input::{SeatHandler, SeatState};
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::timer::{TimeoutAction, Timer};
use smithay::reexports::calloop::{EventLoop, Interest, Mode, PostAction};
use smithay::reexports::pixman::Image;
use smithay::reexports::wayland_server::backend::{ClientData, ClientId, DisconnectReason};
use smithay::reexports::wayland_server::protocol::{
    wl_buffer::WlBuffer, wl_seat::WlSeat, wl_surface::WlSurface,
};
use smithay::reexports::wayland_server::{Client, Display, DisplayHandle};
use smithay::utils::{Serial, Transform};
use smithay::wayland::buffer::BufferHandler;
use smithay::wayland::compositor::{
    with_surface_tree_downward, CompositorClientState, CompositorHandler, CompositorState,
    SurfaceAttributes, TraversalAction,
};
use smithay::wayland::dmabuf::{DmabufGlobal, DmabufHandler, DmabufState, ImportNotifier};
use smithay::wayland::shell::xdg::{
    PopupSurface, PositionerState, ToplevelSurface, XdgShellHandler, XdgShellState,
};
use smithay::wayland::shm::{ShmHandler, ShmState};
use smithay::wayland::socket::ListeningSocketSource;
use smithay::{delegate_compositor, delegate_dmabuf, delegate_shm, delegate_xdg_shell};
// syncbridge {
use syncbridge_protocols::bridge::sync_file::SyncFile;
use syncbridge_protocols::{
    delegate_sync_bridge, BridgeConfig, BufferId, SyncBridge, SyncBridgeHandler,
};
// } syncbridge

const SIZE: (i32, i32) = (640, 480);
const REFRESH: Duration = Duration::from_millis(16);

struct App {
    dh: DisplayHandle,
    compositor: CompositorState,
    xdg_shell: XdgShellState,
    shm: ShmState,
    seat: SeatState<App>,
    dmabuf: DmabufState,
    _dmabuf_global: DmabufGlobal,
    renderer: PixmanRenderer,
    framebuffer: Image<'static, 'static>,
    damage_tracker: OutputDamageTracker,
    rendered_once: bool,
    frames_presented: u64,
    exit_after_frames: Option<u64>,
    running: bool,
    start: Instant,
    /// Clients connected now (shared with each client's [`ClientState`]), and whether any
    /// ever connected: `--exit-when-idle` stops once one came and all left.
    live_clients: Arc<AtomicUsize>,
    served: bool,
    // syncbridge {
    sync_bridge: SyncBridge<App>,
    // } syncbridge
}

struct ClientState {
    compositor: CompositorClientState,
    live: Arc<AtomicUsize>,
}

impl ClientData for ClientState {
    fn initialized(&self, _client: ClientId) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }
    fn disconnected(&self, _client: ClientId, _reason: DisconnectReason) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CompositorHandler for App {
    fn compositor_state(&mut self) -> &mut CompositorState {
        &mut self.compositor
    }

    fn client_compositor_state<'a>(&self, client: &'a Client) -> &'a CompositorClientState {
        // Every client is inserted with a ClientState (see `main`).
        &client
            .get_data::<ClientState>()
            .expect("clients are inserted with ClientState")
            .compositor
    }

    fn new_surface(&mut self, surface: &WlSurface) {
        // syncbridge {
        // Pre-commit hook: no commit of this surface applies before its acquire fence
        // signalled (implicit, syncobj or explicit); nothing else waits meanwhile.
        self.sync_bridge.track_surface(surface);
        // } syncbridge
    }

    fn commit(&mut self, surface: &WlSurface) {
        // The bridge's post-commit hook already ran: a replaced buffer was retired (its
        // release goes out once no frame reads it any more).
        on_commit_buffer_handler::<Self>(surface);
        if let Some(toplevel) = self
            .xdg_shell
            .toplevel_surfaces()
            .iter()
            .find(|t| t.wl_surface() == surface)
        {
            if !toplevel.is_initial_configure_sent() {
                toplevel.send_configure();
            }
        }
    }
}

impl BufferHandler for App {
    fn buffer_destroyed(&mut self, buffer: &WlBuffer) {
        // syncbridge {
        self.sync_bridge.buffer_destroyed(buffer); // gives its dma-buf fd charge back
                                                   // } syncbridge
    }
}

impl ShmHandler for App {
    fn shm_state(&self) -> &ShmState {
        &self.shm
    }
}

// xdg_shell needs a seat type (for popup grabs); this compositor offers no wl_seat.
impl SeatHandler for App {
    type KeyboardFocus = WlSurface;
    type PointerFocus = WlSurface;
    type TouchFocus = WlSurface;
    fn seat_state(&mut self) -> &mut SeatState<Self> {
        &mut self.seat
    }
}

impl XdgShellHandler for App {
    fn xdg_shell_state(&mut self) -> &mut XdgShellState {
        &mut self.xdg_shell
    }
    fn new_toplevel(&mut self, _surface: ToplevelSurface) {}
    fn new_popup(&mut self, _surface: PopupSurface, _positioner: PositionerState) {}
    fn grab(&mut self, _surface: PopupSurface, _seat: WlSeat, _serial: Serial) {}
    fn reposition_request(&mut self, _s: PopupSurface, _p: PositionerState, _token: u32) {}
}

impl DmabufHandler for App {
    fn dmabuf_state(&mut self) -> &mut DmabufState {
        &mut self.dmabuf
    }

    fn dmabuf_imported(
        &mut self,
        _global: &DmabufGlobal,
        dmabuf: Dmabuf,
        notifier: ImportNotifier,
    ) {
        // pixman reads single-plane buffers of the formats it announced. It maps them at
        // render time, after the bridge saw their fences signal, never here.
        let readable =
            dmabuf.num_planes() == 1 && self.renderer.dmabuf_formats().contains(&dmabuf.format());
        let Some(client) = notifier.client().filter(|_| readable) else {
            notifier.failed();
            return;
        };
        // syncbridge {
        // The buffer keeps its plane fds open while it exists: charge them to the client.
        let Ok(charge) = self
            .sync_bridge
            .charge_dmabuf(&self.dh, &client, dmabuf.num_planes())
        else {
            notifier.failed();
            return;
        };
        if let Ok(buffer) = notifier.successful::<App>() {
            self.sync_bridge.keep_buffer_charge(&buffer, charge);
        }
        // } syncbridge
    }
}

delegate_compositor!(App);
delegate_shm!(App);
delegate_xdg_shell!(App);
delegate_dmabuf!(App);

// syncbridge {
impl SyncBridgeHandler for App {
    fn sync_bridge(&mut self) -> &mut SyncBridge<Self> {
        &mut self.sync_bridge
    }
}
delegate_sync_bridge!(App);

/// The render's fence, for the buffers it read: `None` once the render is done (pixman
/// renders on the CPU, so its sync point is always reached), the exported sync_file for a
/// GPU renderer with native fences (GLES with `EGL_ANDROID_native_fence_sync`). The
/// sync_file's fd becomes the bridge's in `frame_rendered`.
fn render_fence(sync: SyncPoint) -> Option<SyncFile> {
    if sync.is_reached() {
        return None;
    }
    if let Some(fence) = sync.export().and_then(|fd| SyncFile::from_fd(fd).ok()) {
        return Some(fence);
    }
    // Not exportable: the read has not ended, so wait (blocking) for it before reporting
    // it ended; an interrupted wait is retried, since reporting early would release
    // buffers the GPU still reads (the reference compositor hands this to a thread with
    // `hold_readers`/`end_held_reads` instead of blocking).
    while sync.wait().is_err() {}
    None
}

/// The bridge's ids of the buffers the render read: every surface it drew (not skipped).
fn sampled_buffers(app: &App, states: &RenderElementStates) -> Vec<BufferId> {
    let mut drawn = Vec::new();
    for toplevel in app.xdg_shell.toplevel_surfaces() {
        with_surface_tree_downward(
            toplevel.wl_surface(),
            (),
            |_, _, _| TraversalAction::DoChildren(()),
            |surface, _, _| {
                let state = states.element_render_state(Id::from_wayland_resource(surface));
                if state.is_some_and(|s| {
                    s.presentation_state != RenderElementPresentationState::Skipped
                }) {
                    drawn.push(surface.clone());
                }
            },
            |_, _, _| true,
        );
    }
    // Looked up after the traversal: it holds the surface state lock `buffer_id` takes.
    drawn
        .iter()
        .filter_map(|s| app.sync_bridge.buffer_id(s))
        .collect()
}
// } syncbridge

impl App {
    /// One refresh: render every toplevel, report the read, send frame callbacks.
    fn render(&mut self) -> Result<(), Box<dyn Error>> {
        let App {
            renderer,
            framebuffer,
            damage_tracker,
            xdg_shell,
            ..
        } = self;
        let elements: Vec<WaylandSurfaceRenderElement<PixmanRenderer>> = xdg_shell
            .toplevel_surfaces()
            .iter()
            .flat_map(|t| {
                render_elements_from_surface_tree(
                    renderer,
                    t.wl_surface(),
                    (0, 0),
                    1.0,
                    1.0,
                    Kind::Unspecified,
                )
            })
            .collect();
        let mut target = renderer.bind(framebuffer)?;
        let age = usize::from(self.rendered_once);
        let result = damage_tracker.render_output(
            renderer,
            &mut target,
            age,
            &elements,
            [0.1, 0.1, 0.1, 1.0],
        )?;
        let damaged = result.damage.is_some_and(|d| !d.is_empty());
        let (sync, states) = (result.sync, result.states);
        drop(target);
        self.rendered_once = true;
        // syncbridge {
        // In the same dispatch as the render, before any client commit can be applied.
        let sampled = sampled_buffers(self, &states);
        self.sync_bridge
            .frame_rendered(render_fence(sync), &sampled);
        // } syncbridge
        // A frame that drew a client buffer (not just the background) was presented.
        self.frames_presented += u64::from(damaged && !sampled.is_empty());
        let time = self.start.elapsed().as_millis() as u32;
        for toplevel in self.xdg_shell.toplevel_surfaces() {
            send_frame_callbacks(toplevel.wl_surface(), time);
        }
        if self
            .exit_after_frames
            .is_some_and(|n| self.frames_presented >= n)
        {
            self.running = false;
        }
        Ok(())
    }
}

fn send_frame_callbacks(surface: &WlSurface, time: u32) {
    with_surface_tree_downward(
        surface,
        (),
        |_, _, _| TraversalAction::DoChildren(()),
        |_, states, _| {
            let mut attributes = states.cached_state.get::<SurfaceAttributes>();
            for callback in attributes.current().frame_callbacks.drain(..) {
                callback.done(time);
            }
        },
        |_, _, _| true,
    );
}

struct Args {
    socket: String,
    syncobj_device: Option<PathBuf>,
    exit_after_frames: Option<u64>,
    exit_when_idle: bool,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        socket: "wayland-minimal".into(),
        syncobj_device: None,
        exit_after_frames: None,
        exit_when_idle: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--socket" => args.socket = value()?,
            "--syncobj-device" => args.syncobj_device = Some(value()?.into()),
            "--exit-after-frames" => args.exit_after_frames = Some(value()?.parse()?),
            "--exit-when-idle" => args.exit_when_idle = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let mut event_loop: EventLoop<'static, App> = EventLoop::try_new()?;
    let display: Display<App> = Display::new()?;
    let dh = display.handle();

    let mut renderer = PixmanRenderer::new()?;
    let framebuffer = renderer.create_buffer(Fourcc::Xrgb8888, SIZE.into())?;
    let formats: Vec<_> = renderer.dmabuf_formats().iter().copied().collect();
    let mut dmabuf = DmabufState::new();
    let dmabuf_global = dmabuf.create_global::<App>(&dh, formats);

    // syncbridge {
    // Probe dma-buf fence support and, with a device, syncobj timelines; create the globals.
    let config = BridgeConfig::detect(args.syncobj_device.as_deref())?;
    let mut sync_bridge = SyncBridge::new(event_loop.handle(), config);
    sync_bridge.create_globals(&dh);
    // } syncbridge

    let mut app = App {
        compositor: CompositorState::new::<App>(&dh),
        xdg_shell: XdgShellState::new::<App>(&dh),
        shm: ShmState::new::<App>(&dh, vec![]),
        seat: SeatState::new(),
        dmabuf,
        _dmabuf_global: dmabuf_global,
        renderer,
        framebuffer,
        damage_tracker: OutputDamageTracker::new(SIZE, 1.0, Transform::Normal),
        rendered_once: false,
        frames_presented: 0,
        exit_after_frames: args.exit_after_frames,
        running: true,
        start: Instant::now(),
        live_clients: Arc::new(AtomicUsize::new(0)),
        served: false,
        dh: dh.clone(),
        // syncbridge {
        sync_bridge,
        // } syncbridge
    };

    let handle = event_loop.handle();
    handle.insert_source(
        ListeningSocketSource::with_name(&args.socket)?,
        |stream, _, app| {
            let client = ClientState {
                compositor: CompositorClientState::default(),
                live: app.live_clients.clone(),
            };
            match app.dh.insert_client(stream, Arc::new(client)) {
                Ok(_) => app.served = true,
                Err(err) => eprintln!("minimal_compositor: client refused: {err}"),
            }
        },
    )?;
    handle.insert_source(
        Generic::new(display, Interest::READ, Mode::Level),
        |_, display, app| {
            // SAFETY: the display is not dropped while the source exists (we never remove it).
            unsafe { display.get_mut().dispatch_clients(app)? };
            Ok(PostAction::Continue)
        },
    )?;
    handle.insert_source(Timer::from_duration(REFRESH), |_, _, app| {
        if let Err(err) = app.render() {
            eprintln!("minimal_compositor: render failed: {err}");
        }
        TimeoutAction::ToDuration(REFRESH)
    })?;
    println!("minimal_compositor: listening on {}", args.socket);

    while app.running {
        event_loop.dispatch(Some(REFRESH), &mut app)?;
        app.dh.flush_clients()?;
        if args.exit_when_idle && app.served && app.live_clients.load(Ordering::Relaxed) == 0 {
            app.running = false;
        }
    }

    // For the tests and logs, not part of the integration.
    let stats = app.sync_bridge.stats();
    println!(
        "minimal_compositor: frames_presented={} commits={} commits_waited_syncobj={} \
         commits_waited_implicit={} commits_waited_explicit={} buffers_released={} \
         release_points_cpu_signalled={} syncobj={} explicit_sync={}",
        app.frames_presented,
        stats.commits,
        stats.commits_waited_syncobj,
        stats.commits_waited_implicit + stats.commits_waited_implicit_poll,
        stats.commits_waited_explicit,
        stats.buffers_released,
        stats.release_points_cpu_signalled,
        stats.syncobj_mode,
        stats.explicit_sync_v1_mode,
    );
    if stats.latch_latency.count > 0 {
        // Fence signalled -> commit applied, and its parts: p50/p99/samples, microseconds.
        let us = |s: &syncbridge_protocols::sync_bridge::LatencySummary| {
            format!(
                "{:.1}/{:.1}/{}",
                s.p50_ns as f64 / 1e3,
                s.p99_ns as f64 / 1e3,
                s.count
            )
        };
        println!(
            "minimal_compositor: latch_us latency={} wake={} apply={} state={} bridge_hook={} \
             handlers={}",
            us(&stats.latch_latency),
            us(&stats.latch_wake),
            us(&stats.latch_apply),
            us(&stats.latch_apply_state),
            us(&stats.latch_apply_bridge_hook),
            us(&stats.latch_apply_handlers),
        );
    }
    Ok(())
}
