//! A progress bar on stderr for long transfers.
//!
//! On a terminal it redraws one line in place; otherwise (a pipe, a log file) it prints a
//! line at each quarter, so logs stay short. Nothing is printed for transfers that fit in one
//! step: a bar that jumps from 0 to 100 % says nothing.

use std::io::{IsTerminal, Write};
use std::time::Instant;

const WIDTH: u64 = 30;

pub(crate) struct Progress {
    label: &'static str,
    total: u64,
    enabled: bool,
    tty: bool,
    /// Last percentage drawn (terminal) or last quarter printed (otherwise).
    last: Option<u64>,
    started: Instant,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

impl Progress {
    /// A bar for `total` bytes, shown only when `total` is more than `step` (one chunk).
    pub(crate) fn new(label: &'static str, total: u64, step: u64) -> Self {
        Self {
            label,
            total,
            enabled: total > step,
            tty: std::io::stderr().is_terminal(),
            last: None,
            started: Instant::now(),
        }
    }

    /// Records that `done` of the total bytes are through.
    pub(crate) fn update(&mut self, done: u64) {
        if !self.enabled || self.total == 0 {
            return;
        }
        let percent = (done.min(self.total) * 100) / self.total;
        let mut err = std::io::stderr().lock();
        if self.tty {
            if self.last == Some(percent) {
                return;
            }
            self.last = Some(percent);
            let filled = (percent * WIDTH) / 100;
            let bar: String = (0..WIDTH)
                .map(|i| if i < filled { '#' } else { '.' })
                .collect();
            let _ = write!(
                err,
                "\r{} [{bar}] {percent:>3}% {:.1}/{:.1} MiB",
                self.label,
                mib(done),
                mib(self.total)
            );
            if percent == 100 {
                let _ = writeln!(err, " in {:.1} s", self.started.elapsed().as_secs_f64());
            }
        } else {
            let quarter = percent / 25;
            if self.last.is_some_and(|last| last >= quarter) {
                return;
            }
            self.last = Some(quarter);
            let _ = writeln!(
                err,
                "{} {:>3}% {:.1}/{:.1} MiB",
                self.label,
                quarter * 25,
                mib(done),
                mib(self.total)
            );
        }
        let _ = err.flush();
    }
}
