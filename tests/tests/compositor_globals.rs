//! The globals syncbridge advertises on a host without a DRM device.

use syncbridge_tests::client::harness::Harness;

#[test]
fn advertises_expected_globals_and_versions() {
    let mut f = Harness::new();
    let id = f.add_client();
    let globals = f.client(id).rec.globals.clone();
    let listing: Vec<String> = globals
        .iter()
        .map(|g| format!("{} v{}", g.interface, g.version))
        .collect();
    println!("globals:\n  {}", listing.join("\n  "));

    let expected = [
        ("wl_compositor", 6),
        ("wl_subcompositor", 1),
        ("xdg_wm_base", 6),
        ("wl_shm", 1),
        ("wp_viewporter", 1),
        ("wp_presentation", 1),
        ("wp_fifo_manager_v1", 1),
        ("wp_commit_timing_manager_v1", 1),
        ("wl_seat", 1),
        ("wl_output", 4),
        ("zxdg_output_manager_v1", 3),
        // From the fence bridge (protocols/): offered without a DRM device too.
        ("zwp_linux_explicit_synchronization_v1", 2),
    ];
    for (interface, min_version) in expected {
        let global = globals
            .iter()
            .find(|g| g.interface == interface)
            .unwrap_or_else(|| panic!("{interface} is advertised; got {listing:?}"));
        assert!(
            global.version >= min_version,
            "{interface} v{} < v{min_version}",
            global.version
        );
    }
    // One output by default, one seat.
    assert_eq!(
        globals
            .iter()
            .filter(|g| g.interface == "wl_output")
            .count(),
        1
    );
    assert_eq!(
        globals.iter().filter(|g| g.interface == "wl_seat").count(),
        1
    );
    // No DRM device in the test configuration: linux-dmabuf must not be offered.
    assert!(
        !globals.iter().any(|g| g.interface == "zwp_linux_dmabuf_v1"),
        "linux-dmabuf advertised without a DRM device"
    );
    // Timelines need a DRM device with syncobj eventfd support.
    assert!(
        !globals
            .iter()
            .any(|g| g.interface == "wp_linux_drm_syncobj_manager_v1"),
        "linux-drm-syncobj-v1 advertised without a timeline device"
    );
    // Both shm formats every compositor must support.
    let formats = &f.client(id).rec.shm_formats;
    assert!(
        formats.contains(&0) && formats.contains(&1),
        "argb/xrgb8888: {formats:?}"
    );
}

#[test]
fn outputs_flag_creates_one_global_per_output() {
    let mut config = syncbridge_compositor::CompositorConfig::for_tests();
    config.outputs =
        syncbridge_compositor::CompositorConfig::headless_outputs(3, (320, 240), 30_000);
    let mut f = Harness::with_config(config);
    let id = f.add_client();
    let outputs = f
        .client(id)
        .rec
        .globals
        .iter()
        .filter(|g| g.interface == "wl_output")
        .count();
    assert_eq!(outputs, 3);
}
