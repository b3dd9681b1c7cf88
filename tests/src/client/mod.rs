//! A recording wayland-client test client for dma-buf and explicit-sync tests.
//!
//! [`TestClient`] connects to a running compositor (a socket path, `WAYLAND_DISPLAY`) or to
//! one end of a socket pair (the in-process [`harness::Harness`]). It creates xdg toplevels,
//! wraps real dma-bufs ([`buffers::DmaBuffer`]: vgem, virtio-gpu dumb buffers, udmabuf) into
//! `wl_buffer`s through `zwp_linux_dmabuf_v1.create_immed`, sets linux-drm-syncobj-v1
//! points and explicit-sync-v1 acquire fences, paces commits with wp_fifo_v1 barriers,
//! and records everything the compositor sends
//! back in a [`Recorder`]: presentation feedback per commit, `wl_buffer.release`,
//! `zwp_linux_buffer_release_v1` events (with their fences), frame callbacks, protocol
//! errors. Every recorded event gets a number from one counter ([`Recorder::seq`]), so
//! tests can check the order of events across objects.
//!
//! Test scaffolding: the client panics with a clear message when a global it needs is
//! missing.
//!
//! ```no_run
//! use syncbridge_tests::client::{harness::Harness, buffers::Allocator, Commit};
//! let mut h = Harness::vm();
//! let c = h.add_client();
//! let s = h.create_toplevel(c);
//! let alloc = Allocator::vgem();
//! let buf = alloc.allocate(64, 64).expect("vgem buffer");
//! let b = h.client(c).create_dmabuf_buffer(&buf);
//! h.client(c).attach(s, Some(b));
//! let commit = h.client(c).commit(s, Commit::feedback());
//! h.roundtrip(c);
//! h.frame();
//! assert!(h.client(c).rec.presented(commit).is_some());
//! ```

pub mod buffers;
pub mod dmabuf_feedback;
pub mod harness;
pub mod input;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use wayland_client::{
    backend::protocol::ProtocolError,
    delegate_noop,
    protocol::{
        wl_buffer::{self, WlBuffer},
        wl_callback::{self, WlCallback},
        wl_compositor::WlCompositor,
        wl_registry::{self, WlRegistry},
        wl_shm::{self, WlShm},
        wl_shm_pool::WlShmPool,
        wl_subcompositor::WlSubcompositor,
        wl_subsurface::WlSubsurface,
        wl_surface::WlSurface,
    },
    Connection, Dispatch, EventQueue, Proxy, QueueHandle, WEnum,
};
use wayland_protocols::{
    wp::{
        fifo::v1::client::{wp_fifo_manager_v1::WpFifoManagerV1, wp_fifo_v1::WpFifoV1},
        linux_dmabuf::zv1::client::{
            zwp_linux_buffer_params_v1::{self, ZwpLinuxBufferParamsV1},
            zwp_linux_dmabuf_v1::{self, ZwpLinuxDmabufV1},
        },
        linux_drm_syncobj::v1::client::{
            wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1,
            wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
            wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
        },
        linux_explicit_synchronization::zv1::client::{
            zwp_linux_buffer_release_v1::{self, ZwpLinuxBufferReleaseV1},
            zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1,
            zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1,
        },
        presentation_time::client::{
            wp_presentation::{self, WpPresentation},
            wp_presentation_feedback::{self, WpPresentationFeedback},
        },
    },
    xdg::shell::client::{
        xdg_surface::{self, XdgSurface},
        xdg_toplevel::{self, XdgToplevel},
        xdg_wm_base::{self, XdgWmBase},
    },
};

use buffers::DmaBuffer;

/// Index of a surface in a [`TestClient`].
pub type SurfaceId = usize;
/// Index of a buffer in a [`TestClient`].
pub type BufferId = usize;
/// Number of a commit, unique per client (starts at 1).
pub type CommitId = u64;

/// A global the registry announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalInfo {
    /// Registry name.
    pub name: u32,
    /// Interface.
    pub interface: String,
    /// Advertised version.
    pub version: u32,
}

/// What a presentation feedback object reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// `presented`: refresh counter `seq` at `time` (CLOCK_MONOTONIC).
    Presented {
        /// Presentation time.
        time: Duration,
        /// Refresh interval in ns (0: unknown).
        refresh_ns: u32,
        /// Refresh counter.
        seq: u64,
        /// Flags.
        flags: u32,
    },
    /// `discarded`.
    Discarded,
}

