//! `--timeline PATH`: records the bridge's and the backend's
//! [timeline events](syncbridge_protocols::timeline) and writes, at exit, a chart of a few
//! consecutive buffers of one surface on one time axis (SVG at `PATH`) and every recorded
//! buffer's events (JSON next to it, `PATH` with `.json`).
//!
//! The recorder is a `tracing` layer with a filter of its own: it sees the timeline target
//! only, whatever `RUST_LOG` says, and keeps the latest [`MAX_EVENTS`] events (older ones
//! are dropped and counted), so a long run costs bounded memory.

mod chart;
mod rows;

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use syncbridge_bridge::sync_file::monotonic_now_ns;
use syncbridge_protocols::timeline::TARGET;
use tracing::field::{Field, Visit};
use tracing_subscriber::{filter::Targets, layer::Context, Layer};

pub use rows::{BufferRow, Timeline};

/// How many events the recorder keeps (the latest).
pub const MAX_EVENTS: usize = 100_000;

/// One recorded event: its name, when it was emitted (CLOCK_MONOTONIC ns) and its fields.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Event {
    pub t_ns: u64,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surface: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fenced: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_fence: Option<bool>,
    /// A kernel timestamp the event carries (fence signal, vblank), CLOCK_MONOTONIC ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_ns: Option<u64>,
}

impl Visit for Event {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "surface" => self.surface = Some(value),
            "buffer" => self.buffer = Some(value),
            "wait" => self.wait = Some(value),
            "output" => self.output = Some(value),
            "signalled_ns" | "flip_ns" => self.kernel_ns = (value > 0).then_some(value),
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            "fenced" => self.fenced = Some(value),
            "out_fence" => self.out_fence = Some(value),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "event" => self.event = value.to_owned(),
            "how" => self.how = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

#[derive(Debug, Default)]
struct Store {
    events: VecDeque<Event>,
    dropped: u64,
}

/// The recorder: give [`Recorder::layer`] to the subscriber, call [`Recorder::write`] at
/// exit.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    store: Arc<Mutex<Store>>,
}

/// The `tracing` layer half of a [`Recorder`].
#[derive(Debug)]
pub struct RecorderLayer {
    store: Arc<Mutex<Store>>,
}

impl<S: tracing::Subscriber> Layer<S> for RecorderLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut e = Event {
            t_ns: monotonic_now_ns(),
            ..Default::default()
        };
        event.record(&mut e);
        // A poisoned lock means a panic elsewhere while recording: stop recording.
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        if store.events.len() >= MAX_EVENTS {
            store.events.pop_front();
            store.dropped += 1;
        }
        store.events.push_back(e);
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The layer to add to the subscriber: it records the timeline target only.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        RecorderLayer {
            store: self.store.clone(),
        }
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE))
    }

    /// What was recorded so far, linked into per-buffer rows.
    pub fn timeline(&self) -> Timeline {
        let (events, dropped) = match self.store.lock() {
            Ok(store) => (
                store.events.iter().cloned().collect::<Vec<_>>(),
                store.dropped,
            ),
            Err(_) => (Vec::new(), 0),
        };
        Timeline::build(&events, dropped)
    }

    /// Writes the chart to `svg` and the rows to `svg` with `.json`; returns the JSON's path.
    pub fn write(&self, svg: &Path) -> std::io::Result<PathBuf> {
        let timeline = self.timeline();
        std::fs::write(svg, chart::svg(&timeline))?;
        let json = svg.with_extension("json");
        let text =
            serde_json::to_string_pretty(&timeline.to_json()).map_err(std::io::Error::other)?;
        std::fs::write(&json, text)?;
        Ok(json)
    }
}
