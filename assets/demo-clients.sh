#!/bin/sh
# The client command of the demo (assets/demo.sh), run by syncbridge as its child:
#
#   demo-clients.sh OUTDIR RENDER_NODE COMMITS
#
# Phase 1: weston-simple-egl fullscreen and opaque (direct scanout) until the compositor
# has applied COMMITS commits. Phase 2: weston-simple-dmabuf-egl with explicit sync
# until 5 of its commits waited on their acquire fences, then also weston-simple-egl in
# a window on top (implicit sync) until 5 of its commits waited on their implicit fences
# (so that each client has drawn before the end), and COMMITS in all in phase 2. Then
# it exits 0, which ends the compositor with the phase-2 windows on screen. The counts
# are the compositor's own, read from its once-a-second stats line in
# OUTDIR/compositor.log. A wait that is not over within 300 s ends the demo with exit
# status 1.
set -u
OUT=$1
RENDER=$2
COMMITS=$3
LOG="$OUT/compositor.log"

# The last stats line's FIELD=N.
stat_of() {
    n=$(grep ' stats frames=' "$LOG" | tail -n 1 | sed -n "s/.* $1=\([0-9]*\).*/\1/p")
    echo "${n:-0}"
}

# Wait until stat FIELD reaches TARGET.
wait_for() {
    field=$1
    target=$2
    phase=$3
    seconds=0
    while [ "$(stat_of "$field")" -lt "$target" ]; do
        seconds=$((seconds + 1))
        if [ "$seconds" -gt 300 ]; then
            echo "demo: $phase: $field $(stat_of "$field") of $target after 300 s" >&2
            exit 1
        fi
        sleep 1
    done
}

weston-simple-egl -f -o > "$OUT/fullscreen.log" 2>&1 &
FULLSCREEN=$!
wait_for commits "$COMMITS" "phase 1 (fullscreen, direct scanout)"
kill "$FULLSCREEN"
wait "$FULLSCREEN"
START=$(stat_of commits)

weston-simple-dmabuf-egl --drm-render-node="$RENDER" --explicit-sync=1 --size=480 > "$OUT/explicit.log" 2>&1 &
wait_for waited_explicit 5 "phase 2 (composited, explicit sync)"
IMPLICIT=$(stat_of waited_implicit)
weston-simple-egl > "$OUT/window.log" 2>&1 &
wait_for waited_implicit $((IMPLICIT + 5)) "phase 2 (composited, implicit sync)"
wait_for commits $((START + COMMITS)) "phase 2 (composited, both)"
exit 0
