//! The `cargo xtask run` demo path (assets/demo.sh), bounded, inside the VM: syncbridge
//! on VKMS with an implicit-sync client whose fences signal late and a syncobj client.
//! Checks that both clients' frames were presented, both sync paths waited, and the
//! screenshot shows both clients' colours.

use std::path::PathBuf;
use std::process::Command;

use syncbridge_tests::kernel::require_vm;

const IMPLICIT_COLOUR: [u8; 3] = [0x30, 0x70, 0xc0];
const SYNCOBJ_COLOUR: [u8; 3] = [0xc0, 0x70, 0x30];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn presented_from_log(log: &str) -> u64 {
    // "demo-client[Implicit]: done: 120 commits, 118 presented, 0 discarded, 4.2 s"
    log.lines()
        .find_map(|l| l.split(": done: ").nth(1))
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|p| p.strip_suffix(" presented"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Pixels of `img` (RGBA8) within a small distance of `colour` (the moving bar is a
/// lighter shade, so exact matches are the plain background of each window).
fn count_colour(rgba: &[u8], colour: [u8; 3]) -> usize {
    rgba.chunks_exact(4)
        .filter(|p| {
            p[..3]
                .iter()
                .zip(colour)
                .all(|(a, b)| (i16::from(*a) - i16::from(b)).abs() <= 4)
        })
        .count()
}

#[test]
fn demo_presents_both_clients_and_writes_a_screenshot() {
    require_vm();
    let bin = std::env::var("SYNCBRIDGE_BIN").expect("SYNCBRIDGE_BIN (set by cargo xtask test)");
    let scratch = std::env::var("SYNCBRIDGE_SCRATCH").unwrap_or_else(|_| "/tmp".into());
    let out = PathBuf::from(scratch).join("vm_demo");
    let frames = 180;
    let status = Command::new("sh")
        .arg(workspace().join("assets/demo.sh"))
        .arg(&out)
        .arg(frames.to_string())
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
    let presented = stats["outputs"][0]["frames_presented"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        presented >= frames,
        "the output presented {presented} frames, expected {frames}"
    );
    assert_eq!(
        stats["protocol_errors_sent"].as_u64(),
        Some(0),
        "no protocol errors: {stats}"
    );
    let waited = &stats["sync"]["commits_waited"];
    assert!(
        waited["implicit"].as_u64().unwrap_or(0) > 0,
        "implicit commits waited on their fences: {waited}"
    );
    assert!(
        waited["syncobj"].as_u64().unwrap_or(0) > 0,
        "syncobj commits waited on their acquire points: {waited}"
    );

    for client in ["implicit", "syncobj"] {
        let log = std::fs::read_to_string(out.join(format!("{client}.log"))).unwrap_or_default();
        let n = presented_from_log(&log);
        assert!(
            n > 10,
            "the {client} client had {n} frames presented; its log:\n{log}"
        );
    }

    let file = std::fs::File::open(out.join("screen.png")).expect("screen.png written");
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert_eq!(
        info.color_type,
        png::ColorType::Rgba,
        "screenshots are RGBA"
    );
    let rgba = &buf[..info.buffer_size()];
    let implicit = count_colour(rgba, IMPLICIT_COLOUR);
    let syncobj = count_colour(rgba, SYNCOBJ_COLOUR);
    // demo.sh maps the implicit window (480x360) first and the syncobj window (320x240)
    // a second later, 32 px down and right, on top. Each has a lighter bar 1/8 of its
    // width. Even if the stacking came out the other way round, at least ~15,000 pixels of
    // the smaller window's base colour would stay visible: the floors are below that.
    assert!(
        implicit > 60_000,
        "implicit client's colour on screen: {implicit} pixels"
    );
    assert!(
        syncobj > 12_000,
        "syncobj client's colour on screen: {syncobj} pixels"
    );
}