/// One recorded presentation-feedback outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackRecord {
    /// The commit it belongs to.
    pub commit: CommitId,
    /// The outcome.
    pub outcome: Presentation,
    /// Event number ([`Recorder::seq`]).
    pub at: u64,
}

/// One `zwp_linux_buffer_release_v1` event.
#[derive(Debug)]
pub struct ExplicitReleaseRecord {
    /// The commit whose buffer is released.
    pub commit: CommitId,
    /// The fence of `fenced_release`, `None` for `immediate_release`.
    pub fence: Option<OwnedFd>,
    /// Event number.
    pub at: u64,
}

/// What one buffer received.
#[derive(Debug, Default, Clone)]
pub struct BufferRecord {
    /// Event numbers of its `wl_buffer.release` events.
    pub releases: Vec<u64>,
    /// `create_immed` failed (`zwp_linux_buffer_params_v1.failed`).
    pub failed: bool,
}

/// What one surface received.
#[derive(Debug, Default, Clone)]
pub struct SurfaceRecord {
    /// xdg_surface.configure serials (each was acked).
    pub configures: Vec<u32>,
    /// xdg_toplevel.configure sizes.
    pub sizes: Vec<(i32, i32)>,
    /// Frame callback event numbers.
    pub frames: Vec<u64>,
    /// Per frame callback: its time (ms, `callback_data`) and CLOCK_MONOTONIC ns when
    /// the client read it.
    pub frame_times: Vec<(u32, u64)>,
    /// xdg_toplevel.close received.
    pub closed: bool,
}

/// Everything the client received.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Counter numbering every recorded event.
    pub seq: u64,
    /// Globals.
    pub globals: Vec<GlobalInfo>,
    /// wl_shm formats, as announced.
    pub shm_formats: Vec<u32>,
    /// Completed `wl_display.sync` tokens.
    pub syncs_done: HashSet<u32>,
    /// Per surface.
    pub surfaces: Vec<SurfaceRecord>,
    /// Per buffer.
    pub buffers: Vec<BufferRecord>,
    /// Presentation feedback, in arrival order.
    pub feedback: Vec<FeedbackRecord>,
    /// Explicit-sync-v1 release events, in arrival order.
    pub explicit_releases: Vec<ExplicitReleaseRecord>,
    /// wp_presentation clock.
    pub presentation_clock: Option<u32>,
    /// wl_seat keyboard and pointer events (after [`TestClient::bind_seat`]).
    pub input: input::InputRecord,
}

impl Recorder {
    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The feedback outcome of `commit`, if it arrived.
    pub fn outcome(&self, commit: CommitId) -> Option<Presentation> {
        self.feedback
            .iter()
            .find(|f| f.commit == commit)
            .map(|f| f.outcome)
    }

    /// The refresh counter `commit` was presented at, if it was presented.
    pub fn presented(&self, commit: CommitId) -> Option<u64> {
        match self.outcome(commit) {
            Some(Presentation::Presented { seq, .. }) => Some(seq),
            _ => None,
        }
    }

    /// How many `wl_buffer.release` events `buffer` got.
    pub fn releases(&self, buffer: BufferId) -> usize {
        self.buffers.get(buffer).map_or(0, |b| b.releases.len())
    }

    /// The explicit-sync-v1 release of `commit`, if it arrived.
    pub fn explicit_release(&self, commit: CommitId) -> Option<&ExplicitReleaseRecord> {
        self.explicit_releases.iter().find(|r| r.commit == commit)
    }
}

/// Protocol objects of one xdg toplevel.
#[derive(Debug, Clone)]
pub struct Surface {
    /// The surface.
    pub wl: WlSurface,
    /// Its xdg_surface.
    pub xdg: XdgSurface,
    /// Its toplevel.
    pub toplevel: XdgToplevel,
    /// Its linux-drm-syncobj-v1 object, once created.
    pub syncobj: Option<WpLinuxDrmSyncobjSurfaceV1>,
    /// Its explicit-sync-v1 object, once created.
    pub explicit: Option<ZwpLinuxSurfaceSynchronizationV1>,
    /// Its wp_fifo_v1 object, once created.
    pub fifo: Option<WpFifoV1>,
}

