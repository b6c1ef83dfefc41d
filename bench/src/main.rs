//! `qpq-bench`: measures quicproquo on this machine and prints tables.
//!
//! Run everything: `cargo run --release --locked -p qpq-bench`
//! One section:    `cargo run --release --locked -p qpq-bench -- enqueue`
//!
//! Every figure in a table is measured in the same run, side by side, so ratios stay
//! meaningful on a shared, noisy machine; absolute numbers vary between runs.

mod bulk;
mod enqueue;
mod instances;
mod messenger;
mod rpc;
mod services;
mod stats;
mod storage;

use clap::{Parser, ValueEnum};

/// Benchmarks of quicproquo, printed as tables.
#[derive(Debug, Parser)]
#[command(name = "qpq-bench")]
struct Args {
    /// Sections to run (all when none is given).
    sections: Vec<Section>,
    /// Seconds to measure each configuration.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Idle connections to open in the `connections` section.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Small RPC: quicproquo vs raw quinn vs tonic, 1/16/256 in flight.
    Rpc,
    /// Durable Enqueue throughput: group commit vs one sync per write.
    Enqueue,
    /// Bulk transfer MB/s, 64 KiB and 16 MiB, quicproquo vs tonic over TLS.
    Bulk,
    /// Durable Enqueue on the embedded store and on PostgreSQL, side by side.
    Storage,
    /// Two instances on one PostgreSQL and NATS: cross-instance wake-ups, Enqueue through 1 and 2.
    Instances,
    /// FetchWait wake-up latency with 1,000 parked waiters.
    Wakeup,
    /// Server RSS with 10,000 idle authenticated connections.
    Connections,
    /// OPAQUE logins per second and the server's cost per login.
    Opaque,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sections = if args.sections.is_empty() {
        vec![
            Section::Rpc,
            Section::Enqueue,
            Section::Storage,
            Section::Instances,
            Section::Wakeup,
            Section::Bulk,
            Section::Connections,
            Section::Opaque,
        ]
    } else {
        args.sections.clone()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let duration = std::time::Duration::from_secs_f64(args.seconds);
    for section in sections {
        match section {
            Section::Rpc => rpc::run(duration)?,
            Section::Enqueue => runtime.block_on(enqueue::run(duration))?,
            Section::Storage => runtime.block_on(storage::run(duration))?,
            Section::Instances => runtime.block_on(instances::run(duration))?,
            Section::Bulk => bulk::run(duration)?,
            Section::Wakeup => runtime.block_on(messenger::wakeup(500))?,
            Section::Connections => runtime.block_on(messenger::connections(args.connections))?,
            Section::Opaque => runtime.block_on(messenger::opaque(duration))?,
        }
    }
    Ok(())
}
