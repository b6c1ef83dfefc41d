//! The runner of the test files that start themselves again as a subprocess (`floods.rs`,
//! `packet_loss.rs`; `harness = false` in `server/Cargo.toml`). Their `main` hands this
//! module its tests and its roles:
//!
//! - `<test binary> --role <name>` plays that role and nothing else (the flood attacker, the
//!   client inside the lossy namespace). A role is not a test: it is never listed, never
//!   counted, and it fails (exits non-zero) when what it was started with is missing.
//! - otherwise the tests run one after the other, as `cargo test` runs any test binary: name
//!   filters, `--exact`, `--skip` and `--list` work, the other libtest flags are accepted and
//!   ignored (output is never captured), and a failed test makes the binary exit with 101.

use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::Instant;

/// A named test or role of a `harness = false` test file.
pub(crate) type Entry = (&'static str, fn());

/// Runs the role named by `--role`, or else the `tests` selected by the arguments.
pub(crate) fn main(tests: &[Entry], roles: &[Entry]) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--role") {
        let name = args.get(at + 1).map(String::as_str).unwrap_or("");
        let Some((_, role)) = roles.iter().find(|(n, _)| *n == name) else {
            eprintln!(
                "unknown role `{name}`; roles: {:?}",
                roles.iter().map(|(n, _)| n).collect::<Vec<_>>()
            );
            return ExitCode::from(2);
        };
        role();
        return ExitCode::SUCCESS;
    }

    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let (mut exact, mut list, mut only_ignored) = (false, false, false);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--ignored" => only_ignored = true,
            "--skip" => skips.extend(rest.next().cloned()),
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                rest.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_owned()),
        }
    }
    let matches = |name: &str, pattern: &str| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    // None of these tests is ignored: `--ignored` alone selects nothing.
    let selected: Vec<&Entry> = tests
        .iter()
        .filter(|_| !only_ignored)
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|s| matches(name, s)))
        .collect();
    if list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }

    let started = Instant::now();
    let plural = if selected.len() == 1 { "" } else { "s" };
    println!("\nrunning {} test{plural}", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        println!("test {name} ...");
        let _ = std::io::stdout().flush();
        let ok = std::panic::catch_unwind(AssertUnwindSafe(test)).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len(),
        tests.len() - selected.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}

/// Runs `test` on a runtime like `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`.
pub(crate) fn block_on<F: std::future::Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

/// The arguments that start this test binary again in `role`.
pub(crate) fn role_args(role: &str) -> [&str; 2] {
    ["--role", role]
}
