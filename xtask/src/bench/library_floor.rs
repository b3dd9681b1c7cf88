//! The latch's second floor: the same latch client through the library's minimal
//! compositor (`minimal-latch-export-*`, `protocols/examples/minimal_compositor.rs`:
//! smithay and the bridge, nothing else), in the same round as syncbridge's run.
//!
//! The bare wake-up (`floor-*`) is what the event source costs; the minimal compositor
//! adds what smithay and the bridge cost to apply a waited commit in any compositor built
//! on them. What syncbridge measures above that is its own code's.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{fmt, fmt_u, Report};

impl Report {
    /// The minimal compositor's latch stats (`sync` object) in round `round` of `mode`.
    fn minimal_sync(&self, mode: &str, round: &str) -> Option<&Value> {
        self.get(&format!("minimal-latch-{mode}-{round}"))
            .map(|s| &s.stats["sync"])
            .filter(|s| s["latch_latency"].is_object())
    }

    /// The figures of round `round` (JSON summary): the minimal compositor's latch, its
    /// callback -> applied, and syncbridge's latch minus it, at p50 and p99 (us).
    pub(super) fn library_floor_figures(&self, mode: &str, round: &str, latch: &Value) -> Value {
        let Some(sync) = self.minimal_sync(mode, round) else {
            return Value::Null;
        };
        let minus = |q: &str| Some(latch[q].as_f64()? - sync["latch_latency"][q].as_f64()?);
        json!({
            "latency": sync["latch_latency"],
            "callback_to_applied": sync["latch_apply"],
            "callback_to_state_applied_by_smithay": sync["latch_apply_state"],
            "bridge_post_commit_hook": sync["latch_apply_bridge_hook"],
            "commit_handler": sync["latch_apply_handlers"],
            "syncbridge_minus_minimal_us": { "p50": minus("p50_us"), "p99": minus("p99_us") },
        })
    }

    /// The table's rows for round `round` of `mode`, under syncbridge's own (`latch`).
    pub(super) fn library_floor_rows(
        &self,
        t: &mut String,
        mode: &str,
        round: &str,
        latch: &Value,
    ) {
        let Some(sync) = self.minimal_sync(mode, round) else {
            return;
        };
        let l = &sync["latch_latency"];
        let row = |t: &mut String, what: &str, v: &Value| {
            let _ = writeln!(
                t,
                "    {:<44} {:>10} {:>10}",
                what,
                fmt(v["p50_us"].as_f64(), 0),
                fmt(v["p99_us"].as_f64(), 0),
            );
        };
        let _ = writeln!(
            t,
            "    {:<44} {:>10} {:>10} {:>8}",
            "  minimal compositor, same client (library)",
            fmt(l["p50_us"].as_f64(), 0),
            fmt(l["p99_us"].as_f64(), 0),
            fmt_u(l["count"].as_u64()),
        );
        row(
            t,
            "    of it: callback -> commit applied",
            &sync["latch_apply"],
        );
        row(
            t,
            "      smithay makes the state current",
            &sync["latch_apply_state"],
        );
        row(
            t,
            "      the bridge's post-commit hook",
            &sync["latch_apply_bridge_hook"],
        );
        row(
            t,
            "      its commit handler (smithay's)",
            &sync["latch_apply_handlers"],
        );
        let minus = |q: &str| Some(latch[q].as_f64()? - l[q].as_f64()?);
        let _ = writeln!(
            t,
            "    {:<44} {:>10} {:>10}",
            "  syncbridge minus the minimal compositor",
            fmt(minus("p50_us"), 0),
            fmt(minus("p99_us"), 0),
        );
    }
}
