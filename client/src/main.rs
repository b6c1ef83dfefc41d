//! `qpq`: the quicproquo command-line client.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Talk to a quicproquo server: register, log in, send and receive end-to-end messages.
///
/// The profile directory (--profile) keeps your identity key and session between runs, with
/// private file modes. Passwords are read from QPQ_PASSWORD, from stdin with
/// --password-stdin, or asked for on the terminal.
///
/// Example:
///   qpq --server 127.0.0.1:5001 --ca-cert data/server-cert.der register alice
///   qpq send bob "hello"
///   qpq watch
#[derive(Debug, Parser)]
#[command(name = "qpq", version)]
pub(crate) struct Cli {
    /// Server address (host:port) [default: the profile's, else 127.0.0.1:5001].
    #[arg(long, env = "QPQ_SERVER", global = true)]
    pub(crate) server: Option<String>,
    /// The server's certificate (DER) to pin [default: the profile's, else
    /// data/server-cert.der].
    #[arg(long, env = "QPQ_CA_CERT", global = true)]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Profile directory holding the identity key and session [default: ~/.qpq].
    #[arg(long, env = "QPQ_PROFILE", global = true)]
    pub(crate) profile: Option<PathBuf>,
    /// Print JSON (one object per line) instead of text, for scripts.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Read the password from the first line of stdin.
    #[arg(long, global = true)]
    pub(crate) password_stdin: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create an account: generates an identity key, registers with OPAQUE and logs in.
    ///
    /// Example: qpq register alice
    Register {
        /// The username: 1-64 of a-z 0-9 . _ -
        username: String,
    },
    /// Log in with OPAQUE and keep the session in the profile.
    ///
    /// Example: qpq login alice
    Login {
        /// The username [default: the profile's].
        username: Option<String>,
        /// Bind the session to this device id (hex).
        #[arg(long)]
        device: Option<String>,
    },
    /// Forget the session kept in the profile.
    ///
    /// Example: qpq logout
    Logout,
    /// Send a message to a user (by username, or by identity key in hex).
    ///
    /// Example: qpq send bob "lunch at noon?"
    Send {
        /// Recipient: username or 64 hex digits of an identity key.
        recipient: String,
        /// The message text (or use --file).
        message: Option<String>,
        /// Send the contents of this file instead.
        #[arg(long, conflicts_with = "message")]
        file: Option<PathBuf>,
        /// Time to live in seconds (0: the server's default).
        #[arg(long, default_value_t = 0)]
        ttl: u32,
    },
    /// Take messages off your queue and print them (they are removed).
    ///
    /// Example: qpq fetch --limit 10
    Fetch {
        /// Most messages to take (0: the server's default page).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Wait up to this many seconds for a message when the queue is empty.
        #[arg(long)]
        wait: Option<u32>,
    },
    /// Print queued messages without removing them (acknowledge them with `ack`).
    ///
    /// Example: qpq peek
    Peek {
        /// Most messages to show (0: the server's default page).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Show only messages after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Remove messages from your queue by sequence number.
    ///
    /// Example: qpq ack 1 2 3
    Ack {
        /// Sequence numbers.
        #[arg(required = true)]
        seqs: Vec<u64>,
    },
    /// Print server pushes (new messages, typing, presence, membership) as they arrive.
    ///
    /// Example: qpq watch --count 1 --timeout 30
    Watch {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Look a user up: username to identity key.
    ///
    /// Example: qpq whois bob
    Whois {
        /// The username.
        username: String,
    },
    /// Check that the server is up: status, version, uptime.
    ///
    /// Example: qpq health
    Health,
    /// Delete your account and everything the server keeps for it. Irreversible.
    ///
    /// Example: qpq delete-account --yes
    DeleteAccount {
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("qpq: {error:#}");
            ExitCode::FAILURE
        }
    }
}
