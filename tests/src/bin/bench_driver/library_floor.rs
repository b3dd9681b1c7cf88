//! The latch through the library's own minimal compositor (`minimal-latch-export-*`):
//! `protocols/examples/minimal_compositor.rs`, smithay and the bridge with nothing else (no
//! desktop, no output logic, no stats beyond the bridge's own), against the same latch
//! client as `latch-export-*`.
//!
//! Its latch latency is what smithay and the bridge cost any compositor built on them:
//! the floor under syncbridge's own figure that the compositor's code cannot go below.
//! The example prints it when it exits (`minimal_compositor: latch_us latency=p50/p99/n
//! ...`); this writes it to `<scenario>.stats.json` in the shape of syncbridge's
//! `--stats-json` (`sync.latch_latency.p50_us` ...), so the report reads both alike.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{fresh_socket, terminate, try_wait_for, wait_for_socket, wait_limited, Driver, Res};

/// The parts of the example's `latch_us` line, and the stats key each goes to.
const PARTS: [(&str, &str); 6] = [
    ("latency", "latch_latency"),
    ("wake", "latch_wake"),
    ("apply", "latch_apply"),
    ("state", "latch_apply_state"),
    ("bridge_hook", "latch_apply_bridge_hook"),
    ("handlers", "latch_apply_handlers"),
];

/// `{"sync": {...}}` from the example's output, or why not.
fn stats_from_output(output: &str) -> Res<String> {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("minimal_compositor: latch_us "))
        .ok_or("the minimal compositor printed no latch line (no commit waited?)")?;
    let mut fields = Vec::new();
    for (key, stat) in PARTS {
        let value = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| format!("no `{key}=` in the latch line: {line}"))?;
        let mut parts = value.split('/');
        let mut next = |what: &str| -> Res<f64> {
            parts
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("bad {what} in `{key}={value}`"))
        };
        let (p50, p99, count) = (next("p50")?, next("p99")?, next("count")?);
        fields.push(format!(
            "\"{stat}\":{{\"p50_us\":{p50},\"p99_us\":{p99},\"count\":{count}}}"
        ));
    }
    Ok(format!("{{\"sync\":{{{}}}}}\n", fields.join(",")))
}

impl Driver {
    /// The example on its own socket with the latch client (`client`) against it; it exits
    /// once the client left (`--exit-when-idle`), printing its latch figures.
    pub(super) fn minimal_latch(
        &mut self,
        name: &str,
        example: &Path,
        client: &[String],
        limit: Duration,
    ) {
        let start = Instant::now();
        let result = (|| -> Res<(i32, bool)> {
            let (socket_name, socket) = fresh_socket(name)?;
            let log = self.out.join(format!("{name}.log"));
            let (so, se) = self.log_file(name)?;
            let mut compositor = Command::new(example)
                .args(["--socket", &socket_name, "--exit-when-idle"])
                .stdin(Stdio::null())
                .stdout(so)
                .stderr(se)
                .spawn()
                .map_err(|e| format!("spawning {}: {e}", example.display()))?;
            wait_for_socket(&mut compositor, &socket, "the minimal compositor")?;
            let mut c = self.spawn_client(name, client, &socket, compositor.id())?;
            let (code, timed_out) = wait_limited(&mut c, limit);
            // It exits by itself once the client is gone; its summary is the result.
            let exited = try_wait_for(&mut compositor, Duration::from_secs(10));
            if exited.is_none() {
                terminate(&mut compositor);
                return Err("the minimal compositor did not exit after its client".into());
            }
            if code != 0 || timed_out {
                return Ok((code, timed_out));
            }
            let output = std::fs::read_to_string(&log).map_err(|e| format!("{name}.log: {e}"))?;
            let stats = stats_from_output(&output)?;
            let path = self.out.join(format!("{name}.stats.json"));
            std::fs::write(&path, stats).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((exited.unwrap_or(-1), false))
        })();
        self.finish(name, start, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_latch_line_becomes_stats_in_syncbridges_shape() {
        let out = "minimal_compositor: listening on x\n\
                   minimal_compositor: frames_presented=3 commits=9\n\
                   minimal_compositor: latch_us latency=396.5/6678.0/150 wake=139.1/4441.2/150 \
                   apply=241.0/610.0/150 state=60.2/400.0/150 bridge_hook=72.0/323.0/150 \
                   handlers=103.0/269.0/150\n";
        let json: serde_json::Value =
            serde_json::from_str(&stats_from_output(out).expect("parses")).expect("json");
        assert_eq!(json["sync"]["latch_latency"]["p50_us"], 396.5);
        assert_eq!(json["sync"]["latch_latency"]["count"], 150.0);
        assert_eq!(json["sync"]["latch_apply_bridge_hook"]["p99_us"], 323.0);
        assert_eq!(json["sync"]["latch_wake"]["p50_us"], 139.1);
    }

    #[test]
    fn no_latch_line_or_a_missing_part_is_an_error() {
        assert!(stats_from_output("minimal_compositor: frames_presented=3\n").is_err());
        let partial = "minimal_compositor: latch_us latency=1/2/3 wake=1/2/3\n";
        assert!(stats_from_output(partial).is_err());
    }
}
