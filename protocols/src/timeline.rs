//! A buffer's life, as `tracing` events: commit, acquire wait and signal, commit applied,
//! sampled by a render, put on and taken off a plane, released; and, from the compositor,
//! its atomic commits and page flips. A recorder (the compositor's `--timeline`) subscribes
//! to [`TARGET`] and draws them on one time axis per buffer.
//!
//! Every event is at `TRACE` level under [`TARGET`]; its fields are computed only when a
//! subscriber enables that target, so an unrecorded timeline costs one callsite check per
//! event. The time of an event is when it is emitted (CLOCK_MONOTONIC, read by the
//! recorder), unless it carries a kernel timestamp of its own (`signalled_ns`, `flip_ns`).
//!
//! Fields: `event` (one of the names below), `surface` (a key that is the same for every
//! event of one surface: see [`surface_key`]), `buffer` ([`BufferId::get`]), `wait` (the
//! id of an acquire wait), `how` (how a release went out), `output` (a CRTC or output
//! index), and the kernel times.

use std::hash::{Hash, Hasher};

use smithay::reexports::wayland_server::{protocol::wl_surface::WlSurface, Resource};

use crate::BufferId;

/// The `tracing` target of every timeline event.
pub const TARGET: &str = "syncbridge::timeline";

/// Whether a subscriber records the timeline (so callers can skip work that only feeds it).
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::TRACE)
}

/// A number that is the same for every event of `surface` and differs between the
/// surfaces alive at one time (a hash of its object id, which includes its client).
pub fn surface_key(surface: &WlSurface) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    surface.id().hash(&mut h);
    h.finish()
}

/// `surface` committed a new buffer (before any acquire wait).
pub fn commit(surface: &WlSurface) {
    tracing::trace!(target: TARGET, event = "commit", surface = surface_key(surface));
}

/// The commit just reported waits for its acquire fence; `wait` names the wait.
pub fn acquire_wait(surface: &WlSurface, wait: u64) {
    tracing::trace!(target: TARGET, event = "acquire_wait", surface = surface_key(surface), wait);
}

/// The acquire fence of wait `wait` signalled, at `signalled_ns` when the kernel says
/// (0: unknown; the event's own time is the wake-up).
pub fn acquire_signalled(surface_key: u64, wait: u64, signalled_ns: u64) {
    tracing::trace!(
        target: TARGET,
        event = "acquire_signalled",
        surface = surface_key,
        wait,
        signalled_ns
    );
}

/// The surface's oldest unapplied commit with a buffer was applied; `buffer` is the
/// attachment's id from now on.
pub fn applied(surface: &WlSurface, buffer: BufferId) {
    tracing::trace!(
        target: TARGET,
        event = "applied",
        surface = surface_key(surface),
        buffer = buffer.get()
    );
}

/// A render sampled `buffer` (`fenced`: its render fence is in the release).
pub fn sampled(buffer: BufferId, fenced: bool) {
    tracing::trace!(target: TARGET, event = "sampled", buffer = buffer.get(), fenced);
}

/// An atomic commit put `buffer` on a plane.
pub fn on_plane(buffer: BufferId) {
    tracing::trace!(target: TARGET, event = "on_plane", buffer = buffer.get());
}

/// An atomic commit took `buffer` off its plane (`fenced`: with its out-fence; otherwise
/// at the page flip).
pub fn off_plane(buffer: BufferId, fenced: bool) {
    tracing::trace!(target: TARGET, event = "off_plane", buffer = buffer.get(), fenced);
}

/// `buffer`'s release went out, `how`: `wl_buffer.release` with the fences imported into
/// the dma-buf, when the fences signalled, a release point, `fenced_release`, ...
pub fn released(buffer: BufferId, how: &'static str) {
    tracing::trace!(target: TARGET, event = "released", buffer = buffer.get(), how);
}

/// The compositor made an atomic commit on `output` (`out_fence`: with an out-fence).
pub fn atomic_commit(output: u64, out_fence: bool) {
    tracing::trace!(target: TARGET, event = "atomic_commit", output, out_fence);
}

/// A page flip of `output` completed at `flip_ns` (the kernel's vblank timestamp).
pub fn page_flip(output: u64, flip_ns: u64) {
    tracing::trace!(target: TARGET, event = "page_flip", output, flip_ns);
}
