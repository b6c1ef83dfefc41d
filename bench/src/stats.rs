//! Latency percentiles and table printing.

use std::time::Duration;

/// Throughput and latency of one configuration.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) ops: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
    /// CPU time the server's thread spent during the run, where measured.
    pub(crate) server_cpu: Option<Duration>,
}

impl Sample {
    pub(crate) fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Server CPU time per operation, where measured.
    pub(crate) fn server_cpu_per_op(&self) -> Option<Duration> {
        let cpu = self.server_cpu?;
        (self.ops > 0).then(|| Duration::from_secs_f64(cpu.as_secs_f64() / self.ops as f64))
    }

    pub(crate) fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }
}

/// Formats a duration in microseconds or milliseconds.
pub(crate) fn fmt_latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// Prints a Markdown table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    println!("| {} |", headers.join(" | "));
    println!(
        "|{}|",
        headers.iter().map(|_| "---:").collect::<Vec<_>>().join("|")
    );
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
    println!();
}

/// CPU time used so far by this process's thread named `name` (Linux: the scheduler's
/// nanosecond count in `/proc/self/task/*/schedstat`); `None` where that is not available.
/// CPU per operation moves far less than throughput when the machine is shared.
pub(crate) fn thread_cpu(name: &str) -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let ns = stat.split_whitespace().next()?.parse().ok()?;
            return Some(Duration::from_nanos(ns));
        }
    }
    None
}
