//! The per-output refresh cycle of the TTY backend, on [`State`]: a page-flip event
//! finishes commit N-1 (release lead time, out-fence delay per CRTC, at-flip releases, its
//! presentation feedback and the frame callbacks) and runs the next cycle through
//! [`State::present_frame`]. Inside it, right after the render and
//! its atomic commit and before fifo and commit-timing barriers are released, the
//! commit's scanout transition goes to the fence bridge ([`State::tty_report_commit`]),
//! with the buffer ids taken when the plane was assigned.

use std::time::Duration;

use smithay::reexports::{
    calloop::{
        generic::Generic,
        timer::{TimeoutAction, Timer},
        Interest, Mode, PostAction,
    },
    drm::control::{Device as _, Event as DrmEvent},
};
use syncbridge_bridge::sync_file::monotonic_now_ns;

use super::{kms::scanout::ids_of, release::ActiveRelease, TtyError};
use crate::{backend::Backend, state::State};

/// A cycle that waited for its deadline after a flip.
#[derive(Debug, Clone, Copy)]
struct Latched {
    /// The vblank sequence of the flip that started it.
    after_seq: u32,
    /// How late its timer fired.
    late_by: Duration,
    /// Started by a request that woke an idle output, not by a flip event.
    woken: bool,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn diff(a: u64, b: u64) -> i64 {
    i64::try_from(i128::from(a) - i128::from(b)).unwrap_or(0)
}

/// Register the DRM event source, the session, udev and libinput, and queue the first
/// frame of every output.
pub fn start(state: &mut State) -> Result<(), TtyError> {
    let handle = state.loop_handle.clone();
    let Backend::Tty(tty) = &mut state.backend else {
        return Ok(());
    };
    let fd = tty.device.fd.clone();
    handle
        .insert_source(
            Generic::new(fd, Interest::READ, Mode::Level),
            |_, fd, state: &mut State| {
                match fd.receive_events() {
                    Ok(events) => {
                        for event in events {
                            if let DrmEvent::PageFlip(flip) = event {
                                state.on_tty_flip(flip.crtc, flip.frame, flip.duration);
                            }
                        }
                    }
                    Err(err) => tracing::warn!(%err, "reading DRM events"),
                }
                Ok(PostAction::Continue)
            },
        )
        .map_err(|e| TtyError::Source(e.error.to_string()))?;
    if let Some(notifier) = tty.take_notifier() {
        super::session::register(&handle, notifier)?;
    }
    let seat = smithay::backend::session::Session::seat(&tty.session);
    if let Err(err) = super::udev::register(&handle, &seat, tty.device.dev_id()) {
        tracing::warn!(%err, "udev hotplug unavailable");
    }
    match super::input::register(&handle, &tty.session) {
        Ok(ctx) => tty.libinput = Some(ctx),
        Err(err) => tracing::warn!(%err, "no input devices"),
    }
    handle.insert_idle(|state| state.tty_kick_all());
    Ok(())
}

impl State {
    /// Start a refresh cycle on every output that has no commit in flight.
    pub fn tty_kick_all(&mut self) {
        let Backend::Tty(tty) = &self.backend else {
            return;
        };
        let idle: Vec<usize> = tty
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.alive && o.pending.is_none())
            .map(|(i, _)| i)
            .collect();
        for index in idle {
            self.tty_frame(index, None, None);
        }
    }

    /// Something a client did may change what idle outputs show: run a refresh cycle on
    /// each of them, once, from the event loop's idle queue. Cheap when nothing is idle.
    pub fn tty_wake(&mut self) {
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        for out in &mut tty.outputs {
            out.scene_changed = true;
        }
        if tty.wake_queued || !tty.outputs.iter().any(|o| o.alive && o.idle) {
            return;
        }
        tty.wake_queued = true;
        self.loop_handle.insert_idle(|state| {
            let Backend::Tty(tty) = &mut state.backend else {
                return;
            };
            tty.wake_queued = false;
            // tty_frame clears `idle`; a cycle waiting for its deadline is woken already.
            let woken: Vec<usize> = tty
                .outputs
                .iter()
                .enumerate()
                .filter(|(_, o)| {
                    o.alive && o.idle && o.pending.is_none() && o.cycle_timer.is_none()
                })
                .map(|(i, _)| i)
                .collect();
            for index in woken {
                state.tty_wake_cycle(index);
            }
        });
    }

