//! The syncbridge reference compositor.
