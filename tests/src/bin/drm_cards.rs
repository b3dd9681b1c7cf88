//! Lists DRM device nodes with the driver name DRM_IOCTL_VERSION reports, and for
//! virtio_gpu whether the device has virgl (the virtio-gpu GETPARAM ioctl,
//! VIRTGPU_PARAM_3D_FEATURES). The VM's start-up runs it so every log shows which card is
//! which (card numbers are not stable, vgem/vkms have no sysfs driver link, and the VM
//! has two virtio_gpu cards).
//!
//! `drm-cards --single-head` forces the 2D virtio-gpu card's second head off (see
//! [`virtio_gpu::single_head_plain`]).
//! `drm-cards --find DRIVER [--render] [--virgl | --no-virgl]` prints just the path of
//! the first primary (or render) node of DRIVER, for scripts; for virtio_gpu, `--virgl`
//! or `--no-virgl` picks the virgl or the 2D card. It exits 1 when there is none.

use std::path::PathBuf;

use syncbridge_tests::kernel::card::{find_nodes, Card, NodeKind};
use syncbridge_tests::kernel::virtio_gpu::{self, find_virtio_gpu_nodes, VirtioGpu};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--find") {
        find(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("--single-head") {
        if let Err(e) = virtio_gpu::single_head_plain() {
            eprintln!("drm-cards: switching off the 2D card's second head: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut nodes: Vec<_> = match std::fs::read_dir("/dev/dri") {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| !p.is_dir())
            .collect(),
        Err(e) => {
            eprintln!("drm-cards: /dev/dri: {e}");
            std::process::exit(1);
        }
    };
    nodes.sort();
    for node in nodes {
        match Card::open(&node) {
            Ok(card) if card.driver == virtio_gpu::DRIVER => {
                let virgl = match virtio_gpu::path_has_virgl(&node) {
                    Ok(true) => "yes".to_string(),
                    Ok(false) => "no".to_string(),
                    Err(e) => format!("unknown ({e})"),
                };
                println!(
                    "drm-cards: {} driver={} virgl={virgl}",
                    node.display(),
                    card.driver
                );
            }
            Ok(card) => println!("drm-cards: {} driver={}", node.display(), card.driver),
            Err(e) => println!("drm-cards: {} error={e}", node.display()),
        }
    }
}

fn find(args: &[String]) {
    let usage = "usage: drm-cards --find DRIVER [--render] [--virgl | --no-virgl]";
    let Some(driver) = args.first() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let kind = if has("--render") {
        NodeKind::Render
    } else {
        NodeKind::Primary
    };
    let which = match (has("--virgl"), has("--no-virgl")) {
        (true, false) => Some(VirtioGpu::Virgl),
        (false, true) => Some(VirtioGpu::Plain),
        (false, false) => None,
        (true, true) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let found: Vec<PathBuf> = match which {
        Some(which) if driver == virtio_gpu::DRIVER => find_virtio_gpu_nodes(which, kind),
        Some(_) => {
            eprintln!(
                "drm-cards: --virgl/--no-virgl apply to {} only",
                virtio_gpu::DRIVER
            );
            std::process::exit(2);
        }
        None => find_nodes(driver, kind),
    };
    match found.first() {
        Some(path) => println!("{}", path.display()),
        None => {
            eprintln!("drm-cards: no {kind:?} node of driver {driver} ({which:?})");
            std::process::exit(1);
        }
    }
}
