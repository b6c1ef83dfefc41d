//! `qpq-server`: runs the quicproquo messenger server until SIGINT or SIGTERM.

use qpq_server::{Command, Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::load() {
        Ok(config) => config,
        Err(qpq_server::ConfigError::Args(error)) => error.exit(),
        Err(error) => {
            eprintln!("qpq-server: {error}");
            std::process::exit(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .init(),
    }
    if config.command.is_some() && config.store != qpq_server::StoreChoice::Embedded {
        anyhow::bail!(
            "backup and restore copy the embedded store; with --store postgres://… back up the \
             database with pg_dump (or base backups and WAL archiving) and the data directory's \
             key files with it: see docs/running.md, \"Backups\""
        );
    }
    match &config.command {
        Some(Command::Backup { to }) => {
            println!(
                "{}",
                qpq_server::ops::backup::backup(&config.data_dir, to).await?
            );
            return Ok(());
        }
        Some(Command::Restore { from }) => {
            println!(
                "{}",
                qpq_server::ops::backup::restore(from, &config.data_dir)?
            );
            return Ok(());
        }
        None => {}
    }
    let server = qpq_server::start(config).await?;
    // A line scripts and tests can wait for, whatever the log level.
    println!("qpq-server listening on {}", server.addr);
    shutdown_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    Ok(())
}