/// What to ask for with a commit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Commit {
    /// Presentation feedback.
    pub feedback: bool,
    /// A frame callback.
    pub frame: bool,
    /// An explicit-sync-v1 release object.
    pub explicit_release: bool,
}

impl Commit {
    /// Presentation feedback only.
    pub fn feedback() -> Self {
        Self {
            feedback: true,
            ..Self::default()
        }
    }

    /// A frame callback and presentation feedback.
    pub fn frame_and_feedback() -> Self {
        Self {
            feedback: true,
            frame: true,
            ..Self::default()
        }
    }

    /// Presentation feedback and an explicit-sync-v1 release object.
    pub fn with_explicit_release() -> Self {
        Self {
            feedback: true,
            explicit_release: true,
            ..Self::default()
        }
    }
}

/// User data of `wl_callback`s.
#[derive(Debug, Clone, Copy)]
pub enum CallbackKind {
    /// `wl_display.sync` with this token.
    Sync(u32),
    /// A frame callback of this surface.
    Frame(SurfaceId),
}

/// A recording client. See the [module docs](self).
#[derive(Debug)]
pub struct TestClient {
    /// The connection.
    pub conn: Connection,
    /// Its event queue.
    pub queue: EventQueue<Recorder>,
    /// Queue handle.
    pub qh: QueueHandle<Recorder>,
    /// What arrived.
    pub rec: Recorder,
    registry: WlRegistry,
    /// wl_compositor.
    pub compositor: Option<WlCompositor>,
    /// xdg_wm_base.
    pub wm_base: Option<XdgWmBase>,
    /// wl_shm.
    pub shm: Option<WlShm>,
    /// wp_presentation.
    pub presentation: Option<WpPresentation>,
    /// zwp_linux_dmabuf_v1.
    pub dmabuf: Option<ZwpLinuxDmabufV1>,
    /// wp_linux_drm_syncobj_manager_v1.
    pub syncobj: Option<WpLinuxDrmSyncobjManagerV1>,
    /// zwp_linux_explicit_synchronization_v1.
    pub explicit: Option<ZwpLinuxExplicitSynchronizationV1>,
    /// wp_fifo_manager_v1.
    pub fifo: Option<WpFifoManagerV1>,
    /// Surfaces, by [`SurfaceId`].
    pub surfaces: Vec<Surface>,
    /// Buffers, by [`BufferId`].
    pub buffers: Vec<WlBuffer>,
    next_sync: u32,
    next_commit: CommitId,
    alive: bool,
}

/// `DRM_FORMAT_XRGB8888`.
pub const XRGB8888: u32 = u32::from_le_bytes(*b"XR24");
/// `DRM_FORMAT_MOD_LINEAR`.
pub const MOD_LINEAR: u64 = 0;

impl TestClient {
    /// Wraps a connected socket and asks for the registry (nothing is bound yet).
    pub fn from_stream(stream: UnixStream) -> Self {
        let conn = Connection::from_socket(stream).expect("wayland connection on the socket");
        Self::from_connection(conn)
    }

    /// Wraps an established connection (e.g. `Connection::connect_to_env()`) and asks for
    /// the registry (nothing is bound yet).
    pub fn from_connection(conn: Connection) -> Self {
        let queue = conn.new_event_queue();
        let qh = queue.handle();
        let registry = conn.display().get_registry(&qh, ());
        Self {
            conn,
            queue,
            qh,
            rec: Recorder::default(),
            registry,
            compositor: None,
            wm_base: None,
            shm: None,
            presentation: None,
            dmabuf: None,
            syncobj: None,
            explicit: None,
            fifo: None,
            surfaces: Vec::new(),
            buffers: Vec::new(),
            next_sync: 0,
            next_commit: 0,
            alive: true,
        }
    }

