//! Lists DRM device nodes with the driver name DRM_IOCTL_VERSION reports. The VM's
//! start-up runs it so every log shows which card is which (card numbers are not stable,
//! and vgem/vkms have no sysfs driver link).

use syncbridge_tests::kernel::card::Card;

fn main() {
    let mut nodes: Vec<_> = match std::fs::read_dir("/dev/dri") {
        Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| !p.is_dir()).collect(),
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
