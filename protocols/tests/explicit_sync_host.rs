//! Host tests of the explicit-sync-v1 protocol paths and the release flow, with a minimal
//! smithay server and a wayland-client client in one thread over a socket pair. Only shm
//! buffers and invalid fences: no kernel fence device is needed.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use smithay::backend::renderer::utils::on_commit_buffer_handler;
use smithay::reexports::calloop::EventLoop;
use smithay::reexports::wayland_server::backend::{ClientData, ClientId, DisconnectReason};
use smithay::reexports::wayland_server::protocol::{wl_buffer, wl_surface::WlSurface};
use smithay::reexports::wayland_server::{Client, Display};
use smithay::wayland::buffer::BufferHandler;
use smithay::wayland::compositor::{CompositorClientState, CompositorHandler, CompositorState};
use smithay::wayland::shm::{ShmHandler, ShmState};
use smithay::{delegate_compositor, delegate_shm};
use syncbridge_protocols::{delegate_sync_bridge, BridgeConfig, SyncBridge, SyncBridgeHandler};

use wayland_client::protocol::{
    wl_buffer::WlBuffer, wl_compositor, wl_registry, wl_shm, wl_shm_pool, wl_surface,
};
use wayland_client::{Connection, Dispatch as ClientDispatch, EventQueue, QueueHandle};
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::{
    zwp_linux_buffer_release_v1, zwp_linux_explicit_synchronization_v1,
    zwp_linux_surface_synchronization_v1,
};

// ---------------------------------------------------------------- server

struct Server {
    compositor: CompositorState,
    shm: ShmState,
    bridge: SyncBridge<Server>,
    commits: usize,
    surfaces: Vec<WlSurface>,
}

#[derive(Default)]
struct ClientState {
    compositor: CompositorClientState,
}

impl ClientData for ClientState {
    fn initialized(&self, _client_id: ClientId) {}
    fn disconnected(&self, _client_id: ClientId, _reason: DisconnectReason) {}
}

impl CompositorHandler for Server {
    fn compositor_state(&mut self) -> &mut CompositorState {
        &mut self.compositor
    }
    fn client_compositor_state<'a>(&self, client: &'a Client) -> &'a CompositorClientState {
        &client
            .get_data::<ClientState>()
            .expect("client data")
            .compositor
    }
    fn new_surface(&mut self, surface: &WlSurface) {
        self.bridge.track_surface(surface);
        self.surfaces.push(surface.clone());
    }
    fn commit(&mut self, surface: &WlSurface) {
        self.commits += 1;
        on_commit_buffer_handler::<Self>(surface);
    }
}

impl BufferHandler for Server {
    fn buffer_destroyed(&mut self, _buffer: &wl_buffer::WlBuffer) {}
}

impl ShmHandler for Server {
    fn shm_state(&self) -> &ShmState {
        &self.shm
    }
}

impl SyncBridgeHandler for Server {
    fn sync_bridge(&mut self) -> &mut SyncBridge<Self> {
        &mut self.bridge
    }
}

delegate_compositor!(Server);
delegate_shm!(Server);
delegate_sync_bridge!(Server);

// ---------------------------------------------------------------- client

#[derive(Default)]
struct App {
    compositor: Option<wl_compositor::WlCompositor>,
    shm: Option<wl_shm::WlShm>,
    sync: Option<zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1>,
    /// (release object id, fenced?) in arrival order.
    releases: Vec<(u32, bool)>,
    buffer_releases: usize,
}

impl ClientDispatch<wl_registry::WlRegistry, ()> for App {
    fn event(
        app: &mut Self,
        registry: &wl_registry::WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::Global {
            name,
            interface,
            version,
        } = event
        {
            match interface.as_str() {
                "wl_compositor" => {
                    app.compositor = Some(registry.bind(name, version.min(5), qh, ()))
                }
                "wl_shm" => app.shm = Some(registry.bind(name, 1, qh, ())),
                "zwp_linux_explicit_synchronization_v1" => {
                    app.sync = Some(registry.bind(name, version, qh, ()))
                }
                _ => {}
            }
        }
    }
}