    /// One refresh cycle of output `index`; `vblank` is the kernel time of the flip that
    /// started it, `latched` set when the cycle waited for its deadline after that flip.
    /// A cycle still waiting for its deadline runs now instead.
    fn tty_frame(&mut self, index: usize, vblank: Option<Duration>, latched: Option<Latched>) {
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        if let Some(token) = tty
            .outputs
            .get_mut(index)
            .and_then(|o| o.cycle_timer.take())
        {
            self.loop_handle.remove(token);
        }
        if !tty.active {
            return;
        }
        let Some(out) = tty.outputs.get_mut(index).filter(|o| o.alive) else {
            return;
        };
        // The render sets it again if this cycle has nothing to commit.
        out.idle = false;
        let refresh = out.clock.refresh();
        let base = vblank.unwrap_or_else(super::kms::scanout::monotonic_now);
        let tick = out.clock.tick_at(base + refresh);
        // After a flip or at a deadline, with nothing woken since the last render began:
        // that render is what the output shows, and the next one would draw and commit
        // nothing. What an idle cycle does besides rendering still happens.
        if vblank.is_some() && !out.scene_changed && !out.needs_modeset && out.pending.is_none() {
            out.idle = true;
            let output = out.output.clone();
            tty.stats.idle_cycles += 1;
            tty.stats.cycles_unchanged += 1;
            self.tty_unchanged_cycle(index, &output, tick);
            return;
        }
        let started = monotonic_now_ns();
        let rendered = self.present_frame(index, tick);
        if let Backend::Tty(tty) = &mut self.backend {
            // A commit made in this cycle: its flip's vblank is not earlier than this.
            if let Some(out) = tty.outputs.get_mut(index) {
                if let Some(p) = out.pending.as_mut() {
                    p.cycle_started_ns = started;
                    p.latched_after_seq = latched.map(|l| l.after_seq);
                    let done = Duration::from_nanos(monotonic_now_ns());
                    // The vblank this cycle's commit aims for, and how long before it the
                    // commit was in: on a miss, what the kernel had and did not make do with.
                    p.latched_in_time = latched
                        .and_then(|_| (base + refresh).checked_sub(done))
                        .filter(|left| !left.is_zero());
                    // The deadline's budget covers the timer's lateness too.
                    let work = done.saturating_sub(Duration::from_nanos(started))
                        + latched.map_or(Duration::ZERO, |l| l.late_by);
                    out.latch.record_work(work);
                }
            }
        }
        if vblank.is_some() && !latched.is_some_and(|l| l.woken) {
            if let Backend::Tty(tty) = &mut self.backend {
                let committed = tty
                    .outputs
                    .get(index)
                    .and_then(|o| o.pending.as_ref())
                    .is_some();
                if committed {
                    let took = diff(monotonic_now_ns(), started);
                    tty.stats.commit_after_flip_event.push(took);
                }
            }
        }
        if !rendered {
            self.tty_retry_later(index);
        }
    }

    /// The cycle made no commit (it failed, or the session is paused): no flip event will
    /// come. Retry one refresh later while active.
    fn tty_retry_later(&mut self, index: usize) {
        let Backend::Tty(tty) = &self.backend else {
            return;
        };
        let Some(out) = tty.outputs.get(index) else {
            return;
        };
        if tty.active && out.alive && out.pending.is_none() {
            let refresh = out.clock.refresh();
            let timer = Timer::from_duration(refresh);
            if let Err(err) = self.loop_handle.insert_source(timer, move |_, _, state| {
                state.tty_retry(index);
                TimeoutAction::Drop
            }) {
                tracing::warn!(err = %err.error, "cannot schedule a retry");
            }
        }
    }

