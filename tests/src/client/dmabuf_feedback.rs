//! A `zwp_linux_dmabuf_feedback_v1` recorder on an event queue of its own: every
//! feedback batch the compositor completes with `done`, decoded (format table read
//! through a private read-only mapping of its fd, as the protocol asks).
//!
//! ```no_run
//! # use syncbridge_tests::client::{TestClient, dmabuf_feedback::FeedbackQueue};
//! # fn f(c: &mut TestClient, s: usize) {
//! let mut fq = FeedbackQueue::for_surface(c, s);
//! fq.pump_until(c, std::time::Duration::from_secs(5), |log| !log.batches.is_empty());
//! # }
//! ```

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use wayland_client::{Connection, Dispatch, EventQueue, QueueHandle, WEnum};
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_feedback_v1::{
    self, ZwpLinuxDmabufFeedbackV1,
};

use super::{SurfaceId, TestClient};

/// `zwp_linux_dmabuf_feedback_v1.tranche_flags`: scanout.
pub const TRANCHE_SCANOUT: u32 = 1;

/// One tranche: target device, flags, (fourcc, modifier) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tranche {
    /// `dev_t` of the target device.
    pub target_device: u64,
    /// Flags (bit 0: scanout).
    pub flags: u32,
    /// The formats, looked up in the format table.
    pub formats: Vec<(u32, u64)>,
}

impl Tranche {
    /// Whether the tranche is flagged `scanout`.
    pub fn is_scanout(&self) -> bool {
        self.flags & TRANCHE_SCANOUT != 0
    }
}

/// A complete feedback (up to `done`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feedback {
    /// `dev_t` of the main device.
    pub main_device: u64,
    /// The format table.
    pub table: Vec<(u32, u64)>,
    /// The tranches, in preference order.
    pub tranches: Vec<Tranche>,
}

impl Feedback {
    /// The first tranche flagged `scanout`, if any.
    pub fn scanout(&self) -> Option<&Tranche> {
        self.tranches.iter().find(|t| t.is_scanout())
    }
}

/// What the feedback object received.
#[derive(Debug, Default)]
pub struct FeedbackLog {
    /// Completed batches, in order.
    pub batches: Vec<Feedback>,
    /// Problems decoding events (a bad table, an index past it).
    pub errors: Vec<String>,
    building: Feedback,
    tranche: Tranche,
}

impl FeedbackLog {
    /// The last complete feedback.
    pub fn latest(&self) -> Option<&Feedback> {
        self.batches.last()
    }
}

/// A surface's feedback object and its queue.
#[derive(Debug)]
pub struct FeedbackQueue {
    /// The queue the feedback object's events go to.
    pub queue: EventQueue<FeedbackLog>,
    /// The object.
    pub feedback: ZwpLinuxDmabufFeedbackV1,
    /// What it received.
    pub log: FeedbackLog,
}

impl FeedbackQueue {
    /// `get_surface_feedback` for `surface` of `c` (needs `zwp_linux_dmabuf_v1` v4+).
    pub fn for_surface(c: &TestClient, surface: SurfaceId) -> Self {
        let dmabuf = c.dmabuf.as_ref().expect("zwp_linux_dmabuf_v1 bound");
        let queue = c.conn.new_event_queue::<FeedbackLog>();
        let feedback = dmabuf.get_surface_feedback(&c.surfaces[surface].wl, &queue.handle(), ());
        Self {
            queue,
            feedback,
            log: FeedbackLog::default(),
        }
    }

    /// Read the socket through `c` (which dispatches its own queue) and dispatch the
    /// feedback events until `cond` holds or `timeout` passes; returns whether it held.
    pub fn pump_until(
        &mut self,
        c: &mut TestClient,
        timeout: Duration,
        cond: impl Fn(&FeedbackLog) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Err(err) = self.queue.dispatch_pending(&mut self.log) {
                panic!("feedback queue: {err}");
            }
            if cond(&self.log) {
                return true;
            }
            if Instant::now() >= deadline || !c.is_alive() {
                return false;
            }
            c.blocking_dispatch_until(Duration::from_millis(50), |_| false);
        }
    }
}

fn dev_t(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

/// The format table: 16-byte entries (u32 fourcc, u32 padding, u64 modifier).
fn read_table(fd: &OwnedFd, size: u32) -> Result<Vec<(u32, u64)>, String> {
    let len = size as usize;
    if len == 0 || len % 16 != 0 {
        return Err(format!("format table of {len} bytes"));
    }
    // SAFETY: a private read-only mapping of the table fd we received (the protocol
    // requires MAP_PRIVATE); unmapped below, the slice does not outlive it.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::PRIVATE,
            fd.as_fd(),
            0,
        )
    }
    .map_err(|e| format!("mmap of the format table: {e}"))?;
    // SAFETY: `ptr` maps `len` readable bytes until munmap.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    let table = bytes
        .chunks_exact(16)
        .map(|e| {
            let code = u32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
            let mut m = [0u8; 8];
            m.copy_from_slice(&e[8..16]);
            (code, u64::from_ne_bytes(m))
        })
        .collect();
    // SAFETY: unmapping exactly what we mapped.
    unsafe {
        let _ = rustix::mm::munmap(ptr, len);
    }
    Ok(table)
}

impl Dispatch<ZwpLinuxDmabufFeedbackV1, ()> for FeedbackLog {
    fn event(
        log: &mut Self,
        _: &ZwpLinuxDmabufFeedbackV1,
        event: zwp_linux_dmabuf_feedback_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        use zwp_linux_dmabuf_feedback_v1::Event;
        match event {
            Event::FormatTable { fd, size } => match read_table(&fd, size) {
                Ok(table) => log.building.table = table,
                Err(err) => log.errors.push(err),
            },
            Event::MainDevice { device } => match dev_t(&device) {
                Some(dev) => log.building.main_device = dev,
                None => log
                    .errors
                    .push(format!("main_device of {} bytes", device.len())),
            },
            Event::TrancheTargetDevice { device } => match dev_t(&device) {
                Some(dev) => log.tranche.target_device = dev,
                None => log
                    .errors
                    .push(format!("tranche_target_device of {} bytes", device.len())),
            },
            Event::TrancheFlags { flags } => {
                log.tranche.flags = match flags {
                    WEnum::Value(f) => f.bits(),
                    WEnum::Unknown(raw) => raw,
                }
            }
            Event::TrancheFormats { indices } => {
                for pair in indices.chunks_exact(2) {
                    let index = usize::from(u16::from_ne_bytes([pair[0], pair[1]]));
                    match log.building.table.get(index) {
                        Some(format) => log.tranche.formats.push(*format),
                        None => log
                            .errors
                            .push(format!("format index {index} past the table")),
                    }
                }
            }
            Event::TrancheDone => {
                let tranche = std::mem::take(&mut log.tranche);
                log.building.tranches.push(tranche);
            }
            Event::Done => {
                // A batch replaces every tranche; the table and main device stay unless
                // sent again.
                let done = log.building.clone();
                log.building.tranches.clear();
                log.batches.push(done);
            }
            _ => {}
        }
    }
}
