//! How times, sizes and tables are written for people (the `--json` output carries the raw
//! numbers instead).

use std::time::{SystemTime, UNIX_EPOCH};

/// The clock, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long ago `unix_ms` was, for people: "5 min ago" ("never" for 0).
pub(crate) fn time_text(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "never".to_owned();
    }
    let age = now_ms().saturating_sub(unix_ms) / 1000;
    match age {
        0..60 => format!("{age} s ago"),
        60..3600 => format!("{} min ago", age / 60),
        3600..86_400 => format!("{} h ago", age / 3600),
        _ => format!("{} days ago", age / 86_400),
    }
}

/// How far ahead `unix_ms` is, for people: "in 59 min".
pub(crate) fn until_text(unix_ms: u64) -> String {
    let left = unix_ms.saturating_sub(now_ms()) / 1000;
    match left {
        0..60 => format!("in {left} s"),
        60..3600 => format!("in {} min", left / 60),
        3600..86_400 => format!("in {} h", left / 3600),
        _ => format!("in {} days", left / 86_400),
    }
}

/// A byte count for people: "1.5 KiB".
pub(crate) fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Rows printed as columns, each as wide as its widest cell (the last one unpadded).
pub(crate) fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}
