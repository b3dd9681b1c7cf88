//! wp_presentation and wp_viewporter (smithay's implementations; feedback is sent
//! from [`crate::render`] after each frame).

use smithay::{delegate_presentation, delegate_viewporter};

use crate::state::State;

delegate_presentation!(State);
delegate_viewporter!(State);
