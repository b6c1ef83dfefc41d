//! `qpq`: the quicproquo command-line client.
//!
//! `args` parses the command line, `context` opens the profile and holds what every command
//! shares, and `commands::<area>` runs the command; this file only connects them.

mod args;
mod commands;
mod context;
mod format;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::commands::{
    account, admin, blobs, channels, devices, keys, kt, lookup, messages, recovery,
};
use crate::context::Ctx;

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

/// Runs one command.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut ctx = Ctx::new(&cli)?;
    match cli.command {
        Command::Register { username } => account::register(&mut ctx, &username).await,
        Command::Login { username, device } => account::login(&mut ctx, username, device).await,
        Command::Logout => account::logout(&ctx),
        Command::DeleteAccount { yes } => account::delete_account(&ctx, yes).await,
        Command::Send {
            recipient,
            message,
            file,
            ttl,
        } => messages::send(&ctx, recipient, message, file, ttl).await,
        Command::Fetch { limit, wait } => messages::fetch(&ctx, limit, wait).await,
        Command::Peek { limit, after } => messages::peek(&ctx, limit, after).await,
        Command::Ack { seqs } => messages::ack(&ctx, seqs).await,
        Command::Watch { count, timeout } => messages::watch(&ctx, count, timeout).await,
        Command::Whois { username } => lookup::whois(&ctx, username).await,
        Command::Health => lookup::health(&ctx).await,
        Command::Keys { command } => keys::run(&mut ctx, command).await,
        Command::Channel { command } => channels::run(&ctx, command).await,
        Command::Blob { command } => blobs::run(&ctx, command).await,
        Command::Device { command } => devices::run(&ctx, command).await,
        Command::Recovery { command } => recovery::run(&mut ctx, command).await,
        Command::Kt { command } => kt::run(&ctx, command).await,
        Command::Report {
            user,
            seq,
            channel,
            category,
            reason,
            evidence,
        } => admin::report(&ctx, &user, seq, channel, &category, reason, evidence).await,
        Command::Admin { command } => admin::run(&ctx, command).await,
    }
}
