//! The scene of the bench's frames scenarios, shared by `bench-client` (which names its
//! windows) and `bench-driver` (which has a peer compositor place them as syncbridge does).

use syncbridge_compositor::handlers::xdg_shell::cascade_slot;

/// The app_id of the `index`-th window `bench-client` maps (one per client connection,
/// in connection order).
pub fn app_id(index: usize) -> String {
    format!("bench-client-{index}")
}

/// Where syncbridge puts the `index`-th window mapped on an output `output_width` wide,
/// from the output's top-left corner: its cascade (`x`, `y`).
pub fn window_position(index: usize, output_width: i32) -> (i32, i32) {
    let p = cascade_slot(index, output_width);
    (p.x, p.y)
}
