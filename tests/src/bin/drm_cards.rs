//! Lists DRM device nodes with the driver name DRM_IOCTL_VERSION reports. The VM's
//! start-up runs it so every log shows which card is which (card numbers are not stable,
//! and vgem/vkms have no sysfs driver link).
//!
//! `drm-cards --find DRIVER [--render]` prints just the path of the first primary (or
//! render) node of DRIVER, for scripts; it exits 1 when there is none.

use syncbridge_tests::kernel::card::{find_nodes, Card, NodeKind};

#[derive(Debug, clap::Parser)]
#[command(name = "drm-cards", about = "Lists DRM device nodes and their drivers")]
struct Args {
    /// Print only the path of the first node of this driver (exit 1 if there is none).
    #[arg(long, value_name = "DRIVER")]
    find: Option<String>,
    /// With --find: a render node instead of a primary one.
    #[arg(long, requires = "find")]
    render: bool,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    if let Some(driver) = &args.find {
        let kind = if args.render {
            NodeKind::Render
        } else {
            NodeKind::Primary
        };
        match find_nodes(driver, kind).first() {
            Some(path) => println!("{}", path.display()),
            None => {
                eprintln!("drm-cards: no {kind:?} node of driver {driver}");
                std::process::exit(1);
            }
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
            Ok(card) => println!("drm-cards: {} driver={}", node.display(), card.driver),
            Err(e) => println!("drm-cards: {} error={e}", node.display()),
        }
    }
}
