//! `cargo xtask`: the project's set-up, test, VM and run commands.
//!
//! - `cargo xtask test`: installs what is missing, runs every host test and WLCS (the
//!   Wayland conformance suite), boots the real-kernel VM and runs the VM suite there,
//!   then prints `N passed, N failed`. The host part includes the MSRV check (`msrv.rs`).
//! - `cargo xtask vm --exec "CMD"`: boots Debian's 6.12 kernel under QEMU with
//!   virtio-gpu (a 2D card and a virgl card), vgem, vivid and VKMS, runs CMD as root
//!   inside, exits with its status.
//! - `cargo xtask run`: the README's run command.
//! - `cargo xtask install`: only the installation step.
//! - `cargo xtask clean-room -- test`: any of these in a fresh Debian root (CI's way).

mod bench;
mod clean_room;
mod cmd;
mod gl_display;
mod install;
mod kernel;
mod msrv;
mod preflight;
mod run;
mod summary;
mod test;
mod vm;
mod wlcs;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "syncbridge's project commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build, the tests and the VM need (Debian/Ubuntu), and prepare
    /// the VM kernel cache.
    Install,
    /// Run every test: host tests, then the VM suite on a real 6.12 kernel.
    Test(test::TestArgs),
    /// Boot the test VM and run a command inside it as root.
    Vm(vm::VmArgs),
    /// Run the compositor: nested on a desktop, on a TTY with a seat and GPU, otherwise
    /// a demo on the VM's virtual KMS device.
    Run(run::RunArgs),
    /// Benchmarks in the VM (latch latency, commit->present, CPU per frame, bounds,
    /// release timing) against Weston 10; results in target/bench/.
    Bench(bench::BenchArgs),
    /// Run an xtask command (`test`, `run`, ...) in a fresh Debian root made for this
    /// run, as on a new machine: `cargo xtask clean-room [--suite trixie] -- test`.
    CleanRoom(clean_room::CleanRoomArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Install => install::install_all().map(|_| 0),
        Command::Test(args) => test::run(args),
        Command::Vm(args) => vm::run(args),
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::run(args),
        Command::CleanRoom(args) => clean_room::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::exit(1);
        }
    }
}