    /// Connects to the socket at `path` of a running compositor, lists its globals and
    /// binds the common ones (blocking roundtrips).
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        let mut client = Self::from_stream(stream);
        client.blocking_roundtrip();
        client.bind_globals();
        client.blocking_roundtrip();
        Ok(client)
    }

    /// The global named `interface`, if announced.
    pub fn global(&self, interface: &str) -> Option<&GlobalInfo> {
        self.rec.globals.iter().find(|g| g.interface == interface)
    }

    /// Binds `interface` at `min(version, advertised)`, if announced.
    pub fn bind<I>(&self, version: u32) -> Option<I>
    where
        I: Proxy + 'static,
        Recorder: Dispatch<I, ()>,
    {
        let global = self.global(I::interface().name)?;
        Some(
            self.registry
                .bind::<I, _, _>(global.name, version.min(global.version), &self.qh, ()),
        )
    }

    /// Binds every global this client knows that the compositor announced.
    pub fn bind_globals(&mut self) {
        self.compositor = self.bind(6);
        self.wm_base = self.bind(6);
        self.shm = self.bind(1);
        self.presentation = self.bind(1);
        self.dmabuf = self.bind(4);
        self.syncobj = self.bind(1);
        self.explicit = self.bind(2);
        self.fifo = self.bind(1);
    }

    /// Sends `wl_display.sync`; returns its token.
    pub fn send_sync(&mut self) -> u32 {
        self.next_sync += 1;
        let token = self.next_sync;
        if self.alive {
            self.conn
                .display()
                .sync(&self.qh, CallbackKind::Sync(token));
        }
        token
    }

    /// Blocking roundtrip (real compositor in another process). Panics on a protocol error.
    pub fn blocking_roundtrip(&mut self) {
        if let Err(err) = self.queue.roundtrip(&mut self.rec) {
            panic!(
                "roundtrip failed: {err}; protocol error: {:?}",
                self.protocol_error()
            );
        }
    }

    /// Blocking dispatch until `cond` holds or `timeout` passes; returns whether it held.
    pub fn blocking_dispatch_until(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut(&Recorder) -> bool,
    ) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !cond(&self.rec) {
            if std::time::Instant::now() >= deadline || !self.alive {
                return false;
            }
            self.flush();
            if let Some(guard) = self.conn.prepare_read() {
                let fd = guard.connection_fd();
                let mut fds = [rustix::event::PollFd::new(
                    &fd,
                    rustix::event::PollFlags::IN,
                )];
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let ts = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: left.min(Duration::from_millis(50)).as_nanos() as _,
                };
                let _ = rustix::event::poll(&mut fds, Some(&ts));
                if let Err(err) = guard.read() {
                    if self.connection_lost(&err) {
                        return cond(&self.rec);
                    }
                }
            }
            if self.queue.dispatch_pending(&mut self.rec).is_err() {
                return cond(&self.rec);
            }
        }
        true
    }

    /// Whether a read error means the connection is gone (the server closed it or sent a
    /// protocol error); marks the client dead so callers stop waiting on it.
    fn connection_lost(&mut self, err: &wayland_client::backend::WaylandError) -> bool {
        let lost = match err {
            wayland_client::backend::WaylandError::Io(e) => {
                e.kind() != std::io::ErrorKind::WouldBlock
            }
            wayland_client::backend::WaylandError::Protocol(_) => true,
        };
        if lost {
            self.alive = false;
        }
        lost
    }

    /// Flushes requests (errors mean the server closed us; see [`Self::protocol_error`]).
    pub fn flush(&mut self) {
        if self.alive {
            let _ = self.conn.flush();
        }
    }

    /// Reads what arrived, without blocking, and dispatches it.
    pub fn read_and_dispatch(&mut self) {
        if !self.alive {
            return;
        }
        if let Some(guard) = self.conn.prepare_read() {
            let _ = guard.read();
        }
        let _ = self.queue.dispatch_pending(&mut self.rec);
    }

    /// The protocol error that killed this client, if any.
    pub fn protocol_error(&self) -> Option<ProtocolError> {
        self.conn.protocol_error()
    }

    /// False once [`Self::disconnect`] was called or the connection was lost.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// Shuts the socket down (the server sees EOF at once) and stops using it.
    pub fn disconnect(&mut self) {
        self.alive = false;
        if let Ok(fd) = self.conn.backend().poll_fd().try_clone_to_owned() {
            let _ = UnixStream::from(fd).shutdown(std::net::Shutdown::Both);
        }
    }

    /// A new bare `wl_surface` (no role, not tracked in [`Self::surfaces`]).
    pub fn create_surface(&self) -> WlSurface {
        self.compositor
            .as_ref()
            .expect("wl_compositor bound")
            .create_surface(&self.qh, ())
    }

    /// A new xdg toplevel; its initial commit is sent (the configure is not yet received).
    pub fn create_toplevel(&mut self) -> SurfaceId {
        let id = self.surfaces.len();
        let wl = self.create_surface();
        let wm_base = self.wm_base.as_ref().expect("xdg_wm_base bound");
        let xdg = wm_base.get_xdg_surface(&wl, &self.qh, id);
        let toplevel = xdg.get_toplevel(&self.qh, id);
        toplevel.set_title(format!("syncbridge test surface {id}"));
        wl.commit();
        self.surfaces.push(Surface {
            wl,
            xdg,
            toplevel,
            syncobj: None,
            explicit: None,
            fifo: None,
        });
        self.rec.surfaces.push(SurfaceRecord::default());
        id
    }

    /// Wraps `buf` in a `wl_buffer` (`create_immed`, XRGB8888, linear).
    pub fn create_dmabuf_buffer(&mut self, buf: &DmaBuffer) -> BufferId {
        let dmabuf = self.dmabuf.as_ref().expect("zwp_linux_dmabuf_v1 bound");
        let id = self.buffers.len();
        let params = dmabuf.create_params(&self.qh, id);
        params.add(
            buf.fd.as_fd(),
            0,
            0,
            buf.stride,
            (MOD_LINEAR >> 32) as u32,
            (MOD_LINEAR & 0xffff_ffff) as u32,
        );
        let wl = params.create_immed(
            buf.width as i32,
            buf.height as i32,
            XRGB8888,
            zwp_linux_buffer_params_v1::Flags::empty(),
            &self.qh,
            id,
        );
        params.destroy();
        self.buffers.push(wl);
        self.rec.buffers.push(BufferRecord::default());
        id
    }

    /// A `width`x`height` XRGB8888 `wl_shm` buffer (for "not a dma-buf" cases).
    pub fn create_shm_buffer(&mut self, width: i32, height: i32) -> BufferId {
        self.create_shm_buffer_filled(width, height, wl_shm::Format::Xrgb8888, 0x8080_8080)
    }

    /// A `width`x`height` `wl_shm` buffer of `format` (4 bytes per pixel) with every
    /// pixel set to `pixel` (little-endian, e.g. 0xAARRGGBB for ARGB8888), in its own
    /// memfd-backed pool.
    pub fn create_shm_buffer_filled(
        &mut self,
        width: i32,
        height: i32,
        format: wl_shm::Format,
        pixel: u32,
    ) -> BufferId {
        let fd = rustix::fs::memfd_create("syncbridge-test-shm", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd_create");
        let mut file = std::fs::File::from(fd);
        let pixels: Vec<u8> = std::iter::repeat_n(pixel.to_le_bytes(), (width * height) as usize)
            .flatten()
            .collect();
        file.write_all(&pixels).expect("fill the shm buffer");
        self.create_shm_buffer_in(file.as_fd(), width, height, format)
    }

    /// A `width`x`height` `wl_shm` buffer of `format` (4 bytes per pixel, no padding) over
    /// the first `width * 4 * height` bytes of `fd`, in a pool of exactly that size. The
    /// caller keeps `fd` (e.g. to draw into it).
    pub fn create_shm_buffer_in(
        &mut self,
        fd: BorrowedFd<'_>,
        width: i32,
        height: i32,
        format: wl_shm::Format,
    ) -> BufferId {
        let shm = self.shm.as_ref().expect("wl_shm bound");
        let stride = width * 4;
        let size = stride * height;
        let pool = shm.create_pool(fd, size, &self.qh, ());
        let id = self.buffers.len();
        let wl = pool.create_buffer(0, width, height, stride, format, &self.qh, id);
        pool.destroy();
        self.buffers.push(wl);
        self.rec.buffers.push(BufferRecord::default());
        id
    }

    /// Destroys a buffer's `wl_buffer`.
    pub fn destroy_buffer(&mut self, buffer: BufferId) {
        self.buffers[buffer].destroy();
    }

    /// `wl_surface.attach(buffer or NULL)` plus full damage.
    pub fn attach(&self, surface: SurfaceId, buffer: Option<BufferId>) {
        let s = &self.surfaces[surface].wl;
        s.attach(buffer.map(|b| &self.buffers[b]), 0, 0);
        s.damage_buffer(0, 0, i32::MAX, i32::MAX);
    }

    /// Commits `surface`, with what `opts` asks for. Returns the commit's number.
    pub fn commit(&mut self, surface: SurfaceId, opts: Commit) -> CommitId {
        self.next_commit += 1;
        let commit = self.next_commit;
        let s = &self.surfaces[surface];
        if opts.frame {
            s.wl.frame(&self.qh, CallbackKind::Frame(surface));
        }
        if opts.feedback {
            let presentation = self.presentation.as_ref().expect("wp_presentation bound");
            presentation.feedback(&s.wl, &self.qh, commit);
        }
        if opts.explicit_release {
            let sync = s
                .explicit
                .as_ref()
                .expect("explicit-sync-v1 surface object");
            sync.get_release(&self.qh, commit);
        }
        s.wl.commit();
        commit
    }

    /// Creates the surface's `wp_linux_drm_syncobj_surface_v1`.
    pub fn syncobj_surface(&mut self, surface: SurfaceId) -> WpLinuxDrmSyncobjSurfaceV1 {
        let manager = self
            .syncobj
            .as_ref()
            .expect("wp_linux_drm_syncobj_manager_v1 advertised and bound");
        let obj = manager.get_surface(&self.surfaces[surface].wl, &self.qh, ());
        self.surfaces[surface].syncobj = Some(obj.clone());
        obj
    }

    /// Imports a timeline fd (`DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD` of a timeline syncobj).
    pub fn import_timeline(&self, fd: BorrowedFd<'_>) -> WpLinuxDrmSyncobjTimelineV1 {
        let manager = self
            .syncobj
            .as_ref()
            .expect("wp_linux_drm_syncobj_manager_v1 advertised and bound");
        manager.import_timeline(fd, &self.qh, ())
    }

    /// A new acquire and a new release timeline on `dev`, imported into this client:
    /// `(acquire, release, acquire as the client's object, release as the client's
    /// object)`. The test signals acquire points and waits for release points.
    pub fn new_timelines(
        &self,
        dev: &syncbridge_bridge::SyncobjDevice,
    ) -> (
        syncbridge_bridge::Timeline,
        syncbridge_bridge::Timeline,
        WpLinuxDrmSyncobjTimelineV1,
        WpLinuxDrmSyncobjTimelineV1,
    ) {
        let acquire = dev.create_timeline().expect("acquire timeline");
        let release = dev.create_timeline().expect("release timeline");
        let acquire_obj = self.import_timeline(acquire.export_fd().expect("export").as_fd());
        let release_obj = self.import_timeline(release.export_fd().expect("export").as_fd());
        (acquire, release, acquire_obj, release_obj)
    }

    /// Sets the acquire point of the surface's next commit.
    pub fn set_acquire_point(
        &self,
        surface: SurfaceId,
        timeline: &WpLinuxDrmSyncobjTimelineV1,
        point: u64,
    ) {
        let obj = self.surfaces[surface]
            .syncobj
            .as_ref()
            .expect("syncobj surface");
        obj.set_acquire_point(timeline, (point >> 32) as u32, point as u32);
    }

    /// Sets the release point of the surface's next commit.
    pub fn set_release_point(
        &self,
        surface: SurfaceId,
        timeline: &WpLinuxDrmSyncobjTimelineV1,
        point: u64,
    ) {
        let obj = self.surfaces[surface]
            .syncobj
            .as_ref()
            .expect("syncobj surface");
        obj.set_release_point(timeline, (point >> 32) as u32, point as u32);
    }

    /// Creates the surface's `zwp_linux_surface_synchronization_v1`.
    pub fn explicit_surface(&mut self, surface: SurfaceId) -> ZwpLinuxSurfaceSynchronizationV1 {
        let manager = self
            .explicit
            .as_ref()
            .expect("zwp_linux_explicit_synchronization_v1 advertised and bound");
        let obj = manager.get_synchronization(&self.surfaces[surface].wl, &self.qh, ());
        self.surfaces[surface].explicit = Some(obj.clone());
        obj
    }

    /// Sets the explicit-sync-v1 acquire fence of the surface's next commit.
    pub fn set_acquire_fence(&self, surface: SurfaceId, fence: BorrowedFd<'_>) {
        self.surfaces[surface]
            .explicit
            .as_ref()
            .expect("explicit-sync-v1 surface object")
            .set_acquire_fence(fence);
    }
}