    /// Hand the last render's scanout transition to the fence bridge: readers begin for the
    /// ids the plane started reading, and the replaced buffer is released early with the
    /// out-fence, or queued for the flip. Called by [`State::present_frame`] right after
    /// the render, before any client commit can be applied: the ids were taken when the
    /// plane was assigned, and nothing may retire them in between.
    pub fn tty_report_commit(&mut self, index: usize) {
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        let Some(out) = tty.outputs.get(index) else {
            return;
        };
        let mode = out.release.mode();
        if out.report.is_none() {
            return;
        }
        let committed = out.pending.is_some();
        // A commit succeeded: it takes over buffers carried over a resume. Those that go
        // with this commit's out-fence join its transition: one call, one fence.
        let carried = if committed {
            self.tty_commit_takes_over(index, mode, has_out_fence(&self.backend, index))
        } else {
            Vec::new()
        };
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        let Some(out) = tty.outputs.get_mut(index) else {
            return;
        };
        let Some(report) = out.report.take() else {
            return;
        };
        let shown = report.shown;
        tracing::debug!(
            output = index,
            shown = ?shown,
            no_longer_shown = ?report.no_longer_shown.iter().map(|(ids, _)| ids).collect::<Vec<_>>(),
            out_fence = report.out_fence.is_some(),
            "scanout transition"
        );
        let carried_ids = ids_of(&carried);
        let replaced = report.no_longer_shown;
        // The out-fence ends the reads of the buffers it goes to the bridge with; the flip
        // keeps it too, to measure its delay after the flip. One fd, duplicated only when
        // both need it (a composited frame ends no client buffer's read).
        let mut out_fence = report.out_fence;
        let ends_reads = if replaced.is_empty() {
            !carried_ids.is_empty()
        } else {
            mode == ActiveRelease::Early && out_fence.is_some()
        };
        if let Some(p) = out.pending.as_mut() {
            p.out_fence = if ends_reads {
                out_fence.as_ref().and_then(|f| f.try_clone().ok())
            } else {
                out_fence.take()
            };
        }
        if replaced.is_empty() {
            if !shown.is_empty() || !carried_ids.is_empty() {
                self.sync_bridge
                    .scanout_committed(out_fence, &shown, &carried_ids);
            }
            drop(carried);
        } else if ends_reads {
            // Early release with an out-fence. Every plane of the CRTC: the out-fence
            // signals when this commit's state replaced what they showed.
            let mut old = ids_of(&replaced);
            old.extend_from_slice(&carried_ids);
            self.sync_bridge.scanout_committed(out_fence, &shown, &old);
            // The fence is in: now wl_buffer.release goes out, before the flip.
            let count = replaced.len();
            drop(replaced);
            drop(carried);
            let now = monotonic_now_ns();
            if let Backend::Tty(tty) = &mut self.backend {
                tty.stats.early_releases += count as u64;
                if let Some(p) = tty.outputs.get_mut(index).and_then(|o| o.pending.as_mut()) {
                    p.released_at_ns.extend(std::iter::repeat_n(now, count));
                }
            }
        } else {
            // Nothing was carried with a fence here (that needs early mode and an
            // out-fence, the branch above).
            // The out-fence ends no read here: the pending flip took it.
            if !shown.is_empty() {
                self.sync_bridge.scanout_committed(None, &shown, &[]);
            }
            match out.pending.as_mut() {
                Some(p) => p.release_at_flip.extend(replaced),
                None => self
                    .sync_bridge
                    .scanout_committed(None, &[], &ids_of(&replaced)),
            }
        }
    }

    fn tty_retry(&mut self, index: usize) {
        let pending = match &self.backend {
            Backend::Tty(tty) => tty.outputs.get(index).is_some_and(|o| o.pending.is_some()),
            _ => true,
        };
        if !pending {
            self.tty_frame(index, None, None);
        }
    }

    /// A page-flip event (`seq`: the CRTC's vblank sequence, `time`: the kernel's
    /// timestamp): commit N-1 is on screen.
    pub fn on_tty_flip(
        &mut self,
        crtc: smithay::reexports::drm::control::crtc::Handle,
        seq: u32,
        time: Duration,
    ) {
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        let Some(index) = tty.output_index(crtc) else {
            return;
        };
        tty.stats.flips += 1;
        let received_ns = monotonic_now_ns();
        let flip_ns = if time.is_zero() {
            received_ns
        } else {
            ns(time)
        };
        tty.stats
            .flip_event_latency
            .push(diff(received_ns, flip_ns));
        // Late out-fences of earlier flips.
        super::out_fence_delay::measure_late(tty);
        let Some(out) = tty.outputs.get_mut(index) else {
            return;
        };
        let started = out.pending.as_ref().map(|p| p.cycle_started_ns);
        if out.handover.is_stale_flip(flip_ns, started) {
            tracing::debug!(
                output = index,
                "page flip of a commit given up at resume: not the pending one's"
            );
            return;
        }
        let Some(mut pending) = out.pending.take() else {
            return;
        };
        if let Some(started_seq) = pending.latched_after_seq {
            let in_time = pending.latched_in_time;
            if out
                .latch
                .record_flip(started_seq, seq, out.clock.refresh(), in_time)
            {
                tracing::debug!(
                    output = index,
                    started_seq,
                    seq,
                    in_time_us = in_time.map(|t| t.as_micros() as u64),
                    "late latching: the commit missed its vblank; more margin (in before it) or backing off (in after it)"
                );
            }
        }
        syncbridge_protocols::timeline::page_flip(index as u64, flip_ns);
        let feedback = pending.feedback.take();
        let pending_shown = std::mem::take(&mut pending.shown_commits);
        if let Some(id) = pending.lag_fence.take() {
            super::out_fence_lag::signal_later(&self.loop_handle, tty, id);
        }
        for r in &pending.released_at_ns {
            tty.stats.release_lead.push(diff(received_ns, *r));
            tty.stats.release_lead_vblank.push(diff(flip_ns, *r));
        }
        super::out_fence_delay::measure(
            tty,
            index,
            pending.out_fence.take(),
            pending.out_fence_committed_ns,
            flip_ns,
        );
        let ids = ids_of(&pending.release_at_flip);
        let count = pending.release_at_flip.len();
        if !ids.is_empty() {
            self.sync_bridge.scanout_committed(None, &[], &ids);
        }
        drop(pending.release_at_flip);
        drop(pending.retiring);
        if count > 0 {
            let now = monotonic_now_ns();
            if let Backend::Tty(tty) = &mut self.backend {
                tty.stats.flip_releases += count as u64;
                for _ in 0..count {
                    tty.stats.release_lead.push(diff(received_ns, now));
                    tty.stats.release_lead_vblank.push(diff(flip_ns, now));
                }
            }
        }
        // The frame is on screen: its feedback and the frame callbacks, before the next
        // cycle renders.
        let flip = super::presentation::Flip {
            seq,
            time: (!time.is_zero()).then_some(time),
        };
        self.tty_flip_presented(index, flip, feedback, &pending_shown);
        if !time.is_zero() {
            if let Backend::Tty(tty) = &mut self.backend {
                if let Some(out) = tty.outputs.get_mut(index) {
                    out.last_flip = Some((time, seq));
                }
            }
        }
        self.tty_schedule_cycle(index, time, seq, false);
    }

