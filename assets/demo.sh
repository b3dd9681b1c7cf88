#!/bin/sh
# The `cargo xtask run` demo on the test VM's virtual KMS device (VKMS), also run by the
# VM test `vm_demo` so it cannot rot.
#
#   demo.sh OUTDIR FRAMES
#
# syncbridge runs on the VKMS card under seatd-launch, with two demo clients: one
# implicit-sync client whose vgem write fences signal 40 ms late, and one
# linux-drm-syncobj-v1 client (timeline on virtio-gpu's render node) whose acquire
# points signal 20 ms late, started a second later so its window maps on top. It exits after FRAMES frames and leaves in OUTDIR:
# screen.png (what the output showed), stats.json, and the logs of all three processes.
# $SYNCBRIDGE_BIN names the compositor; demo-client and drm-cards are found next to it.
set -u
OUT=$1
FRAMES=${2:-600}
BIN=${SYNCBRIDGE_BIN:-target/debug/syncbridge}
TOOLS=$(dirname "$BIN")
mkdir -p "$OUT"
rm -f "$OUT/screen.png" "$OUT/stats.json"
VKMS=$("$TOOLS/drm-cards" --find vkms) || { echo "demo: no VKMS card in this VM"; exit 1; }
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg-runtime}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
export NO_COLOR=1
CLIENTS="'$TOOLS/demo-client' --mode implicit --color 3070c0 --fence-delay-ms 40 --size 480x360 > '$OUT/implicit.log' 2>&1 &
sleep 1;
'$TOOLS/demo-client' --mode syncobj --color c07030 --fence-delay-ms 20 > '$OUT/syncobj.log' 2>&1;
wait"
echo "demo: syncbridge --backend tty on $VKMS, $FRAMES frames"
timeout 600 seatd-launch -- "$BIN" --backend tty --drm-device "$VKMS" \
    --exit-after-frames "$FRAMES" --stats-interval 5 \
    --screenshot "$OUT/screen.png" --stats-json "$OUT/stats.json" \
    -- sh -c "$CLIENTS" > "$OUT/compositor.log" 2>&1
CODE=$?
echo "demo: syncbridge exited with $CODE"
exit $CODE
