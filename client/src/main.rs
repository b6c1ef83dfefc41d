//! `qpq`: the quicproquo command-line client.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qpq_client::proto;

/// Talk to a quicproquo server.
///
/// Example: qpq --server 127.0.0.1:5001 --ca-cert data/server-cert.der health
#[derive(Debug, Parser)]
#[command(name = "qpq", version)]
struct Cli {
    /// Server address (host:port).
    #[arg(
        long,
        env = "QPQ_SERVER",
        default_value = "127.0.0.1:5001",
        global = true
    )]
    server: String,
    /// The server's certificate (DER) to pin, e.g. the server's data/server-cert.der.
    #[arg(
        long,
        env = "QPQ_CA_CERT",
        default_value = "data/server-cert.der",
        global = true
    )]
    ca_cert: PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the server is up: status, version, uptime.
    ///
    /// Example: qpq health
    Health,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("qpq: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = qpq_client::connect(&cli.server, &cli.ca_cert).await?;
    match cli.command {
        Command::Health => {
            let health = client.health(proto::HealthRequest {}).await?;
            let status = proto::ServingStatus::try_from(health.status)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN");
            if cli.json {
                println!(
                    "{{\"status\":\"{status}\",\"version\":\"{}\",\"uptime_secs\":{},\"server_time_unix_ms\":{}}}",
                    health.version, health.uptime_secs, health.server_time_unix_ms
                );
            } else {
                println!(
                    "{status}: qpq-server {} up {} s",
                    health.version, health.uptime_secs
                );
            }
        }
    }
    Ok(())
}
