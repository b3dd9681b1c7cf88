//! The in-process compositor ([`Fixture`]'s server, manual frame clock) driven together
//! with [`TestClient`]s over socket pairs, all in one thread. Deterministic: frames run
//! only when the test calls [`Harness::frame`], fences signal when the test says so.
//!
//! ```no_run
//! use syncbridge_tests::client::harness::Harness;
//! let mut h = Harness::vm(); // render device: virtio_gpu's render node
//! let c = h.add_client();
//! let s = h.create_toplevel(c);
//! let tick = h.frame();
//! # let _ = (s, tick);
//! ```

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use syncbridge_compositor::{
    config::RenderDeviceSelection, frame_clock::FrameTick, CompositorConfig, State,
};

use super::{SurfaceId, TestClient};
use crate::fixture::Fixture;
use crate::kernel::card::NodeKind;
use crate::kernel::virtio_gpu::{virtio_gpu_node, VirtioGpu};

/// How many dispatch rounds a roundtrip may take.
const MAX_ROUNDS: usize = 200;

/// Index of a client in the harness.
pub type ClientId = usize;

/// In-process compositor + recording clients.
#[derive(Debug)]
pub struct Harness {
    /// The compositor (use `fixture.server`, `fixture.state()`).
    pub fixture: Fixture,
    /// Clients, by [`ClientId`] (disconnected ones stay, dead).
    pub clients: Vec<TestClient>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// The 2D (non-virgl) virtio_gpu card's render node (timeline syncobjs; the compositor's
/// dma-buf main device).
pub fn virtio_render_node() -> PathBuf {
    virtio_gpu_node(VirtioGpu::Plain, NodeKind::Render)
}

/// The 2D virtio_gpu card's render node as a timeline syncobj device (for clients' acquire and
/// release timelines).
pub fn virtio_syncobj_device() -> syncbridge_bridge::SyncobjDevice {
    let fd: std::os::fd::OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(virtio_render_node())
        .expect("open virtio_gpu's render node")
        .into();
    syncbridge_bridge::SyncobjDevice::new(fd).expect("virtio_gpu has timeline syncobjs")
}

impl Harness {
    /// A compositor whose DRM device is virtio_gpu's render node: linux-dmabuf,
    /// linux-drm-syncobj-v1 and explicit-sync-v1 advertised. One 640x480 output, manual
    /// frame clock.
    pub fn vm() -> Self {
        crate::kernel::require_vm();
        let config = CompositorConfig {
            render_device: RenderDeviceSelection::Path(virtio_render_node()),
            ..CompositorConfig::for_tests()
        };
        Self::with_config(config)
    }

    /// A compositor with [`CompositorConfig::for_tests`] (one 640x480 60 Hz output,
    /// manual frame clock, shm only; no DRM device needed).
    pub fn new() -> Self {
        Self::with_config(CompositorConfig::for_tests())
    }

    /// A compositor with `config` (its frame clock should be manual).
    pub fn with_config(config: CompositorConfig) -> Self {
        Self {
            fixture: Fixture::with_config(config),
            clients: Vec::new(),
        }
    }

    /// The compositor state.
    pub fn state(&mut self) -> &mut State {
        self.fixture.state()
    }

    /// Client `id`.
    pub fn client(&mut self, id: ClientId) -> &mut TestClient {
        &mut self.clients[id]
    }

    /// Connects a client, lists and binds the globals.
    pub fn add_client(&mut self) -> ClientId {
        let (server_end, client_end) = UnixStream::pair().expect("socketpair");
        self.fixture
            .server
            .state
            .insert_client(server_end)
            .expect("the server accepts the client");
        self.clients.push(TestClient::from_stream(client_end));
        let id = self.clients.len() - 1;
        self.roundtrip(id);
        self.clients[id].bind_globals();
        self.roundtrip(id);
        id
    }

    /// One round: clients flush, the server dispatches (waiting at most `wait` for an
    /// event such as a fence signal) and flushes, clients read what arrived.
    pub fn pump_with(&mut self, wait: Duration) {
        for c in &mut self.clients {
            c.flush();
        }
        self.fixture
            .server
            .dispatch(Some(wait))
            .expect("the server dispatches");
        for c in &mut self.clients {
            c.read_and_dispatch();
        }
    }

    /// One non-blocking round.
    pub fn pump(&mut self) {
        self.pump_with(Duration::ZERO);
    }

    /// Rounds until `cond` holds (true) or `rounds` rounds of up to 10 ms passed (false).
    pub fn pump_until(&mut self, rounds: usize, mut cond: impl FnMut(&mut Self) -> bool) -> bool {
        for _ in 0..rounds {
            if cond(self) {
                return true;
            }
            self.pump_with(Duration::from_millis(10));
        }
        cond(self)
    }

    /// Rounds until client `id`'s `wl_display.sync` is answered. Panics on a protocol
    /// error or after too many rounds.
    pub fn roundtrip(&mut self, id: ClientId) {
        let token = self.clients[id].send_sync();
        for _ in 0..MAX_ROUNDS {
            self.pump();
            if self.clients[id].rec.syncs_done.contains(&token) {
                return;
            }
            if let Some(err) = self.clients[id].protocol_error() {
                panic!("client {id} got a protocol error: {err:?}");
            }
        }
        panic!("roundtrip of client {id} did not complete in {MAX_ROUNDS} rounds");
    }

    /// Rounds until client `id` is killed by a protocol error (returned) or too many rounds
    /// pass (`None`).
    pub fn until_protocol_error(
        &mut self,
        id: ClientId,
    ) -> Option<wayland_client::backend::protocol::ProtocolError> {
        let _ = self.clients[id].send_sync();
        for _ in 0..MAX_ROUNDS {
            self.pump();
            if let Some(err) = self.clients[id].protocol_error() {
                return Some(err);
            }
        }
        None
    }

    /// Rounds until client `id`'s connection fails (returned: a protocol error, or an I/O
    /// error such as `ENOMEM` for `wl_display.error(no_memory)`) or too many rounds pass.
    pub fn until_dead(&mut self, id: ClientId) -> Option<wayland_client::backend::WaylandError> {
        let _ = self.clients[id].send_sync();
        for _ in 0..MAX_ROUNDS {
            self.pump();
            if let Some(err) = self.clients[id].conn.backend().last_error() {
                return Some(err);
            }
        }
        None
    }

    /// One refresh cycle of output 0, then its events are delivered.
    pub fn frame(&mut self) -> FrameTick {
        let tick = self
            .fixture
            .server
            .state
            .frame_tick(0)
            .expect("output 0 exists");
        self.fixture.server.state.flush_clients();
        self.pump();
        tick
    }

    /// A toplevel of client `id` with its initial configure done.
    pub fn create_toplevel(&mut self, id: ClientId) -> SurfaceId {
        let s = self.clients[id].create_toplevel();
        self.roundtrip(id);
        assert!(
            !self.clients[id].rec.surfaces[s].configures.is_empty(),
            "the toplevel got its initial configure"
        );
        s
    }

    /// Disconnects client `id` and lets the server notice.
    pub fn disconnect(&mut self, id: ClientId) {
        self.clients[id].disconnect();
        for _ in 0..3 {
            self.pump();
        }
    }
}
