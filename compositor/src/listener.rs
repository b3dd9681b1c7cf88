//! The listening Wayland socket, as an event source that survives `accept()` failures.
//!
//! smithay's `ListeningSocketSource` returns `accept()`'s error from its source, which ends
//! `EventLoop::run` and with it the compositor: one client that drives the process to its
//! fd limit (EMFILE) made the next client's connection take the compositor down. This
//! source reports such a failure as [`ListenerEvent::Paused`] and disables itself (a
//! level-triggered socket with a connection waiting would fire again at once); the
//! server re-enables it after a short pause. Connections that arrive meanwhile wait in the
//! socket's backlog and are accepted once fds are free again.
//!
//! ```no_run
//! use syncbridge_compositor::listener::{ListenerEvent, ResilientListener};
//! let listener = ResilientListener::bind(None)?;
//! println!("listening on {:?}", listener.socket_name());
//! # Ok::<(), syncbridge_compositor::listener::ListenerError>(())
//! ```

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixStream;

use smithay::reexports::calloop::{
    generic::Generic, EventSource, Interest, Mode, Poll, PostAction, Readiness, Token, TokenFactory,
};
use smithay::reexports::wayland_server::{BindError, ListeningSocket};

/// Errors binding the socket.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// `bind`/`listen` failed, or no free `wayland-N` name was found.
    #[error("binding the Wayland socket: {0}")]
    Bind(#[from] BindError),
}

/// What the listening socket reports.
#[derive(Debug)]
pub enum ListenerEvent {
    /// A client connected.
    Client(UnixStream),
    /// `accept()` failed (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...): the source disabled
    /// itself; re-enable it (`LoopHandle::enable`) after a pause.
    Paused(io::Error),
}

/// A listening Wayland socket that never ends the event loop.
#[derive(Debug)]
pub struct ResilientListener {
    socket: Generic<ListeningSocket>,
    name: Option<std::ffi::OsString>,
}

impl ResilientListener {
    /// Binds `$XDG_RUNTIME_DIR/<name>`, or the first free `wayland-1` .. `wayland-32`.
    pub fn bind(name: Option<&str>) -> Result<Self, ListenerError> {
        let socket = match name {
            Some(name) => ListeningSocket::bind(name)?,
            None => ListeningSocket::bind_auto("wayland", 1..33)?,
        };
        let name = socket.socket_name().map(OsStr::to_os_string);
        Ok(Self {
            socket: Generic::new(socket, Interest::READ, Mode::Level),
            name,
        })
    }

    /// The socket's name (for `WAYLAND_DISPLAY`).
    pub fn socket_name(&self) -> Option<&OsStr> {
        self.name.as_deref()
    }
}

/// Whether an `accept()` error concerns only the one connection (retry at once) rather
/// than the process's resources (pause).
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    )
}

impl EventSource for ResilientListener {
    type Event = ListenerEvent;
    type Metadata = ();
    type Ret = ();
    type Error = io::Error;

    fn process_events<F>(
        &mut self,
        readiness: Readiness,
        token: Token,
        mut callback: F,
    ) -> io::Result<PostAction>
    where
        F: FnMut(Self::Event, &mut Self::Metadata) -> Self::Ret,
    {
        self.socket
            .process_events(readiness, token, |_, socket| loop {
                match socket.accept() {
                    Ok(Some(stream)) => callback(ListenerEvent::Client(stream), &mut ()),
                    Ok(None) => return Ok(PostAction::Continue),
                    Err(err) if is_per_connection(&err) => {
                        tracing::debug!(%err, "accept() failed for one connection");
                    }
                    Err(err) => {
                        callback(ListenerEvent::Paused(err), &mut ());
                        return Ok(PostAction::Disable);
                    }
                }
            })
    }

    fn register(
        &mut self,
        poll: &mut Poll,
        token_factory: &mut TokenFactory,
    ) -> smithay::reexports::calloop::Result<()> {
        self.socket.register(poll, token_factory)
    }

    fn reregister(
        &mut self,
        poll: &mut Poll,
        token_factory: &mut TokenFactory,
    ) -> smithay::reexports::calloop::Result<()> {
        self.socket.reregister(poll, token_factory)
    }

    fn unregister(&mut self, poll: &mut Poll) -> smithay::reexports::calloop::Result<()> {
        self.socket.unregister(poll)
    }
}
