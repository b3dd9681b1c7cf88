//! Per-client budget for the dma-buf fds that a client's `wl_buffer`s keep open.
//!
//! Every linux-dmabuf `wl_buffer` keeps its planes' fds open in the compositor (smithay's
//! `Dmabuf` owns them) for as long as the buffer exists. Nothing in the protocol bounds how
//! many buffers a client creates, so without a budget one client can fill the compositor's
//! fd table with buffers it never attaches. The compositor asks for a charge before it
//! accepts an import ([`SyncBridge::charge_dmabuf`]), attaches it to the new `wl_buffer`
//! ([`SyncBridge::keep_buffer_charge`]) and gives it back when smithay reports the buffer
//! destroyed ([`SyncBridge::buffer_destroyed`], which also runs for every buffer of a
//! client that disconnects). An import over `Limits::max_buffer_fds_per_client` is refused
//! the way linux-dmabuf refuses any import: `failed` for `create`, the `invalid_wl_buffer`
//! protocol error for `create_immed`.
//!
//! ```
//! use syncbridge_protocols::gauge::Gauge;
//! use syncbridge_protocols::sync_bridge::buffer_fds::{check_buffer_fds, BufferFdsExceeded};
//! let client = Gauge::new();
//! let _held = client.hold(3);
//! assert_eq!(check_buffer_fds(4, &client, 1), Ok(()));
//! assert_eq!(
//!     check_buffer_fds(4, &client, 2),
//!     Err(BufferFdsExceeded { limit: 4, held: 3, asked: 2 })
//! );
//! ```

use std::collections::HashMap;

use smithay::reexports::wayland_server::{
    backend::ObjectId, protocol::wl_buffer::WlBuffer, Client, DisplayHandle, Resource,
};

use super::SyncBridge;
use crate::gauge::{Gauge, GaugeGuard};

/// An import would keep more dma-buf fds open for a client than its budget allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the client's wl_buffers would keep more than {limit} dma-buf fds open ({held} open, {asked} more asked)"
)]
pub struct BufferFdsExceeded {
    /// `Limits::max_buffer_fds_per_client`.
    pub limit: usize,
    /// fds the client's buffers keep open now.
    pub held: u64,
    /// fds the refused import would add.
    pub asked: u64,
}

/// Whether `asked` more fds keep the client (holding `client.current()`) within `limit`.
pub fn check_buffer_fds(limit: usize, client: &Gauge, asked: u64) -> Result<(), BufferFdsExceeded> {
    let held = client.current();
    if held.saturating_add(asked) > limit as u64 {
        return Err(BufferFdsExceeded { limit, held, asked });
    }
    Ok(())
}

/// The fds of one imported dma-buf, counted on its client's budget and the compositor-wide
/// gauge while alive. Give it to [`SyncBridge::keep_buffer_charge`] once the `wl_buffer`
/// exists; dropping it uncounts them.
#[must_use = "the buffer's fds stop being counted when the charge is dropped"]
#[derive(Debug)]
pub struct BufferCharge {
    _client: GaugeGuard,
    _all: GaugeGuard,
}

/// The charges of live `wl_buffer`s, by protocol object.
#[derive(Debug, Default)]
pub(crate) struct BufferCharges {
    by_buffer: HashMap<ObjectId, BufferCharge>,
    /// dma-buf fds kept open by all clients' buffers.
    pub(crate) all: Gauge,
    /// Imports refused for the budget.
    pub(crate) refused: u64,
}

impl<D: 'static> SyncBridge<D> {
    /// Charges `fds` dma-buf fds (the import's plane count) to `client`, before the
    /// compositor accepts the import. On `Err` refuse the import (`ImportNotifier::failed`).
    pub fn charge_dmabuf(
        &mut self,
        dh: &DisplayHandle,
        client: &Client,
        fds: usize,
    ) -> Result<BufferCharge, BufferFdsExceeded> {
        let held = self.budgets.get(dh, &client.id());
        let asked = fds as u64;
        if let Err(err) = check_buffer_fds(
            self.config.limits.max_buffer_fds_per_client,
            &held.buffer_fds,
            asked,
        ) {
            self.buffer_charges.refused += 1;
            tracing::warn!(%err, "dma-buf import refused: client over its buffer fd budget");
            return Err(err);
        }
        Ok(BufferCharge {
            _client: held.buffer_fds.hold(asked),
            _all: self.buffer_charges.all.hold(asked),
        })
    }

    /// Keeps `charge` until `buffer` is destroyed ([`Self::buffer_destroyed`]).
    pub fn keep_buffer_charge(&mut self, buffer: &WlBuffer, charge: BufferCharge) {
        self.buffer_charges.by_buffer.insert(buffer.id(), charge);
    }

    /// Call from smithay's `BufferHandler::buffer_destroyed`: gives the buffer's charge
    /// back (no-op for buffers without one, such as wl_shm).
    pub fn buffer_destroyed(&mut self, buffer: &WlBuffer) {
        self.buffer_charges.by_buffer.remove(&buffer.id());
    }
}
