//! Running syncbridge as an unprivileged compositor would: without access to
//! `/dev/dma_heap/*` and `/dev/udmabuf`, the sources of the bridge's private dma-buf.
//!
//! The VM tests run as root, so the compositor is started in a private mount namespace
//! (`unshare --mount`) where an empty tmpfs covers `/dev/dma_heap` and `/dev/null` covers
//! `/dev/udmabuf` (opening it works, UDMABUF_CREATE fails with ENOTTY). Nothing outside
//! that namespace changes.

/// Put in front of `seatd-launch` ([`super::Compositor::start_wrapped`]).
pub const WRAPPER: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    "set -e; \
     if [ -d /dev/dma_heap ]; then mount -t tmpfs none /dev/dma_heap; fi; \
     if [ -e /dev/udmabuf ]; then mount --bind /dev/null /dev/udmabuf; fi; \
     exec \"$@\"",
    "sh",
];

/// What the bridge's probe logs when neither source was accessible.
pub const NO_ACCESS_LOG: &str = "no dma-heap/udmabuf access";
