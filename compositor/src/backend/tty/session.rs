//! The libseat session: pause on VT switch away, modeset and resume on the way back.

use smithay::{
    backend::session::{libseat::LibSeatSessionNotifier, Event as SessionEvent},
    reexports::calloop::LoopHandle,
};

use super::TtyError;
use crate::{backend::Backend, state::State};

/// Put the session notifier on the loop.
pub fn register(
    handle: &LoopHandle<'static, State>,
    notifier: LibSeatSessionNotifier,
) -> Result<(), TtyError> {
    handle
        .insert_source(notifier, |event, _, state| match event {
            SessionEvent::PauseSession => {
                tracing::info!("session paused (VT switched away): presenting stops");
                if let Backend::Tty(tty) = &mut state.backend {
                    tty.pause();
                }
                state.tty_suspend_input(true);
            }
            SessionEvent::ActivateSession => {
                tracing::info!("session active again: modesetting every output");
                if let Backend::Tty(tty) = &mut state.backend {
                    tty.resume();
                }
                state.tty_suspend_input(false);
                state.tty_session_resumed();
                state.tty_kick_all();
            }
        })
        .map_err(|e| TtyError::Source(e.error.to_string()))?;
    Ok(())
}
