//! `syncbridge --timeline`: the recorded life of an shm client's buffers on the headless
//! backend (commit, applied, sampled by the render, released), linked per buffer in the
//! JSON records and drawn in the SVG chart. The kernel-facing events (acquire fences,
//! planes, out-fences, page flips) are checked on VKMS in `vm_tty_presentation`.

use std::time::Duration;

use syncbridge_tests::client::{Commit, TestClient};
use syncbridge_tests::compositor_bin::{scratch, start_syncbridge, Options};
use wayland_client::protocol::wl_shm::Format::Argb8888;

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn timeline_links_each_shm_buffer_from_commit_to_release_and_draws_the_chart() {
    let svg = scratch().join("timeline-headless.svg");
    let json = svg.with_extension("json");
    let _ = std::fs::remove_file(&svg);
    let _ = std::fs::remove_file(&json);
    let mut opts = Options::headless(None);
    opts.extra_args = vec!["--timeline".into(), svg.display().to_string()];
    let rb = start_syncbridge("timeline", &opts);
    let mut c = TestClient::connect(&rb.socket).expect("connect");
    c.bind_globals();
    let window = c.create_toplevel();
    let buffers: Vec<_> = (0..3u32)
        .map(|i| c.create_shm_buffer_filled(64, 48, Argb8888, 0xff20_8000 + i))
        .collect();
    // Frame-callback driven: each commit waits for the previous frame, rotating three
    // buffers, so every replaced buffer is released.
    let frames = 24;
    for n in 0..frames {
        c.attach(window, Some(buffers[n % 3]));
        c.commit(window, Commit::frame_and_feedback());
        let want = n + 1;
        assert!(
            c.blocking_dispatch_until(Duration::from_secs(20), |rec| {
                rec.surfaces[window].frames.len() >= want
            }),
            "frame callback {want} within 20 s"
        );
    }
    c.blocking_roundtrip();
    let releases: usize = buffers.iter().map(|b| c.rec.releases(*b)).sum();
    drop(c);
    let (_stats, log) = rb.stop();
    assert!(log.contains("timeline written"), "log:\n{log}");

    let records: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{}: {e}", json.display())),
    )
    .expect("timeline JSON");
    let rows = records["rows"].as_array().expect("rows");
    let complete: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| !r["commit_ns"].is_null() && !r["released"].is_null())
        .collect();
    println!(
        "{} rows, {} complete, {releases} wl_buffer.release events seen by the client",
        rows.len(),
        complete.len()
    );
    // Every commit but the last one or two (still current at exit) was released.
    assert!(
        complete.len() >= frames - 3,
        "{} of {frames} buffers have a commit and a release: {rows:?}",
        complete.len()
    );
    for r in &complete {
        let commit = u(&r["commit_ns"]);
        let applied = u(&r["applied_ns"]);
        let released = u(&r["released"][0]);
        assert!(
            commit <= applied && applied <= released,
            "commit <= applied <= released: {r}"
        );
        let sampled = r["sampled"].as_array().expect("sampled");
        assert!(!sampled.is_empty(), "the render sampled it: {r}");
        for s in sampled {
            let t = u(&s[0]);
            assert!(applied <= t && t <= released, "sampled while current: {r}");
            // pixman copies shm on the CPU: no render fence.
            assert_eq!(s[1], false, "{r}");
        }
        assert_eq!(r["released"][1], "wl_buffer.release", "{r}");
    }
    let charted = records["charted_buffers"].as_array().expect("charted");
    assert_eq!(charted.len(), 6, "six buffers charted");
    let chart = std::fs::read_to_string(&svg).expect("chart");
    assert!(chart.starts_with("<svg"), "an SVG document");
    for id in charted {
        assert!(
            chart.contains(&format!(">buffer {}<", u(id))),
            "buffer {id} has a row in the chart"
        );
    }
    println!("chart: {}", svg.display());
}
