//! `syncbridge`: the reference compositor binary. Everything lives in the library;
//! this is argument parsing, logging setup and the exit status.

use anyhow::Context;
use clap::Parser;
use syncbridge_compositor::{backend, cli::Cli, state::ExitReason, timeline, Server};

fn main() -> std::process::ExitCode {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
    let cli = Cli::parse();
    // The timeline recorder has a filter of its own: RUST_LOG does not turn it off.
    let recorder = cli.timeline.as_ref().map(|_| timeline::Recorder::new());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                ),
        )
        .with(recorder.as_ref().map(|r| r.layer()))
        .init();

    match run(cli, recorder) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(err) => {
            tracing::error!("{err:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(cli: Cli, recorder: Option<timeline::Recorder>) -> anyhow::Result<u8> {
    // Before anything opens fds; commands started with `--` get the original limit back.
    syncbridge_compositor::fd_limit::raise_to_hard_limit();
    let selection = backend::select(cli.backend);
    tracing::info!(backend = selection.kind.name(), reason = %selection.reason, "backend");

    let mut config = cli.compositor_config();
    config.backend = selection.kind;
    let mut server = Server::new(config).context("starting the compositor")?;
    syncbridge_compositor::server::log_startup(&server.state);
    server.handle_signals()?;
    if let Some(path) = &cli.screenshot {
        syncbridge_compositor::screenshot::on_sigusr1(&mut server, path.clone())?;
    }
    let socket = server.listen(cli.socket.as_deref())?;
    if !cli.command.is_empty() {
        server.spawn_command(&cli.command, &socket)?;
    }

    let reason = server.run()?;
    // The screenshot is written after the stats, so a backend that cannot capture still
    // leaves its stats behind; its failure still makes the exit status non-zero.
    let screenshot = cli.screenshot.as_ref().map(|path| {
        server
            .state
            .write_screenshot(0, path)
            .context("writing the --screenshot PNG")
    });

    let report = server.state.stats_report();
    tracing::info!(
        frames = report.frames_presented_total,
        commits = report.commits,
        protocol_errors = report.protocol_errors_sent,
        "final stats"
    );
    if let Some(path) = &cli.stats_json {
        report
            .write(path)
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "stats written");
    }
    if let (Some(recorder), Some(path)) = (&recorder, &cli.timeline) {
        let json = recorder
            .write(path)
            .with_context(|| format!("writing the --timeline chart {}", path.display()))?;
        tracing::info!(chart = %path.display(), records = %json.display(), "timeline written");
    }
    if let Some(result) = screenshot {
        result?;
    }

    Ok(match reason {
        Some(ExitReason::ChildExited(code)) => u8::try_from(code).unwrap_or(1),
        Some(ExitReason::FrameLimit | ExitReason::Signal | ExitReason::WindowClosed) | None => 0,
    })
}
