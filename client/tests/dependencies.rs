//! The library's dependency graph holds nothing only the `qpq` binary needs: the command line
//! (clap) belongs to the qpq-cli package, and `anyhow` to binaries. Checked on `cargo tree`,
//! the graph that a program using the library compiles.

use std::process::Command;

/// The names of the packages `cargo tree` lists for the library, following normal
/// (not dev, not build) dependencies down to `depth` (`None`: all the way).
fn dependencies(depth: Option<u32>) -> Vec<String> {
    let mut command = Command::new(env!("CARGO"));
    command
        .args(["tree", "--package", "qpq-client", "--edges", "normal"])
        .args([
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--locked",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Some(depth) = depth {
        command.args(["--depth", &depth.to_string()]);
    }
    let output = command.output().expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let packages: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(
        packages.iter().any(|p| p == "qpq-runtime"),
        "the library's dependencies lack qpq-runtime: is the scan broken? {packages:?}"
    );
    packages
}

#[test]
fn the_library_does_not_depend_on_clap() {
    let clap: Vec<String> = dependencies(None)
        .into_iter()
        .filter(|p| p == "clap" || p.starts_with("clap_"))
        .collect();
    assert!(
        clap.is_empty(),
        "the qpq-client library depends on {clap:?}: command-line parsing belongs to cli/ (qpq-cli)"
    );
}

#[test]
fn the_library_does_not_use_anyhow() {
    // A proc-macro further down may use anyhow; the library itself returns its own errors.
    assert!(
        !dependencies(Some(1)).iter().any(|p| p == "anyhow"),
        "the qpq-client library depends on anyhow: give it a thiserror enum, anyhow is for binaries"
    );
}