    /// A request woke idle output `index`. While its vblank phase is known (it flipped
    /// recently), the cycle waits for its deadline before the next vblank like one after
    /// a flip, so the commits of other clients (and fences) that come meanwhile make the
    /// same frame instead of each waking a cycle of its own; a commit that comes after
    /// that deadline, or to an output idle for longer, runs a cycle at once.
    fn tty_wake_cycle(&mut self, index: usize) {
        let Backend::Tty(tty) = &self.backend else {
            return;
        };
        let Some(out) = tty.outputs.get(index) else {
            return;
        };
        let now = super::kms::scanout::monotonic_now();
        let previous = out
            .last_flip
            .and_then(|flip| super::latch_deadline::vblank_before(flip, now, out.clock.refresh()));
        match previous {
            Some((vblank, seq)) => self.tty_schedule_cycle(index, vblank, seq, true),
            None => self.tty_frame(index, None, None),
        }
    }

    /// The cycle after the flip of `seq` at `time` (zero: no timestamp), or, `woken`, the
    /// cycle of an idle output woken after the vblank `seq` at `time`: at once, or at its
    /// deadline (see [`latch_deadline`](super::latch_deadline)).
    fn tty_schedule_cycle(&mut self, index: usize, time: Duration, seq: u32, woken: bool) {
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        let Some(out) = tty.outputs.get_mut(index) else {
            return;
        };
        let now = super::kms::scanout::monotonic_now();
        let flip = if time.is_zero() { now } else { time };
        let Some(wait) = out.latch.wait_after_flip(flip, now, out.clock.refresh()) else {
            // A woken cycle past its deadline has no flip to count from.
            self.tty_frame(index, (!woken).then_some(time), None);
            if !woken {
                self.tty_call_back_drawn(index);
            }
            return;
        };
        let timer = Timer::from_duration(wait);
        let inserted = self
            .loop_handle
            .insert_source(timer, move |deadline, _, state| {
                if let Backend::Tty(tty) = &mut state.backend {
                    if let Some(out) = tty.outputs.get_mut(index) {
                        out.cycle_timer = None;
                    }
                }
                let latched = Latched {
                    after_seq: seq,
                    late_by: std::time::Instant::now().saturating_duration_since(deadline),
                    woken,
                };
                state.tty_frame(index, Some(time), Some(latched));
                TimeoutAction::Drop
            });
        match inserted {
            Ok(token) => out.cycle_timer = Some(token),
            Err(err) => {
                tracing::warn!(err = %err.error, "late latching: cannot schedule the cycle; running it now");
                self.tty_frame(index, Some(time), None);
                if !woken {
                    self.tty_call_back_drawn(index);
                }
            }
        }
    }

