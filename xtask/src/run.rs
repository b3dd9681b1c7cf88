//! `cargo xtask run`: the README's first command.

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::cmd::workspace_root;
use crate::install;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Arguments passed to `syncbridge` (after `--`).
    #[arg(trailing_var_arg = true)]
    pub args: Vec<String>,
}

pub fn run(args: RunArgs) -> Result<i32> {
    install::install_all()?;
    let status = Command::new(env!("CARGO"))
        .args([
            "run",
            "-q",
            "-p",
            "syncbridge-compositor",
            "--bin",
            "syncbridge",
            "--",
        ])
        .args(&args.args)
        .current_dir(workspace_root())
        .status()?;
    Ok(status.code().unwrap_or(1))
}
