//! Architecture invariants that a scan of the sources can check.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_owned()];
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Files under `root` (a folder or one file) that mention `word` as a path segment
/// (`word::`), except `allowed`.
fn offenders(root: &str, word: &str, allowed: &[&str]) -> Vec<PathBuf> {
    let root = workspace().join(root);
    rust_files(&root)
        .into_iter()
        .filter(|file| {
            let relative = file
                .strip_prefix(workspace())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            !allowed.iter().any(|a| relative.starts_with(a))
        })
        .filter(|file| {
            let text = fs::read_to_string(file).unwrap();
            text.contains(&format!("{word}::")) || text.contains(&format!("use {word}"))
        })
        .collect()
}

#[test]
fn wire_is_sans_io() {
    for word in ["quinn", "tokio"] {
        assert_eq!(
            offenders("runtime/src/wire", word, &[]),
            Vec::<PathBuf>::new(),
            "{word}"
        );
    }
}

/// The rate-limit arithmetic and the clock are pure: no runtime, no sockets, no logging
/// (callers report what the results say).
#[test]
fn limits_are_pure() {
    for word in ["quinn", "tokio", "tracing", "socket2"] {
        assert_eq!(
            offenders("runtime/src/limits.rs", word, &[]),
            Vec::<PathBuf>::new(),
            "{word}"
        );
    }
    let text = fs::read_to_string(workspace().join("runtime/src/limits.rs")).unwrap();
    for io in [
        "std::fs",
        "std::io",
        "UdpSocket",
        "TcpStream",
        "thread::sleep",
    ] {
        assert!(!text.contains(io), "limits.rs names {io}");
    }
}

/// Files under `root` that name the crate `word` (`word::…` as a path root, or `use word`),
/// except `allowed`; a child module of the same name (`self::word::…`) does not count.
fn crate_users(root: &str, word: &str, allowed: &[&str]) -> Vec<PathBuf> {
    let path = format!("{word}::");
    offenders(root, word, allowed)
        .into_iter()
        .filter(|file| {
            let text = fs::read_to_string(file).unwrap();
            text.contains(&format!("use {word}"))
                || text.match_indices(&path).any(|(at, _)| {
                    let before = &text[..at];
                    !before.ends_with("::") || before.trim_end_matches("::").ends_with(' ')
                })
        })
        .collect()
}

/// The storage engine is the fjall backend's business alone: the traits, domain types and
/// everything above them speak of the domain only.
#[test]
fn only_the_fjall_backend_names_fjall() {
    assert_eq!(
        crate_users("server/src", "fjall", &["server/src/store/fjall/"]),
        Vec::<PathBuf>::new()
    );
}

/// The same for PostgreSQL: its client crates are the PostgreSQL backend's alone.
#[test]
fn only_the_postgres_backend_names_its_client_crates() {
    for name in ["tokio_postgres", "deadpool_postgres"] {
        assert_eq!(
            crate_users("server/src", name, &["server/src/store/postgres/"]),
            Vec::<PathBuf>::new(),
            "{name}"
        );
    }
}

#[test]
fn only_the_nats_bus_names_its_client_crate() {
    assert_eq!(
        crate_users("server/src", "async_nats", &["server/src/bus/nats.rs"]),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn only_auth_modules_name_opaque_ke() {
    for crate_dir in ["server/src", "client/src"] {
        let auth = format!("{crate_dir}/auth");
        assert_eq!(
            offenders(crate_dir, "opaque_ke", &[&auth]),
            Vec::<PathBuf>::new()
        );
    }
}

#[test]
fn runtime_depends_on_no_workspace_crate() {
    let manifest = fs::read_to_string(workspace().join("runtime/Cargo.toml")).unwrap();
    for name in ["qpq-schema", "qpq-codegen", "qpq-server", "qpq-client"] {
        assert!(!manifest.contains(name), "runtime depends on {name}");
    }
}
