//! calloop event sources that fire when a fence signals: [`SyncFileSource`] for a
//! [`SyncFile`], [`TimelinePointSource`] for a timeline point, and [`DmabufReadySource`] for
//! the `poll()` fallback on dma-buf planes.
//!
//! **One-shot semantics.** Each source fires its callback exactly once, when the fence has
//! signalled (or the point materialized), and then removes itself from the event loop
//! (`PostAction::Remove`), closing its fd. Nothing polls in a loop and no thread is spawned:
//! the fd sits in the loop's epoll set until the kernel wakes it. If the fence never signals
//! the source simply never fires; drop it with `LoopHandle::remove(token)` (for example when
//! the surface or client goes away), which closes the fd and leaves nothing behind. Calling
//! `remove` with the token of a source that already fired is harmless.
//!
//! ```no_run
//! use calloop::EventLoop;
//! use syncbridge_bridge::dmabuf::{export_sync_file, Access};
//! use syncbridge_bridge::source::SyncFileSource;
//! # fn plane() -> std::os::fd::BorrowedFd<'static> { unimplemented!() }
//!
//! let mut event_loop: EventLoop<'_, bool> = EventLoop::try_new()?;
//! let acquire = export_sync_file(plane(), Access::Read)?;
//! let _token = event_loop.handle().insert_source(SyncFileSource::new(acquire), |fence, _, ready| {
//!     // `fence` is the SyncFile, handed back; drop it or keep it.
//!     drop(fence);
//!     *ready = true; // e.g. clear the surface's commit blocker
//! })?;
//! let mut ready = false;
//! while !ready {
//!     event_loop.dispatch(None, &mut ready)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::os::fd::{AsFd, OwnedFd};

use calloop::generic::Generic;
use calloop::{EventSource, Interest, Mode, Poll, PostAction, Readiness, Token, TokenFactory};

use crate::sync_file::SyncFile;
use crate::syncobj::{SyncobjError, Timeline, WaitMode};

/// Outcome of one `Generic::process_events` call on our behalf.
enum Seen {
    /// Not our token: nothing happened.
    NotOurs,
    /// Our token, but not readable (spurious): re-arm.
    Spurious,
    /// Readable (or error/hang-up, which also ends the wait).
    Ready,
}

fn check<F: AsFd>(
    inner: &mut Generic<F>,
    readiness: Readiness,
    token: Token,
) -> std::io::Result<Seen> {
    let mut seen = Seen::NotOurs;
    inner.process_events(readiness, token, |r, _| {
        seen = if r.readable || r.error {
            Seen::Ready
        } else {
            Seen::Spurious
        };
        Ok(PostAction::Continue)
    })?;
    Ok(seen)
}

/// What [`OneShotFd::process`] saw.
enum Fired<F> {
    /// Not fired (yet, or any more): return this to calloop.
    No(PostAction),
    /// The fd became ready; it has been taken out of the poller and handed back.
    Yes(F),
}

/// The shared core of the one-shot sources: an fd watched until it first polls readable,
/// then taken out of the poller and handed back once.
#[derive(Debug)]
struct OneShotFd<F: AsFd> {
    inner: Option<Generic<F>>,
}

impl<F: AsFd> OneShotFd<F> {
    fn new(fd: F) -> Self {
        OneShotFd {
            inner: Some(Generic::new(fd, Interest::READ, Mode::OneShot)),
        }
    }

    fn get(&self) -> Option<&F> {
        self.inner.as_ref().map(|g| g.get_ref())
    }

    fn process(&mut self, readiness: Readiness, token: Token) -> std::io::Result<Fired<F>> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(Fired::No(PostAction::Remove));
        };
        Ok(match check(inner, readiness, token)? {
            Seen::NotOurs => Fired::No(PostAction::Continue),
            Seen::Spurious => Fired::No(PostAction::Reregister),
            // `unwrap` here is calloop's `Generic::unwrap`: it removes the fd from the
            // poller and returns it; it does not panic.
            Seen::Ready => match self.inner.take() {
                Some(generic) => Fired::Yes(generic.unwrap()),
                None => Fired::No(PostAction::Remove),
            },
        })
    }

    fn register(&mut self, poll: &mut Poll, tokens: &mut TokenFactory) -> calloop::Result<()> {
        match self.inner.as_mut() {
            Some(g) => g.register(poll, tokens),
            None => Ok(()),
        }
    }

    fn reregister(&mut self, poll: &mut Poll, tokens: &mut TokenFactory) -> calloop::Result<()> {
        match self.inner.as_mut() {
            Some(g) => g.reregister(poll, tokens),
            None => Ok(()),
        }
    }

    fn unregister(&mut self, poll: &mut Poll) -> calloop::Result<()> {
        match self.inner.as_mut() {
            Some(g) => g.unregister(poll),
            None => Ok(()),
        }
    }
}

