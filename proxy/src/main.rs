use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = kakunin::cli::Cli::parse();
    // The demo prints its own story; the proxy logs what it does.
    let default_level = match cli.command {
        kakunin::cli::Command::Demo => "warn",
        _ => "info",
    };
    // Operational log on stderr; the audit log has its own sink.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("KAKUNIN_LOG")
                .unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match kakunin::cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kakunin: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