impl TestClient {
    /// Creates the surface's `wp_fifo_v1`.
    pub fn fifo_surface(&mut self, surface: SurfaceId) -> WpFifoV1 {
        let manager = self
            .fifo
            .as_ref()
            .expect("wp_fifo_manager_v1 advertised and bound");
        let obj = manager.get_fifo(&self.surfaces[surface].wl, &self.qh, ());
        self.surfaces[surface].fifo = Some(obj.clone());
        obj
    }

    /// The surface's next commit waits for the fifo barrier to clear (`wait_barrier`) and
    /// sets a new one (`set_barrier`): one content update per refresh cycle, the way
    /// Mesa's Vulkan WSI presents in FIFO mode.
    pub fn fifo_barrier(&self, surface: SurfaceId) {
        let fifo = self.surfaces[surface]
            .fifo
            .as_ref()
            .expect("wp_fifo_v1 surface object");
        fifo.wait_barrier();
        fifo.set_barrier();
    }
}

// ------------------------------------------------------------------------------ dispatch

impl Dispatch<WlRegistry, ()> for Recorder {
    fn event(
        state: &mut Self,
        _: &WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            wl_registry::Event::Global {
                name,
                interface,
                version,
            } => state.globals.push(GlobalInfo {
                name,
                interface,
                version,
            }),
            wl_registry::Event::GlobalRemove { name } => state.globals.retain(|g| g.name != name),
            _ => {}
        }
    }
}

