//! Per-client budget: what the bridge holds on behalf of one client.
//!
//! Every fence or fd the bridge keeps because of a client (a queued explicit-sync-v1
//! acquire fence, an acquire wait's sync_file or eventfd, a reader fence waiting to become
//! that client's release fence) is counted on the client's [`HeldGauges`] as well as on the
//! bridge-wide ones, and every imported timeline is counted on the client's timeline
//! gauge for as long as anything (the protocol object, a pending point) keeps it. The
//! counts follow the objects' lifetimes (RAII guards), so a client that disconnects gives
//! everything back when its objects drop.
//!
//! A request that would make the bridge hold more than [`Limits`] allows for the client
//! (`max_fds_per_client`, `max_fences_per_client`) disconnects that client with
//! `wl_display.error(no_memory)`; other clients never see it. Reader fences are the
//! compositor's own (render and out-fences): they are counted, never refused, and a client
//! over its budget because of them is disconnected at its next request that asks the
//! bridge to hold something.
//!
//! ```
//! use syncbridge_protocols::gauge::HeldGauges;
//! use syncbridge_protocols::sync_bridge::budget::{check, BudgetExceeded};
//! use syncbridge_protocols::Limits;
//! let limits = Limits { max_fds_per_client: 2, ..Limits::default() };
//! let (all, client) = (HeldGauges::default(), HeldGauges::default());
//! let _a = all.hold_for(&client, true);
//! let _b = all.hold_for(&client, true);
//! assert!(matches!(check(&limits, &client, 1, 1), Err(BudgetExceeded::Fds { limit: 2, .. })));
//! ```

use std::collections::HashMap;
use std::ffi::CString;

use smithay::reexports::wayland_server::backend::protocol::{Interface, ProtocolError};
use smithay::reexports::wayland_server::backend::ClientId;
use smithay::reexports::wayland_server::{Client, DisplayHandle};

use super::config::Limits;
use crate::gauge::{Gauge, HeldGauges};

/// `wl_display.error` code `no_memory`, used when a client exceeds a bound.
pub(crate) const WL_DISPLAY_NO_MEMORY: u32 = 2;

/// What one client makes the bridge hold.
#[derive(Debug, Clone, Default)]
pub struct ClientHeld {
    /// Fences and fds held for the client.
    pub held: HeldGauges,
    /// Imported timelines still referenced (objects alive or held by pending state).
    pub timelines: Gauge,
    /// dma-buf fds kept open by the client's `wl_buffer`s ([`super::buffer_fds`]).
    pub buffer_fds: Gauge,
}

impl ClientHeld {
    fn is_idle(&self) -> bool {
        self.held.fds.current() == 0
            && self.held.fences.current() == 0
            && self.timelines.current() == 0
            && self.buffer_fds.current() == 0
    }
}

/// A client asked for more than its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetExceeded {
    /// Too many fds held for the client.
    #[error("the compositor would hold more than {limit} fds for this client ({held} held)")]
    Fds {
        /// The limit.
        limit: usize,
        /// Held before the request.
        held: u64,
    },
    /// Too many fences held for the client.
    #[error("the compositor would hold more than {limit} fences for this client ({held} held)")]
    Fences {
        /// The limit.
        limit: usize,
        /// Held before the request.
        held: u64,
    },
}

/// Whether holding `new_fds` more fds and `new_fences` more fences for a client that holds
/// `held` stays within `limits`.
pub fn check(
    limits: &Limits,
    held: &HeldGauges,
    new_fds: u64,
    new_fences: u64,
) -> Result<(), BudgetExceeded> {
    let fds = held.fds.current();
    if fds.saturating_add(new_fds) > limits.max_fds_per_client as u64 {
        return Err(BudgetExceeded::Fds {
            limit: limits.max_fds_per_client,
            held: fds,
        });
    }
    let fences = held.fences.current();
    if fences.saturating_add(new_fences) > limits.max_fences_per_client as u64 {
        return Err(BudgetExceeded::Fences {
            limit: limits.max_fences_per_client,
            held: fences,
        });
    }
    Ok(())
}

/// The budgets of all clients that hold something or are alive.
#[derive(Debug, Default)]
pub(crate) struct ClientBudgets {
    map: HashMap<ClientId, ClientHeld>,
    prune_at: usize,
}

impl ClientBudgets {
    /// The gauges of `client` (created on first use). Entries of dead clients that hold
    /// nothing any more are dropped now and then.
    pub fn get(&mut self, dh: &DisplayHandle, client: &ClientId) -> ClientHeld {
        if self.map.len() >= self.prune_at {
            let handle = dh.backend_handle();
            self.map
                .retain(|id, held| !held.is_idle() || handle.get_client_data(id.clone()).is_ok());
            self.prune_at = self.map.len() * 2 + 16;
        }
        self.map.entry(client.clone()).or_default().clone()
    }

    /// The gauges of `client`, if it has any.
    pub fn find(&self, client: &ClientId) -> Option<&ClientHeld> {
        self.map.get(client)
    }
}

/// `wl_display` as the backend names it: the object the `no_memory` error goes on.
static WL_DISPLAY_INTERFACE: Interface = Interface {
    name: "wl_display",
    version: 1,
    requests: &[],
    events: &[],
    c_ptr: None,
};

/// Disconnects `client` with `wl_display.error(no_memory, message)`. `Client::kill` alone
/// closes the connection without sending the error (wayland-backend's Rust server), so the
/// client would not learn why; posting the error on its `wl_display` (object 1) sends it,
/// then kills the client.
pub(crate) fn disconnect_over_limit(dh: &DisplayHandle, client: &Client, message: String) {
    let handle = dh.backend_handle();
    match handle.object_for_protocol_id(client.id(), &WL_DISPLAY_INTERFACE, 1) {
        Ok(display) => handle.post_error(
            display,
            WL_DISPLAY_NO_MEMORY,
            CString::new(message).unwrap_or_default(),
        ),
        Err(_) => client.kill(
            dh,
            ProtocolError {
                code: WL_DISPLAY_NO_MEMORY,
                object_id: 1,
                object_interface: "wl_display".into(),
                message,
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_fds_and_fences_separately() {
        let limits = Limits {
            max_fds_per_client: 2,
            max_fences_per_client: 3,
            ..Limits::default()
        };
        let all = HeldGauges::default();
        let client = HeldGauges::default();
        assert_eq!(check(&limits, &client, 2, 2), Ok(()));
        let _a = all.hold_for(&client, true);
        let _b = all.hold_for(&client, false);
        assert_eq!(check(&limits, &client, 1, 1), Ok(()));
        assert_eq!(
            check(&limits, &client, 2, 0),
            Err(BudgetExceeded::Fds { limit: 2, held: 1 })
        );
        let _c = all.hold_for(&client, true);
        assert_eq!(
            check(&limits, &client, 0, 1),
            Err(BudgetExceeded::Fences { limit: 3, held: 3 })
        );
        // The bridge-wide gauges count everything; the budget only this client's.
        let _other = all.hold(true);
        assert_eq!(all.fds.current(), 3);
        assert_eq!(client.fds.current(), 2);
    }
}
