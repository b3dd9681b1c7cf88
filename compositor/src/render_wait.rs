//! Waiting for a renderer's sync point off the event loop.
//!
//! A GLES render on a driver without `EGL_ANDROID_native_fence_sync` (Mesa's llvmpipe, for
//! one) ends with a sync point that cannot be exported as a sync_file: smithay created a
//! plain EGL fence after a flush, and the GPU may still sample the client buffers. Their
//! releases must wait for it. [`RenderWaits`] owns one thread that blocks in
//! `SyncPoint::wait()` for each such render, in submission order, and hands the render's
//! [`HeldReads`] back to the event loop through a calloop channel, where
//! `SyncBridge::end_held_reads` releases the buffers. The event loop never blocks on a
//! render, except when the thread is gone (then the wait happens inline, counted).
//!
//! Ownership: the thread owns each sync point (and the EGL fence in it) until it was
//! reached; the channel's fd (an eventfd) is made once at start-up.
//!
//! ```no_run
//! # fn demo(state: &mut syncbridge_compositor::state::State,
//! #     sync: smithay::backend::renderer::sync::SyncPoint,
//! #     sampled: &[syncbridge_protocols::BufferId]) {
//! // Reached: frame_rendered(None); exportable: frame_rendered(Some(fence)); otherwise the
//! // sampled buffers are held (hold_readers), and end_held_reads runs once it is reached.
//! state.report_render(sync, sampled);
//! # }
//! ```

use std::sync::mpsc;
use std::time::Duration;

use smithay::backend::renderer::sync::SyncPoint;
use smithay::reexports::calloop::{channel, LoopHandle};
use syncbridge_protocols::HeldReads;

use crate::state::State;

/// How often a sync point whose blocking wait keeps failing is polled instead.
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Errors setting up the wait thread.
#[derive(Debug, thiserror::Error)]
pub enum RenderWaitError {
    /// Creating the channel back to the event loop (an eventfd) failed.
    #[error("creating the render-wait channel: {0}")]
    Channel(#[source] std::io::Error),
    /// Inserting the channel into the event loop failed.
    #[error("inserting the render-wait channel into the event loop: {0}")]
    Insert(#[source] smithay::reexports::calloop::Error),
    /// Spawning the thread failed.
    #[error("spawning the render-wait thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// A render's sync point and the reads it holds.
type Job = (SyncPoint, HeldReads);

/// The render-wait thread and its way back to the event loop. See the [module docs](self).
#[derive(Debug)]
pub struct RenderWaits {
    jobs: Option<mpsc::Sender<Job>>,
}

/// Blocks until `sync` is reached. A wait that fails (EGL interrupted it) is retried by
/// polling: a render is never taken as finished before it is.
fn wait_reached(sync: &SyncPoint) {
    if sync.wait().is_ok() {
        return;
    }
    while !sync.is_reached() {
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Spawns `f` on a thread that has every signal blocked, so that signals the compositor
/// handles on its event loop (SIGTERM, SIGINT, SIGUSR1 through signalfd, which needs them
/// blocked in every thread) are never delivered to this thread instead.
fn spawn_with_signals_blocked(
    builder: std::thread::Builder,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    // SAFETY: zeroed sigset_t values are valid inputs for sigfillset/pthread_sigmask, which
    // only write to these locals; the mask change applies to this thread alone.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    // The new thread inherits the all-blocked mask.
    let spawned = builder.spawn(f).map(drop);
    // SAFETY: restores this thread's mask saved above; `old` is a valid sigset_t.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    spawned
}

impl RenderWaits {
    /// Starts the thread and registers its channel on `handle`'s loop.
    pub fn start(handle: &LoopHandle<'static, State>) -> Result<Self, RenderWaitError> {
        let (done_tx, done_rx) = channel::channel::<HeldReads>();
        handle
            .insert_source(done_rx, |event, _, state| {
                if let channel::Event::Msg(reads) = event {
                    state.stats.render_sync.deferred_done += 1;
                    state.sync_bridge.end_held_reads(reads);
                }
            })
            .map_err(|e| RenderWaitError::Insert(e.error))?;
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let builder = std::thread::Builder::new().name("render-sync-wait".into());
        spawn_with_signals_blocked(builder, move || {
            for (sync, reads) in job_rx {
                wait_reached(&sync);
                drop(sync);
                if done_tx.send(reads).is_err() {
                    // The event loop is gone: nothing left to release.
                    break;
                }
            }
        })
        .map_err(RenderWaitError::Spawn)?;
        Ok(Self { jobs: Some(jobs) })
    }

    /// No thread: every deferred sync point is waited for inline.
    pub fn inline() -> Self {
        Self { jobs: None }
    }
}

impl State {
    /// Hands a render's sync point to the fence bridge: reached (no fence), exported as a
    /// sync_file (the render fence), or held readers released once the wait thread saw it
    /// reached. Call it where `frame_rendered` would be called (see
    /// `syncbridge_protocols::sync_bridge::release`).
    pub fn report_render(&mut self, sync: SyncPoint, sampled: &[syncbridge_protocols::BufferId]) {
        use crate::handlers::sync::{render_sync, RenderSync};
        match render_sync(sync) {
            RenderSync::Reached => {
                self.stats.render_sync.reached += 1;
                self.sync_bridge.frame_rendered(None, sampled);
            }
            RenderSync::Fence(fence) => {
                self.stats.render_sync.exported += 1;
                self.sync_bridge.frame_rendered(Some(fence), sampled);
            }
            RenderSync::Pending(sync) => {
                self.stats.render_sync.deferred += 1;
                let held = self.sync_bridge.hold_readers(sampled);
                let job = match &self.render_waits.jobs {
                    Some(jobs) => jobs.send((sync, held)).err().map(|e| e.0),
                    None => Some((sync, held)),
                };
                if let Some((sync, held)) = job {
                    // No thread to wait on: wait here rather than release early.
                    tracing::warn!("render-wait thread gone; waiting for the render inline");
                    self.render_waits.jobs = None;
                    self.stats.render_sync.waited_inline += 1;
                    wait_reached(&sync);
                    self.stats.render_sync.deferred_done += 1;
                    self.sync_bridge.end_held_reads(held);
                }
            }
        }
    }
}
