//! The `cargo xtask run` demo path (assets/demo.sh), bounded, inside the VM: syncbridge
//! on the virgl card with GLES, a fullscreen GL client scanned out directly, then an
//! explicit-sync and an implicit-sync GL client composited. Checks that the release paths
//! ran (out-fence releases of scanned-out buffers; render fences handed to the bridge and
//! the composited clients' buffers released) and that the screenshot shows the clients.

use std::path::PathBuf;
use std::process::Command;

use syncbridge_tests::kernel::require_vm;
use syncbridge_tests::screenshot::read_png;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn demo_shows_direct_scanout_and_composition_with_every_release_path() {
    require_vm();
    let bin = std::env::var("SYNCBRIDGE_BIN").expect("SYNCBRIDGE_BIN (set by cargo xtask test)");
    let scratch = std::env::var("SYNCBRIDGE_SCRATCH").unwrap_or_else(|_| "/tmp".into());
    let out = PathBuf::from(scratch).join("vm_demo");
    let commits = 120;
    let status = Command::new("sh")
        .arg(workspace().join("assets/demo.sh"))
        .arg(&out)
        .arg(commits.to_string())
        .env("SYNCBRIDGE_BIN", &bin)
        .status()
        .expect("running assets/demo.sh");
    let log = std::fs::read_to_string(out.join("compositor.log")).unwrap_or_default();
    assert!(
        status.success(),
        "demo.sh failed ({status}); compositor log:\n{log}"
    );

    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("stats.json")).expect("stats.json written"),
    )
    .expect("stats.json is JSON");
    let kms = &stats["kms"];
    let release = &stats["sync"]["release"];
    assert_eq!(kms["renderer"]["name"], "gles", "{}", kms["renderer"]);
    assert_eq!(count(&stats["protocol_errors_sent"]), 0, "{stats}");
    assert_eq!(count(&kms["commit_errors"]), 0, "{kms}");
    assert!(
        count(&stats["commits"]) >= 2 * commits,
        "both phases made their commits: {}",
        stats["commits"]
    );
    // Phase 1: the fullscreen client's buffers on the plane, released at replacement.
    assert!(
        count(&kms["direct_scanout_frames"]) >= 30,
        "direct scanout frames: {}",
        kms["direct_scanout_frames"]
    );
    assert!(
        count(&kms["early_releases"]) >= 10,
        "out-fence releases of scanned-out buffers: {}",
        kms["early_releases"]
    );
    // Phase 2: composited, render fences to both kinds of client.
    assert!(
        count(&kms["in_fence"]["plane_commits_with_render_fence"]) >= 1,
        "composited commits carried the render fence as IN_FENCE_FD: {}",
        kms["in_fence"]
    );
    // The composited frames handed their render fences to the bridge. Whether a fence is
    // still running when its buffer is released (imported into an implicit buffer, sent
    // in fenced_release) or already done (released at once) is the host GPU's timing:
    // 0 to 298 fenced releases were seen in runs here, so the release paths are asserted
    // to have run, and the split is printed by `cargo xtask run`.
    assert!(
        count(&stats["render_sync"]["exported"]) >= 1,
        "render fences handed to the bridge: {}",
        stats["render_sync"]
    );
    assert!(
        count(&release["explicit_fenced_releases"])
            + count(&release["explicit_immediate_releases"])
            >= 5,
        "the explicit-sync client's buffers were released: {release}"
    );
    assert!(
        count(&stats["sync"]["commits_waited"]["explicit_sync_v1"]) >= 1,
        "explicit acquire fences were waited for: {}",
        stats["sync"]["commits_waited"]
    );

    assert_timeline_shows_each_release_against_its_flip(&out);

    let image = read_png(&out.join("screen.png")).expect("screen.png written");
    let coloured = image.coloured_pixels();
    // weston-simple-egl's triangle (~5,000 px at 250x250) and weston-simple-dmabuf-egl's
    // gradient square (~16,000 px), partly overlapping.
    assert!(
        coloured >= 8_000,
        "the composited clients are on screen: {coloured} coloured pixels"
    );
}

/// `--timeline`: the chart is of the scanned-out client (phase 1), and its records show
/// what the chart draws: each charted buffer went on the plane, came off it at a later
/// commit (with that commit's out-fence), was released, and its release is set against
/// the page flip of that commit (the one that ended the display's reads of it).
fn assert_timeline_shows_each_release_against_its_flip(out: &std::path::Path) {
    let chart = std::fs::read_to_string(out.join("timeline.svg")).expect("timeline.svg written");
    assert!(chart.starts_with("<svg"), "an SVG chart");
    let records: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("timeline.json")).expect("timeline.json written"),
    )
    .expect("timeline JSON");
    let charted: Vec<u64> = records["charted_buffers"]
        .as_array()
        .expect("charted_buffers")
        .iter()
        .map(count)
        .collect();
    assert_eq!(
        charted.len(),
        6,
        "six buffers charted: {}",
        records["charted_buffers"]
    );
    let mut fenced = 0;
    for id in &charted {
        let row = records["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| count(&r["buffer"]) == *id))
            .unwrap_or_else(|| panic!("buffer {id} has a record"));
        assert!(
            chart.contains(&format!(">buffer {id}<")),
            "buffer {id} has a row in the chart"
        );
        let on = row["on_plane"].as_array().map_or(0, Vec::len);
        assert!(
            on >= 1,
            "a charted buffer of phase 1 was on the plane: {row}"
        );
        assert!(!row["released"].is_null(), "it was released: {row}");
        let off = row["off_plane"].as_array().cloned().unwrap_or_default();
        assert!(!off.is_empty(), "it came off the plane: {row}");
        fenced += usize::from(off.iter().any(|o| o[1] == true));
    }
    assert!(
        fenced >= 1,
        "charted buffers came off the plane with the commit's out-fence: {}",
        records["rows"]
    );
    // The release's lead over the flip of the commit that took the buffer off the plane.
    let leads: Vec<i64> = records["charted_release_lead_ns"]
        .as_array()
        .expect("charted_release_lead_ns")
        .iter()
        .filter_map(|l| l.as_i64())
        .collect();
    let early = leads.iter().filter(|l| **l > 0).count();
    println!("timeline: release leads over their flips (ns): {leads:?}");
    println!("timeline: {early} of 6 charted buffers released before their flip, {fenced} with the out-fence");
    // Whether a release beats its flip is the emulated CPU's timing (3 of 6 in a run
    // here): the chart must show each one's flip, whichever side it falls on.
    assert_eq!(
        leads.len(),
        6,
        "each charted release is set against the flip of the commit that took its buffer off the plane: {}",
        records["charted_release_lead_ns"]
    );
}