/// Fires once when a [`SyncFile`] signals, handing the `SyncFile` to the callback, then
/// removes itself. Event: the `SyncFile`; metadata: `()`; the callback returns `()`.
#[must_use = "an event source does nothing until inserted into an event loop"]
#[derive(Debug)]
pub struct SyncFileSource {
    fence: OneShotFd<SyncFile>,
}

impl SyncFileSource {
    /// Watches `fence` (taken; handed back to the callback when it signals).
    pub fn new(fence: SyncFile) -> Self {
        SyncFileSource {
            fence: OneShotFd::new(fence),
        }
    }

    /// The watched fence, until the source fired.
    pub fn fence(&self) -> Option<&SyncFile> {
        self.fence.get()
    }
}

impl EventSource for SyncFileSource {
    type Event = SyncFile;
    type Metadata = ();
    type Ret = ();
    type Error = std::io::Error;

    fn process_events<C>(
        &mut self,
        readiness: Readiness,
        token: Token,
        mut callback: C,
    ) -> Result<PostAction, Self::Error>
    where
        C: FnMut(Self::Event, &mut Self::Metadata) -> Self::Ret,
    {
        match self.fence.process(readiness, token)? {
            Fired::No(action) => Ok(action),
            Fired::Yes(fence) => {
                callback(fence, &mut ());
                Ok(PostAction::Remove)
            }
        }
    }

    fn register(&mut self, poll: &mut Poll, tokens: &mut TokenFactory) -> calloop::Result<()> {
        self.fence.register(poll, tokens)
    }

    fn reregister(&mut self, poll: &mut Poll, tokens: &mut TokenFactory) -> calloop::Result<()> {
        self.fence.reregister(poll, tokens)
    }

    fn unregister(&mut self, poll: &mut Poll) -> calloop::Result<()> {
        self.fence.unregister(poll)
    }
}

/// What a [`TimelinePointSource`] reports when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelinePointEvent {
    /// The point it waited for.
    pub point: u64,
    /// Whether it waited for signalled or for materialized.
    pub mode: WaitMode,
}

/// Fires once when a timeline point signals ([`WaitMode::Signaled`]) or materializes
/// ([`WaitMode::Available`]), through a `SYNCOBJ_EVENTFD` eventfd, then removes itself.
#[must_use = "an event source does nothing until inserted into an event loop"]
#[derive(Debug)]
pub struct TimelinePointSource {
    eventfd: OneShotFd<OwnedFd>,
    event: TimelinePointEvent,
}

impl TimelinePointSource {
    /// Registers an eventfd on `timeline`'s `point` (borrowed; the source does not keep the
    /// `Timeline`, and keeps working if it is dropped: the kernel's syncobj lives on).
    /// Needs `SYNCOBJ_EVENTFD` support ([`SyncobjError::EventfdUnsupported`]).
    pub fn new(timeline: &Timeline, point: u64, mode: WaitMode) -> Result<Self, SyncobjError> {
        let efd = timeline.eventfd(point, mode)?;
        Ok(Self::from_eventfd(efd, point, mode))
    }

    /// Wraps an eventfd from [`Timeline::eventfd`] (taken).
    pub fn from_eventfd(eventfd: OwnedFd, point: u64, mode: WaitMode) -> Self {
        TimelinePointSource {
            eventfd: OneShotFd::new(eventfd),
            event: TimelinePointEvent { point, mode },
        }
    }
}

impl EventSource for TimelinePointSource {
    type Event = TimelinePointEvent;
    type Metadata = ();
    type Ret = ();
    type Error = std::io::Error;

    fn process_events<C>(
        &mut self,
        readiness: Readiness,
        token: Token,
        mut callback: C,
    ) -> Result<PostAction, Self::Error>
    where
        C: FnMut(Self::Event, &mut Self::Metadata) -> Self::Ret,
    {
        match self.eventfd.process(readiness, token)? {
            Fired::No(action) => Ok(action),
            Fired::Yes(eventfd) => {
                // Closing the eventfd is all the cleanup needed; its counter need not be read.
                drop(eventfd);
                callback(self.event, &mut ());
                Ok(PostAction::Remove)
            }
        }
    }

    fn register(&mut self, poll: &mut Poll, tokens: &mut TokenFactory) -> calloop::Result<()> {
        self.eventfd.register(poll, tokens)
    }

    fn reregister(&mut self, poll: &mut Poll, tokens: &mut TokenFactory) -> calloop::Result<()> {
        self.eventfd.reregister(poll, tokens)
    }