impl Dispatch<WlCallback, CallbackKind> for Recorder {
    fn event(
        state: &mut Self,
        _: &WlCallback,
        event: wl_callback::Event,
        kind: &CallbackKind,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { callback_data } = event {
            let at = state.next();
            let received_ns = syncbridge_bridge::sync_file::monotonic_now_ns();
            match *kind {
                CallbackKind::Sync(token) => {
                    state.syncs_done.insert(token);
                }
                CallbackKind::Frame(surface) => {
                    if let Some(s) = state.surfaces.get_mut(surface) {
                        s.frames.push(at);
                        s.frame_times.push((callback_data, received_ns));
                    }
                }
            }
        }
    }
}

impl Dispatch<WlBuffer, BufferId> for Recorder {
    fn event(
        state: &mut Self,
        _: &WlBuffer,
        event: wl_buffer::Event,
        id: &BufferId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_buffer::Event::Release = event {
            let at = state.next();
            if let Some(b) = state.buffers.get_mut(*id) {
                b.releases.push(at);
            }
        }
    }
}

impl Dispatch<ZwpLinuxBufferParamsV1, BufferId> for Recorder {
    fn event(
        state: &mut Self,
        _: &ZwpLinuxBufferParamsV1,
        event: zwp_linux_buffer_params_v1::Event,
        id: &BufferId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let zwp_linux_buffer_params_v1::Event::Failed = event {
            if let Some(b) = state.buffers.get_mut(*id) {
                b.failed = true;
            }
        }
    }

