//! wp_fifo_v1 and wp_commit_timing_v1 (smithay's managed implementations). Their
//! barriers are released here, once per refresh cycle of the output a surface is on.

use std::collections::HashMap;

use smithay::{
    delegate_commit_timing, delegate_fifo,
    desktop::utils::surface_primary_scanout_output,
    output::Output,
    reexports::wayland_server::{backend::ClientId, Client, Resource},
    utils::{Monotonic, Time},
    wayland::{
        commit_timing::CommitTimerBarrierStateUserData, compositor::CompositorHandler,
        fifo::FifoBarrierCachedState,
    },
};

use crate::{frame_clock::FrameTick, state::State};

delegate_fifo!(State);
delegate_commit_timing!(State);

/// After a refresh cycle of `output`: clear the fifo barriers of surfaces shown on it
/// (and of surfaces shown nowhere, on the first output, so they cannot wait forever),
/// signal commit timers due before the next cycle, and let blocked commits through.
pub fn release_frame_barriers(
    state: &mut State,
    output: &Output,
    is_first_output: bool,
    tick: FrameTick,
) {
    let next: Time<Monotonic> = tick.next.into();
    let mut clients: HashMap<ClientId, Client> = HashMap::new();

    for window in state.space.elements() {
        window.with_surfaces(|surface, states| {
            let primary = surface_primary_scanout_output(surface, states);
            let ours = match primary {
                Some(primary) => &primary == output,
                None => is_first_output,
            };
            if !ours {
                return;
            }
            let mut signalled = false;
            let barrier = states
                .cached_state
                .get::<FifoBarrierCachedState>()
                .current()
                .barrier
                .take();
            if let Some(barrier) = barrier {
                barrier.signal();
                signalled = true;
            }
            if let Some(timers) = states.data_map.get::<CommitTimerBarrierStateUserData>() {
                if let Ok(mut timers) = timers.lock() {
                    signalled |= timers.signal_until(next);
                }
            }
            if signalled {
                if let Some(client) = surface.client() {
                    clients.insert(client.id(), client);
                }
            }
        });
    }

    let dh = state.display_handle.clone();
    for client in clients.into_values() {
        state
            .client_compositor_state(&client)
            .blocker_cleared(state, &dh);
    }
}