    /// Suspend or resume libinput with the session.
    pub fn tty_suspend_input(&mut self, suspend: bool) {
        if let Backend::Tty(tty) = &mut self.backend {
            if let Some(ctx) = tty.libinput.as_mut() {
                if suspend {
                    ctx.suspend();
                } else if ctx.resume().is_err() {
                    tracing::warn!("libinput did not resume");
                }
            }
        }
        // suspend/resume queue device removed/added events without making the libinput
        // fd readable: hand them to the seat now.
        self.tty_take_queued_device_events();
    }

    /// Connectors changed: vanished ones are switched off and their output unmapped; new
    /// ones get an output.
    pub fn tty_rescan_connectors(&mut self) {
        let Backend::Tty(tty) = &mut self.backend else {
            return;
        };
        let res = match tty.device.fd.resource_handles() {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(%err, "rescanning connectors");
                return;
            }
        };
        let connected = super::kms::scanout::connected(&tty.device, &res);
        let mut gone = Vec::new();
        for (i, out) in tty.outputs.iter_mut().enumerate() {
            if out.alive && !connected.iter().any(|c| c.handle() == out.connector) {
                out.alive = false;
                gone.push(i);
            }
        }
        // Outputs that vanished while the session was paused owe a switch-off.
        let mut released = super::teardown::retry_due_switch_offs(&tty.device, &mut tty.outputs);
        for &i in &gone {
            let out = &mut tty.outputs[i];
            tracing::warn!(output = %out.output.name(), "connector vanished: output removed");
            tty.stats.connectors_lost += 1;
            // Its connector is gone: a frame still waiting for its flip is not seen.
            super::presentation::discard_pending(out, &mut tty.presentation, "output vanished");
            // Its plane's buffers go only once the switch-off succeeded.
            released.append(super::teardown::switch_off_vanished(&tty.device, out));
            if let Some(global) = out.global.take() {
                tty.display_handle().remove_global::<State>(global);
            }
        }
        let gone_outputs: Vec<_> = gone
            .iter()
            .map(|&i| tty.outputs[i].output.clone())
            .collect();
        // New connectors.
        let mut added = Vec::new();
        let known: Vec<_> = tty
            .outputs
            .iter()
            .filter(|o| o.alive)
            .map(|o| o.connector)
            .collect();
        // A CRTC still owing its switch-off may scan out a held buffer: not free.
        let used: Vec<_> = tty
            .outputs
            .iter()
            .filter(|o| o.alive || o.handover.disable_due())
            .map(|o| o.crtc)
            .collect();
        let x = tty
            .outputs
            .iter()
            .filter(|o| o.alive)
            .map(|o| i32::try_from(o.size().0).unwrap_or(0))
            .sum();
        for conn in connected.iter().filter(|c| !known.contains(&c.handle())) {
            let dh = tty.display_handle().clone();
            let used_planes: Vec<_> = tty
                .outputs
                .iter()
                .filter(|o| o.alive || o.handover.disable_due())
                .flat_map(|o| o.planes())
                .collect();
            match super::kms::scanout::create_output(
                &tty.device,
                &res,
                conn,
                super::kms::scanout::Taken {
                    crtcs: &used,
                    planes: &used_planes,
                    overlays: tty.overlays_enabled,
                },
                &mut tty.renderer,
                &dh,
                x,
            ) {
                Ok(mut out) => {
                    out.release = super::release_policy::ReleasePolicy::new(
                        tty.release,
                        tty.release_adaptive,
                    );
                    out.latch = super::latch_deadline::LatchDeadline::new(tty.late_latch);
                    tracing::info!(output = %out.output.name(), "connector appeared: output added");
                    tty.stats.connectors_added += 1;
                    added.push(out.output.clone());
                    tty.outputs.push(out);
                }
                Err(err) => tracing::warn!(%err, "new connector not usable"),
            }
        }
        self.tty_release_unread(released);
        for output in gone_outputs {
            self.space.unmap_output(&output);
        }
        for output in added {
            let loc = output.current_location();
            self.space.map_output(&output, loc);
            let (size, refresh_mhz) = output
                .current_mode()
                .map(|m| ((m.size.w, m.size.h), u32::try_from(m.refresh).unwrap_or(0)))
                .unwrap_or_default();
            self.stats.outputs.push(crate::stats::OutputStats {
                name: output.name(),
                size,
                refresh_mhz,
                ..Default::default()
            });
        }
        self.tty_kick_all();
    }
}

/// Whether output `index`'s pending report carries an out-fence.
fn has_out_fence(backend: &Backend, index: usize) -> bool {
    match backend {
        Backend::Tty(tty) => tty
            .outputs
            .get(index)
            .and_then(|o| o.report.as_ref())
            .is_some_and(|r| r.out_fence.is_some()),
        _ => false,
    }
}