    fn unregister(&mut self, poll: &mut Poll) -> calloop::Result<()> {
        self.eventfd.unregister(poll)
    }
}

/// The `poll()` fallback for kernels without dma-buf sync_file export: fires once when every
/// plane of a dma-buf polls readable (its write fences signalled), then removes itself.
///
/// It watches one plane at a time (the first one not yet readable) and moves on when that
/// one wakes, so an N-plane buffer costs at most N wake-ups. If every plane is already
/// readable it fires at the next dispatch. Takes owned fds: pass dups of the planes
/// (`BorrowedFd::try_clone_to_owned`); they are closed when it fires or is removed.
/// Event: `()`.
#[must_use = "an event source does nothing until inserted into an event loop"]
#[derive(Debug)]
pub struct DmabufReadySource {
    planes: Vec<OwnedFd>,
    current: Option<Generic<OwnedFd>>,
    /// `current` was swapped for the next plane and must be registered, not modified.
    fresh: bool,
    /// Our own token for the "already ready" synthetic event.
    own_token: Option<Token>,
    fired: bool,
}

impl DmabufReadySource {
    /// Watches `planes` (taken).
    pub fn new(planes: Vec<OwnedFd>) -> Self {
        let mut s = DmabufReadySource {
            planes,
            current: None,
            fresh: true,
            own_token: None,
            fired: false,
        };
        s.arm_next();
        s
    }

    /// Drops planes that are readable now; puts a Generic on the first one that is not.
    fn arm_next(&mut self) {
        while !self.planes.is_empty() {
            let fd = self.planes.remove(0);
            let mut pfd = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let ready = matches!(rustix::event::poll(&mut pfd, Some(&zero)), Ok(n) if n > 0);
            if !ready {
                self.current = Some(Generic::new(fd, Interest::READ, Mode::OneShot));
                self.fresh = true;
                return;
            }
        }
        self.current = None;
    }
}

impl EventSource for DmabufReadySource {
    type Event = ();
    type Metadata = ();
    type Ret = ();
    type Error = std::io::Error;

    const NEEDS_EXTRA_LIFECYCLE_EVENTS: bool = true;

    fn before_sleep(&mut self) -> calloop::Result<Option<(Readiness, Token)>> {
        // Nothing left to wait for (all planes were readable): wake up at once.
        if self.current.is_none() && !self.fired {
            if let Some(t) = self.own_token {
                return Ok(Some((
                    Readiness {
                        readable: true,
                        writable: false,
                        error: false,
                    },
                    t,
                )));
            }
        }
        Ok(None)
    }

    fn process_events<C>(
        &mut self,
        readiness: Readiness,
        token: Token,
        mut callback: C,
    ) -> Result<PostAction, Self::Error>
    where
        C: FnMut(Self::Event, &mut Self::Metadata) -> Self::Ret,
    {
        if self.fired {
            return Ok(PostAction::Remove);
        }
        if Some(token) != self.own_token {
            let Some(inner) = self.current.as_mut() else {
                return Ok(PostAction::Continue);
            };
            match check(inner, readiness, token)? {
                Seen::NotOurs => return Ok(PostAction::Continue),
                Seen::Spurious => return Ok(PostAction::Reregister),
                Seen::Ready => {
                    if let Some(g) = self.current.take() {
                        drop(g.unwrap());
                    }
                    self.arm_next();
                    if self.current.is_some() {
                        // Another plane is still busy: `reregister` registers it.
                        return Ok(PostAction::Reregister);
                    }
                }
            }
        } else if self.current.is_some() {
            return Ok(PostAction::Continue);
        }
        self.fired = true;
        callback((), &mut ());
        Ok(PostAction::Remove)
    }

    fn register(
        &mut self,
        poll: &mut Poll,
        token_factory: &mut TokenFactory,
    ) -> calloop::Result<()> {
        self.own_token = Some(token_factory.token());
        self.fresh = false;
        match self.current.as_mut() {
            Some(g) => g.register(poll, token_factory),
            None => Ok(()),
        }
    }

    fn reregister(
        &mut self,
        poll: &mut Poll,
        token_factory: &mut TokenFactory,
    ) -> calloop::Result<()> {
        self.own_token = Some(token_factory.token());
        let fresh = std::mem::replace(&mut self.fresh, false);
        match self.current.as_mut() {
            Some(g) if fresh => g.register(poll, token_factory),
            Some(g) => g.reregister(poll, token_factory),
            None => Ok(()),
        }
    }

    fn unregister(&mut self, poll: &mut Poll) -> calloop::Result<()> {
        self.own_token = None;
        match self.current.as_mut() {
            Some(g) if !self.fresh => g.unregister(poll),
            _ => Ok(()),
        }
    }
}
