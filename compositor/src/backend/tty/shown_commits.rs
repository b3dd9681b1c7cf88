//! Which commit of each surface a KMS commit shows, so its page flip calls back only the
//! surfaces it shows.
//!
//! A frame callback tells a client that the frame it asked for is done and it may draw
//! the next one. At a flip, a surface that committed after the frame was rendered (while
//! the flip was pending, or, with late latching, after the cycle's deadline) has a
//! commit that flip does not show. Called back then, the client draws again and its next
//! commit replaces the unshown one before any cycle renders it: that commit is never
//! presented (`discarded`). So the render records every drawn surface's commit counter,
//! and at its flip a surface whose commit counter moved since gets its callback from a
//! later flip, the one that shows its commit (or, at the latest, from the one-second
//! throttle for surfaces on no output).

use std::collections::HashMap;

use smithay::{
    backend::renderer::{
        element::{Id, RenderElementStates},
        utils::{CommitCounter, RendererSurfaceStateUserData},
    },
    desktop::{Space, Window},
    reexports::wayland_server::{backend::ObjectId, protocol::wl_surface::WlSurface, Resource},
    wayland::compositor::SurfaceData,
};

/// Per surface drawn by a render (or shown on a plane), its commit counter then.
#[derive(Debug, Default)]
pub struct ShownCommits(HashMap<ObjectId, CommitCounter>);

impl ShownCommits {
    /// The commits of the surfaces of `space`'s windows that `states` (a render's element
    /// states, planes included) holds.
    pub fn record(space: &Space<Window>, states: &RenderElementStates) -> Self {
        let mut shown = HashMap::new();
        for window in space.elements() {
            window.with_surfaces(|surface, data| {
                if states
                    .element_render_state(Id::from_wayland_resource(surface))
                    .is_some()
                {
                    if let Some(commit) = current_commit(data) {
                        shown.insert(surface.id(), commit);
                    }
                }
            });
        }
        Self(shown)
    }

    /// Whether `surface` committed since the frame was rendered: its current commit is
    /// not the one the frame shows.
    pub fn committed_since(&self, surface: &WlSurface, data: &SurfaceData) -> bool {
        self.0
            .get(&surface.id())
            .is_some_and(|shown| current_commit(data).is_some_and(|now| now != *shown))
    }
}

/// The surface's commit counter as the renderer's state has it (`None`: no buffer state
/// yet, or its lock was poisoned by a panic elsewhere).
fn current_commit(data: &SurfaceData) -> Option<CommitCounter> {
    let state = data.data_map.get::<RendererSurfaceStateUserData>()?;
    let commit = state.lock().ok()?.current_commit();
    Some(commit)
}
