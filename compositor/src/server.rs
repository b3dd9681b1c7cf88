//! Event loop + display + state: what the `syncbridge` binary runs and what the test
//! fixture drives.

use std::{
    cell::Cell,
    ffi::{OsStr, OsString},
    rc::Rc,
    time::Duration,
};

use smithay::reexports::{
    calloop::{
        generic::Generic,
        signals::{Signal, Signals},
        timer::{TimeoutAction, Timer},
        EventLoop, Interest, Mode, PostAction, RegistrationToken,
    },
    wayland_server::Display,
};

use crate::{
    child::{self, ChildError},
    config::{CompositorConfig, FrameClockMode},
    listener::{ListenerEvent, ResilientListener},
    state::{ExitReason, State, StateError},
    stats::{ChildReport, ClientsReport, StatsReport},
};

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Creating the event loop failed.
    #[error("creating the event loop: {0}")]
    EventLoop(#[source] std::io::Error),
    /// Creating the display failed.
    #[error("creating the Wayland display: {0}")]
    Display(String),
    /// Registering an event source failed.
    #[error("registering {what} in the event loop: {message}")]
    Source {
        /// Which source.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// Creating the state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Binding the listening socket failed.
    #[error("binding the Wayland socket: {0}")]
    Socket(String),
    /// Starting the command failed.
    #[error(transparent)]
    Child(#[from] ChildError),
    /// Dispatching the event loop failed.
    #[error("event loop: {0}")]
    Dispatch(String),
}

/// How long accepting pauses after `accept()` failed (the backlog keeps the connections).
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

fn source_error(what: &'static str) -> impl FnOnce(String) -> ServerError {
    move |message| ServerError::Source { what, message }
}

/// A running compositor.
#[derive(Debug)]
pub struct Server {
    /// The event loop (owns the display source, sockets, timers).
    pub event_loop: EventLoop<'static, State>,
    /// The compositor state.
    pub state: State,
}

impl Server {
    /// Create the display, the state and the backend; start the frame clocks unless
    /// `config.frame_clock` is [`FrameClockMode::Manual`].
    pub fn new(config: CompositorConfig) -> Result<Self, ServerError> {
        let event_loop: EventLoop<'static, State> =
            EventLoop::try_new().map_err(|e| ServerError::EventLoop(e.into()))?;
        let display: Display<State> =
            Display::new().map_err(|e| ServerError::Display(e.to_string()))?;
        let display_handle = display.handle();
        let loop_handle = event_loop.handle();

        loop_handle
            .insert_source(
                Generic::new(display, Interest::READ, Mode::Level),
                |_, display, state| {
                    // SAFETY: the display is owned by this source and is not dropped
                    // while its clients are dispatched.
                    let display = unsafe { display.get_mut() };
                    if let Err(err) = display.dispatch_clients(state) {
                        tracing::warn!(%err, "dispatching clients");
                    }
                    // Requests (new windows, destroyed surfaces, ...) may change what
                    // an idle output shows.
                    state.request_redraw();
                    Ok(PostAction::Continue)
                },
            )
            .map_err(|e| e.error.to_string())
            .map_err(source_error("the Wayland display"))?;

        let frame_clock = config.frame_clock;
        let stats_interval = config.stats_log_interval;
        let mut state = State::new(
            display_handle,
            loop_handle.clone(),
            event_loop.get_signal(),
            config,
        )?;

        if frame_clock == FrameClockMode::Timer {
            state
                .backend
                .start_frame_clocks(&loop_handle)
                .map_err(|e| e.to_string())
                .map_err(source_error("the frame clocks"))?;
        }
        if let crate::backend::Backend::Tty(_) = &state.backend {
            crate::backend::tty::frame::start(&mut state)
                .map_err(|e| e.to_string())
                .map_err(source_error("the tty backend"))?;
        }
        if let Some(interval) = stats_interval {
            loop_handle
                .insert_source(Timer::from_duration(interval), move |_, _, state| {
                    state.log_stats();
                    TimeoutAction::ToDuration(interval)
                })
                .map_err(|e| e.error.to_string())
                .map_err(source_error("the stats timer"))?;
        }

        Ok(Self { event_loop, state })
    }

    /// Exit cleanly (stats written) on SIGINT and SIGTERM.
    pub fn handle_signals(&mut self) -> Result<(), ServerError> {
        let signals = Signals::new(&[Signal::SIGINT, Signal::SIGTERM])
            .map_err(|e| e.to_string())
            .map_err(source_error("the signal handler"))?;
        self.event_loop
            .handle()
            .insert_source(signals, |event, _, state| {
                tracing::info!(signal = ?event.signal(), "signal received");
                state.request_exit(ExitReason::Signal);
            })
            .map_err(|e| e.error.to_string())
            .map_err(source_error("the signal handler"))?;
        Ok(())
    }

    /// Listen on `$XDG_RUNTIME_DIR/<name>` (or the first free `wayland-N`). Returns the
    /// socket name, for WAYLAND_DISPLAY.
    ///
    /// A failing `accept()` (EMFILE when the process is out of fds, ...) is logged and
    /// pauses accepting for [`ACCEPT_PAUSE`]; it never ends the event loop.
    pub fn listen(&mut self, name: Option<&str>) -> Result<OsString, ServerError> {
        let source =
            ResilientListener::bind(name).map_err(|e| ServerError::Socket(e.to_string()))?;
        let socket_name = source
            .socket_name()
            .map(OsStr::to_os_string)
            .ok_or_else(|| ServerError::Socket("the socket has no name".into()))?;
        let handle = self.event_loop.handle();
        let token: Rc<Cell<Option<RegistrationToken>>> = Rc::new(Cell::new(None));
        let own_token = token.clone();
        // While fds stay exhausted accept() fails every pause: one warning per 5 s.
        let mut last_warning: Option<std::time::Instant> = None;
        let registered = handle
            .insert_source(source, move |event, _, state| match event {
                ListenerEvent::Client(stream) => {
                    if let Err(err) = state.insert_client(stream) {
                        tracing::warn!(%err, "could not add client");
                    }
                }
                ListenerEvent::Paused(err) => {
                    state.client_counters.accept_failed();
                    let times = state.client_counters.accept_paused();
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                        last_warning = Some(std::time::Instant::now());
                        tracing::warn!(
                            %err,
                            times,
                            pause_ms = ACCEPT_PAUSE.as_millis() as u64,
                            "accepting a client failed; new connections wait in the backlog"
                        );
                    } else {
                        tracing::debug!(%err, times, "accepting a client failed again");
                    }
                    let Some(token) = own_token.get() else { return };
                    let resumed = state.loop_handle.insert_source(
                        Timer::from_duration(ACCEPT_PAUSE),
                        move |_, _, state| {
                            if let Err(err) = state.loop_handle.enable(&token) {
                                tracing::error!(%err, "cannot resume accepting clients");
                            }
                            TimeoutAction::Drop
                        },
                    );
                    if let Err(err) = resumed {
                        // No timer (out of memory): resume at once rather than never.
                        tracing::warn!(error = %err.error, "cannot schedule the accept pause");
                        if let Err(err) = state.loop_handle.enable(&token) {
                            tracing::error!(%err, "cannot resume accepting clients");
                        }
                    }
                }
            })
            .map_err(|e| e.error.to_string())
            .map_err(source_error("the listening socket"))?;
        token.set(Some(registered));
        tracing::info!(socket = ?socket_name, "listening");
        Ok(socket_name)
    }

    /// Start `argv` as a client; the server stops when it exits.
    pub fn spawn_command(
        &mut self,
        argv: &[OsString],
        socket_name: &OsStr,
    ) -> Result<(), ServerError> {
        let status = child::spawn(&self.event_loop.handle(), argv, socket_name)?;
        self.state.child = Some(status);
        Ok(())
    }

    /// Dispatch pending events once (waiting at most `timeout`), then flush clients.
    pub fn dispatch(&mut self, timeout: Option<Duration>) -> Result<(), ServerError> {
        self.event_loop
            .dispatch(timeout, &mut self.state)
            .map_err(|e| ServerError::Dispatch(e.to_string()))?;
        self.state.flush_clients();
        Ok(())
    }

    /// Run until something requests exit (command exit, frame limit, signal).
    pub fn run(&mut self) -> Result<Option<ExitReason>, ServerError> {
        self.event_loop
            .run(None, &mut self.state, |state| state.flush_clients())
            .map_err(|e| ServerError::Dispatch(e.to_string()))?;
        if let Some(child) = &self.state.child {
            child::terminate(child);
        }
        Ok(self.state.exit_reason)
    }
}

impl State {
    /// Send queued events to every client, after refreshing the pointer's focus if
    /// something this iteration did may have changed the surface under it.
    pub fn flush_clients(&mut self) {
        if std::mem::take(&mut self.pointer_focus_stale) {
            self.refresh_pointer_focus();
        }
        if let Err(err) = self.display_handle.flush_clients() {
            tracing::debug!(%err, "flushing clients");
        }
    }

    /// The `--stats-json` document for the run so far.
    pub fn stats_report(&self) -> StatsReport {
        let outputs = self.stats.outputs.clone();
        let cpu_s = crate::stats::process_cpu_s();
        let frames = self.stats.frames_presented_total();
        let cpu_ms_per_frame = self.stats.cpu_baseline.and_then(|(cpu0, frames0)| {
            let n = frames.saturating_sub(frames0);
            (n > 0).then(|| (cpu_s - cpu0) * 1000.0 / n as f64)
        });
        StatsReport {
            backend: self.backend.name(),
            renderer: self.backend.renderer_name(),
            render_device: self
                .render_device
                .as_ref()
                .map(|d| d.path.display().to_string()),
            dmabuf_advertised: self.dmabuf.is_some(),
            uptime_s: self.stats.uptime().as_secs_f64(),
            cpu_s,
            cpu_ms_per_frame,
            frames_presented_total: frames,
            outputs,
            commits: self.stats.commits,
            surfaces_created: self.stats.surfaces_created,
            surfaces_destroyed: self.stats.surfaces_destroyed,
            dmabuf_imports: self.stats.dmabuf_imports,
            dmabuf_import_failures: self.stats.dmabuf_import_failures,
            render_sync: self.stats.render_sync.clone(),
            clients: ClientsReport {
                connected: self.client_counters.connected(),
                disconnected: self.client_counters.disconnected(),
                accept_paused: self.client_counters.accept_paused(),
            },
            protocol_errors_sent: self.client_counters.protocol_errors(),
            protocol_errors: self.client_counters.error_messages(),
            sync: self.sync_report(),
            kms: self.backend.kms_stats(),
            child: self.child.as_ref().map(|c| ChildReport {
                command: c.argv.clone(),
                exit_code: c.exit_code,
            }),
        }
    }

    /// Fence bridge statistics for the report.
    fn sync_report(&self) -> serde_json::Value {
        crate::stats::sync_json(&self.sync_bridge.stats(), &syncbridge_bridge::stats())
    }

    /// The periodic info-level stats line.
    pub fn log_stats(&self) {
        let frames: Vec<u64> = self
            .stats
            .outputs
            .iter()
            .map(|o| o.frames_presented)
            .collect();
        let sync = self.sync_bridge.stats();
        tracing::info!(
            ?frames,
            commits = self.stats.commits,
            waited_implicit = sync.commits_waited_implicit + sync.commits_waited_implicit_poll,
            waited_explicit = sync.commits_waited_explicit,
            waited_syncobj = sync.commits_waited_syncobj,
            latch_p50_us = sync.latch_latency.p50_ns / 1000,
            latch_p99_us = sync.latch_latency.p99_ns / 1000,
            released = sync.buffers_released,
            fences_held = sync.fences_held,
            fds_held = sync.fds_held,
            clients = self
                .client_counters
                .connected()
                .saturating_sub(self.client_counters.disconnected()),
            protocol_errors = self.client_counters.protocol_errors(),
            "stats"
        );
    }
}

/// Log what runs: backend, outputs, device, renderer, and the sync features.
pub fn log_startup(state: &State) {
    for (output, stats) in state.backend.outputs().iter().zip(&state.stats.outputs) {
        tracing::info!(
            output = %output.name(),
            size = ?stats.size,
            refresh_hz = f64::from(stats.refresh_mhz) / 1000.0,
            "output"
        );
    }
    match &state.render_device {
        Some(device) => tracing::info!(
            path = %device.path.display(),
            node = device.node_kind(),
            driver = device.driver.as_deref().unwrap_or("unknown"),
            "render device"
        ),
        None => tracing::info!("render device: none (no DRM device found or selected)"),
    }
    match &state.backend {
        crate::backend::Backend::Nested(_) => tracing::info!(
            renderer = state.backend.renderer_name(),
            "renderer: GLES in the nested window; its sync point goes to the bridge as the \
             render fence when EGL exports native fences, else releases are CPU releases"
        ),
        crate::backend::Backend::Tty(_) if state.backend.renderer_name() == "gles" => {
            tracing::info!(
                renderer = "gles",
                "renderer: GLES on the KMS device's GPU; each frame's render fence is IN_FENCE_FD \
             of its commit and goes to the bridge for the buffers it sampled"
            )
        }
        crate::backend::Backend::Headless(b) if b.renderer_name() == "gles" => {
            tracing::info!(
                renderer = "gles",
                reason = %b.renderer_reason,
                "renderer: GLES on the render device into GBM buffers; each frame's render \
             fence goes to the bridge for the buffers it sampled"
            )
        }
        _ => tracing::info!(
            renderer = state.backend.renderer_name(),
            "renderer: CPU compositing (no render fence: releases are CPU releases); \
             dma-bufs are read through mmap only after their acquire fences signalled"
        ),
    }
}