macro_rules! ignore_events {
    ($($t:ty),*) => {$(
        impl ClientDispatch<$t, ()> for App {
            fn event(_: &mut Self, _: &$t, _: <$t as wayland_client::Proxy>::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {}
        }
    )*};
}
ignore_events!(
    wl_compositor::WlCompositor,
    wl_surface::WlSurface,
    wl_shm::WlShm,
    wl_shm_pool::WlShmPool,
    zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1,
    zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1
);

impl ClientDispatch<WlBuffer, ()> for App {
    fn event(
        app: &mut Self,
        _: &WlBuffer,
        event: wayland_client::protocol::wl_buffer::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wayland_client::protocol::wl_buffer::Event::Release = event {
            app.buffer_releases += 1;
        }
    }
}

impl ClientDispatch<zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1, ()> for App {
    fn event(
        app: &mut Self,
        proxy: &zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1,
        event: zwp_linux_buffer_release_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        use wayland_client::Proxy;
        let id = proxy.id().protocol_id();
        match event {
            zwp_linux_buffer_release_v1::Event::FencedRelease { .. } => {
                app.releases.push((id, true))
            }
            zwp_linux_buffer_release_v1::Event::ImmediateRelease => app.releases.push((id, false)),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- fixture

struct Fixture {
    event_loop: EventLoop<'static, Server>,
    display: Display<Server>,
    server: Server,
    conn: Connection,
    queue: EventQueue<App>,
    app: App,
}

impl Fixture {
    fn new() -> Self {
        let event_loop: EventLoop<'static, Server> = EventLoop::try_new().expect("event loop");
        let display: Display<Server> = Display::new().expect("display");
        let dh = display.handle();
        let mut config = BridgeConfig::without_devices();
        config.limits.max_pending_waits_per_surface = 4;
        let mut server = Server {
            compositor: CompositorState::new::<Server>(&dh),
            shm: ShmState::new::<Server>(&dh, vec![]),
            bridge: SyncBridge::new(event_loop.handle(), config),
            commits: 0,
            surfaces: Vec::new(),
        };
        server.bridge.create_globals(&dh);
        let (a, b) = UnixStream::pair().expect("socket pair");
        dh.clone()
            .insert_client(a, Arc::new(ClientState::default()))
            .expect("insert client");
        let conn = Connection::from_socket(b).expect("client connection");
        let queue = conn.new_event_queue();
        let mut f = Fixture {
            event_loop,
            display,
            server,
            conn,
            queue,
            app: App::default(),
        };
        let qh = f.queue.handle();
        f.conn.display().get_registry(&qh, ());
        f.roundtrip();
        f.roundtrip();
        assert!(f.app.sync.is_some(), "explicit-sync-v1 global advertised");
        f
    }

    /// Exchanges messages until both sides are idle. Returns false once the client got a
    /// protocol error.
    fn roundtrip(&mut self) -> bool {
        for _ in 0..8 {
            let _ = self.conn.flush();
            self.display
                .dispatch_clients(&mut self.server)
                .expect("server dispatch");
            self.display.flush_clients().expect("server flush");
            self.event_loop
                .dispatch(Some(std::time::Duration::ZERO), &mut self.server)
                .expect("loop dispatch");
            if let Some(guard) = self.conn.prepare_read() {
                let _ = guard.read();
            }
            if self.queue.dispatch_pending(&mut self.app).is_err() {
                return false;
            }
        }
        self.conn.protocol_error().is_none()
    }

    fn error(&self) -> Option<(String, u32)> {
        self.conn
            .protocol_error()
            .map(|e| (e.object_interface, e.code))
    }

    fn qh(&self) -> QueueHandle<App> {
        self.queue.handle()
    }

    fn surface(&mut self) -> wl_surface::WlSurface {
        let qh = self.qh();
        self.app
            .compositor
            .as_ref()
            .expect("wl_compositor")
            .create_surface(&qh, ())
    }

    fn sync_for(
        &mut self,
        surface: &wl_surface::WlSurface,
    ) -> zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1 {
        let qh = self.qh();
        self.app
            .sync
            .as_ref()
            .expect("sync global")
            .get_synchronization(surface, &qh, ())
    }

    fn shm_buffer(&mut self) -> WlBuffer {
        let qh = self.qh();
        let fd = rustix::fs::memfd_create("buf", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, 4 * 4 * 4).expect("ftruncate");
        let pool = self
            .app
            .shm
            .as_ref()
            .expect("wl_shm")
            .create_pool(fd.as_fd(), 64, &qh, ());
        let buffer = pool.create_buffer(0, 4, 4, 16, wl_shm::Format::Argb8888, &qh, ());
        pool.destroy();
        buffer
    }
}

// ---------------------------------------------------------------- tests

const EXPLICIT_SURFACE: &str = "zwp_linux_surface_synchronization_v1";

#[test]
fn second_synchronization_object_is_an_error() {
    let mut f = Fixture::new();
    let s = f.surface();
    let _a = f.sync_for(&s);
    assert!(f.roundtrip());
    let _b = f.sync_for(&s);
    assert!(!f.roundtrip());
    assert_eq!(
        f.error(),
        Some(("zwp_linux_explicit_synchronization_v1".into(), 0))
    );
    assert_eq!(f.server.bridge.stats().protocol_errors, 1);
}

#[test]
fn acquire_fence_that_is_not_a_sync_file_is_invalid_fence() {
    let mut f = Fixture::new();
    let s = f.surface();
    let sync = f.sync_for(&s);
    let (r, _w) = rustix::pipe::pipe().expect("pipe");
    sync.set_acquire_fence(r.as_fd());
    assert!(!f.roundtrip());
    assert_eq!(f.error(), Some((EXPLICIT_SURFACE.into(), 0)));
}

#[test]
fn two_release_requests_in_one_commit_is_duplicate_release() {
    let mut f = Fixture::new();
    let s = f.surface();
    let sync = f.sync_for(&s);
    let qh = f.qh();
    let _r1 = sync.get_release(&qh, ());
    let _r2 = sync.get_release(&qh, ());
    assert!(!f.roundtrip());
    assert_eq!(f.error(), Some((EXPLICIT_SURFACE.into(), 2)));
}

#[test]
fn release_without_buffer_is_no_buffer() {
    let mut f = Fixture::new();
    let s = f.surface();
    let sync = f.sync_for(&s);
    let qh = f.qh();
    let _r1 = sync.get_release(&qh, ());
    s.commit();
    assert!(!f.roundtrip());
    assert_eq!(f.error(), Some((EXPLICIT_SURFACE.into(), 5)));
    assert_eq!(f.server.bridge.stats().commits_rejected, 1);
    assert_eq!(f.server.commits, 0, "a rejected commit is never applied");
}

#[test]
fn requests_after_the_surface_died_are_no_surface() {
    let mut f = Fixture::new();
    let s = f.surface();
    let sync = f.sync_for(&s);
    s.destroy();
    assert!(f.roundtrip());
    let qh = f.qh();
    let _r = sync.get_release(&qh, ());
    assert!(!f.roundtrip());
    assert_eq!(f.error(), Some((EXPLICIT_SURFACE.into(), 3)));
}

#[test]
fn replaced_buffer_gets_immediate_release_when_nothing_read_it() {
    let mut f = Fixture::new();
    let s = f.surface();
    let sync = f.sync_for(&s);
    let qh = f.qh();
    let a = f.shm_buffer();
    let r1 = sync.get_release(&qh, ());
    s.attach(Some(&a), 0, 0);
    s.commit();
    assert!(f.roundtrip());
    assert_eq!(f.server.commits, 1);
    assert_eq!(f.server.bridge.stats().tracked_buffers, 1);
    assert!(f.app.releases.is_empty(), "still current: not released");

    let b = f.shm_buffer();
    let _r2 = sync.get_release(&qh, ());
    s.attach(Some(&b), 0, 0);
    s.commit();
    assert!(f.roundtrip());
    use wayland_client::Proxy;
    assert_eq!(f.app.releases, vec![(r1.id().protocol_id(), false)]);
    let st = f.server.bridge.stats();
    assert_eq!(st.explicit_immediate_releases, 1);
    assert_eq!(st.buffers_released, 1);
    assert_eq!(st.tracked_buffers, 1);
    assert_eq!(
        f.app.buffer_releases, 1,
        "wl_buffer.release still sent for the old buffer"
    );
}

#[test]
fn destroying_the_surface_releases_its_buffer_and_leaves_nothing() {
    let mut f = Fixture::new();
    let s = f.surface();
    let sync = f.sync_for(&s);
    let qh = f.qh();
    let a = f.shm_buffer();
    let r1 = sync.get_release(&qh, ());
    s.attach(Some(&a), 0, 0);
    s.commit();
    assert!(f.roundtrip());
    assert_eq!(f.server.bridge.stats().tracked_buffers, 1);
    sync.destroy();
    s.destroy();
    assert!(f.roundtrip());
    use wayland_client::Proxy;
    assert_eq!(f.app.releases, vec![(r1.id().protocol_id(), false)]);
    let st = f.server.bridge.stats();
    assert_eq!(st.tracked_buffers, 0);
    assert_eq!(st.pending_waits, 0);
    assert_eq!(st.fences_held, 0);
    assert_eq!(st.fds_held, 0);
}

#[test]
fn frame_rendered_on_the_current_buffer_defers_release_to_replacement() {
    let mut f = Fixture::new();
    let s = f.surface();
    let sync = f.sync_for(&s);
    let qh = f.qh();
    let a = f.shm_buffer();
    let r1 = sync.get_release(&qh, ());
    s.attach(Some(&a), 0, 0);
    s.commit();
    assert!(f.roundtrip());

    // The server side: find the surface's buffer id the way a renderer would.
    let server_surface = f.server.surfaces.last().cloned().expect("one surface");
    let id = f
        .server
        .bridge
        .buffer_id(&server_surface)
        .expect("tracked buffer");
    // A CPU renderer (no fence) sampled it; a scanout showed it.
    f.server.bridge.frame_rendered(None, &[id]);
    f.server.bridge.scanout_committed(None, &[id], &[]);
    let b = f.shm_buffer();
    let _r2 = sync.get_release(&qh, ());
    s.attach(Some(&b), 0, 0);
    s.commit();
    assert!(f.roundtrip());
    assert!(
        f.app.releases.is_empty(),
        "still on a plane: not released yet"
    );
    // The atomic commit that stops showing it (no out-fence: flip-time fallback).
    f.server.bridge.scanout_committed(None, &[], &[id]);
    assert!(f.roundtrip());
    use wayland_client::Proxy;
    assert_eq!(f.app.releases, vec![(r1.id().protocol_id(), false)]);
    let st = f.server.bridge.stats();
    assert_eq!(st.reader_reports, 2);
    assert_eq!(st.reader_reports_unknown, 0);
}
