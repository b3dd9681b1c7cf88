#!/bin/sh
# The `cargo xtask run` demo on the test VM's virgl card (a virtio-gpu with a real GL
# driver stack, rendered by the host's Mesa), also run by the VM test `vm_demo` so it
# cannot rot.
#
#   demo.sh OUTDIR COMMITS
#
# syncbridge runs on the virgl card under seatd-launch and composites with GLES. Its
# client command (assets/demo-clients.sh) has two phases of COMMITS client commits each
# (counted by the compositor: GL clients start slowly in the emulated VM, so the phases
# are bounded by work done, not by seconds):
#  1. direct scanout: weston-simple-egl fullscreen and opaque, so its GL buffers go on
#     the primary plane as they are; each is released at the commit that replaces it,
#     with that commit's out-fence, before the page flip.
#  2. composition: weston-simple-dmabuf-egl with explicit sync
#     (zwp_linux_explicit_synchronization_v1: the render fence goes back in
#     fenced_release), and weston-simple-egl in a window on top (implicit sync: the
#     render fence is imported into its dma-buf at release).
# The command then exits, which ends the compositor with the phase-2 windows on screen.
# OUTDIR gets screen.png (what the plane showed), stats.json, timeline.svg (six
# consecutive buffers of the scanned-out client, on one time axis with the page flips;
# the records in timeline.json) and every process's log.
# $SYNCBRIDGE_BIN names the compositor; drm-cards is found next to it.
set -u
OUT=$1
COMMITS=${2:-300}
BIN=${SYNCBRIDGE_BIN:-target/debug/syncbridge}
TOOLS=$(dirname "$BIN")
mkdir -p "$OUT"
rm -f "$OUT/screen.png" "$OUT/stats.json" "$OUT/timeline.svg" "$OUT/timeline.json"
CARD=$("$TOOLS/drm-cards" --find virtio_gpu --virgl) || {
    echo "demo: no virgl card in this VM (QEMU's virtio-gpu-gl-pci; see the README)"
    exit 1
}
RENDER=/dev/dri/$(ls "/sys/class/drm/$(basename "$CARD")/device/drm" | grep renderD | head -n1)
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg-runtime}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
export NO_COLOR=1
echo "demo: syncbridge --backend tty on $CARD (virgl, render node $RENDER), two phases of $COMMITS commits"
timeout 900 seatd-launch -- "$BIN" --backend tty --drm-device "$CARD" \
    --stats-interval 1 \
    --screenshot "$OUT/screen.png" --stats-json "$OUT/stats.json" --timeline "$OUT/timeline.svg" \
    -- sh "$(dirname "$0")/demo-clients.sh" "$OUT" "$RENDER" "$COMMITS" > "$OUT/compositor.log" 2>&1
CODE=$?
echo "demo: syncbridge exited with $CODE"
exit $CODE