    wayland_client::event_created_child!(Recorder, ZwpLinuxBufferParamsV1, [
        zwp_linux_buffer_params_v1::EVT_CREATED_OPCODE => (WlBuffer, usize::MAX),
    ]);
}

impl Dispatch<ZwpLinuxDmabufV1, ()> for Recorder {
    fn event(
        _: &mut Self,
        _: &ZwpLinuxDmabufV1,
        _: zwp_linux_dmabuf_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<WlShm, ()> for Recorder {
    fn event(
        state: &mut Self,
        _: &WlShm,
        event: wl_shm::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_shm::Event::Format { format } = event {
            state.shm_formats.push(match format {
                WEnum::Value(f) => f as u32,
                WEnum::Unknown(raw) => raw,
            });
        }
    }
}

impl Dispatch<XdgWmBase, ()> for Recorder {
    fn event(
        _: &mut Self,
        wm_base: &XdgWmBase,
        event: xdg_wm_base::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_wm_base::Event::Ping { serial } = event {
            wm_base.pong(serial);
        }
    }
}

impl Dispatch<XdgSurface, SurfaceId> for Recorder {
    fn event(
        state: &mut Self,
        xdg: &XdgSurface,
        event: xdg_surface::Event,
        id: &SurfaceId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_surface::Event::Configure { serial } = event {
            xdg.ack_configure(serial);
            if let Some(s) = state.surfaces.get_mut(*id) {
                s.configures.push(serial);
            }
        }
    }
}

impl Dispatch<XdgToplevel, SurfaceId> for Recorder {
    fn event(
        state: &mut Self,
        _: &XdgToplevel,
        event: xdg_toplevel::Event,
        id: &SurfaceId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let Some(s) = state.surfaces.get_mut(*id) else {
            return;
        };
        match event {
            xdg_toplevel::Event::Configure { width, height, .. } => s.sizes.push((width, height)),
            xdg_toplevel::Event::Close => s.closed = true,
            _ => {}
        }
    }
}

impl Dispatch<WpPresentation, ()> for Recorder {
    fn event(
        state: &mut Self,
        _: &WpPresentation,
        event: wp_presentation::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wp_presentation::Event::ClockId { clk_id } = event {
            state.presentation_clock = Some(clk_id);
        }
    }
}

impl Dispatch<WpPresentationFeedback, CommitId> for Recorder {
    fn event(
        state: &mut Self,
        _: &WpPresentationFeedback,
        event: wp_presentation_feedback::Event,
        commit: &CommitId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let outcome = match event {
            wp_presentation_feedback::Event::Presented {
                tv_sec_hi,
                tv_sec_lo,
                tv_nsec,
                refresh,
                seq_hi,
                seq_lo,
                flags,
            } => Presentation::Presented {
                time: Duration::new((u64::from(tv_sec_hi) << 32) | u64::from(tv_sec_lo), tv_nsec),
                refresh_ns: refresh,
                seq: (u64::from(seq_hi) << 32) | u64::from(seq_lo),
                flags: match flags {
                    WEnum::Value(f) => f.bits(),
                    WEnum::Unknown(raw) => raw,
                },
            },
            wp_presentation_feedback::Event::Discarded => Presentation::Discarded,
            _ => return,
        };
        let at = state.next();
        state.feedback.push(FeedbackRecord {
            commit: *commit,
            outcome,
            at,
        });
    }
}

impl Dispatch<ZwpLinuxBufferReleaseV1, CommitId> for Recorder {
    fn event(
        state: &mut Self,
        _: &ZwpLinuxBufferReleaseV1,
        event: zwp_linux_buffer_release_v1::Event,
        commit: &CommitId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let fence = match event {
            zwp_linux_buffer_release_v1::Event::FencedRelease { fence } => Some(fence),
            zwp_linux_buffer_release_v1::Event::ImmediateRelease => None,
            _ => return,
        };
        let at = state.next();
        state.explicit_releases.push(ExplicitReleaseRecord {
            commit: *commit,
            fence,
            at,
        });
    }
}

delegate_noop!(Recorder: ignore WlCompositor);
delegate_noop!(Recorder: ignore WlSurface);
delegate_noop!(Recorder: ignore WlShmPool);
delegate_noop!(Recorder: ignore WlSubcompositor);
delegate_noop!(Recorder: ignore WlSubsurface);
delegate_noop!(Recorder: ignore WpLinuxDrmSyncobjManagerV1);
delegate_noop!(Recorder: ignore WpLinuxDrmSyncobjSurfaceV1);
delegate_noop!(Recorder: ignore WpLinuxDrmSyncobjTimelineV1);
delegate_noop!(Recorder: ignore ZwpLinuxExplicitSynchronizationV1);
delegate_noop!(Recorder: ignore ZwpLinuxSurfaceSynchronizationV1);
delegate_noop!(Recorder: ignore WpFifoManagerV1);
delegate_noop!(Recorder: ignore WpFifoV1);

/// Maps interface names to versions, for `wayland-info`-style checks.
pub fn globals_by_name(globals: &[GlobalInfo]) -> HashMap<&str, u32> {
    globals
        .iter()
        .map(|g| (g.interface.as_str(), g.version))
        .collect()
}
