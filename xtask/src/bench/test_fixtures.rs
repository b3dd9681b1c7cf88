//! Scenarios and reports as `bench-driver` would leave them, for the table's unit tests.

use serde_json::{json, Value};

use super::{Report, Scenario};

/// A scenario that exited with `code`, with `client` and `stats` as the driver would
/// leave them.
pub fn scenario(name: &str, code: i32, client: Value, stats: Value) -> Scenario {
    Scenario {
        name: name.into(),
        code,
        secs: 7.0,
        note: String::new(),
        client,
        stats,
        floor: Value::Null,
        log_fences_max: None,
        log_fds_max: None,
        perf: Value::Null,
    }
}

/// A release-build report of `scenarios`, with sway 1.7 as the VKMS peer.
pub fn report(scenarios: Vec<Scenario>) -> Report {
    Report {
        env: json!({"sway": "sway version 1.7"}),
        profile: "release".into(),
        scenarios,
    }
}
