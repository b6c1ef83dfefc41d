//! End to end: the real `qpq-server` and `qpq` binaries, driven the way a person would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The server binary of this workspace (built by `cargo test --workspace`).
fn server_binary() -> PathBuf {
    let qpq = Path::new(env!("CARGO_BIN_EXE_qpq"));
    let server = qpq.with_file_name("qpq-server");
    assert!(
        server.exists(),
        "{} is missing; run the tests with `cargo test --workspace` (or `cargo build -p qpq-server` first)",
        server.display()
    );
    server
}

struct Server {
    child: Child,
    addr: String,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(server_binary())
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("qpq-server listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line}"))
        .to_owned();
    Server {
        child,
        addr,
        cert: dir.path().join("data/server-cert.der"),
        _dir: dir,
    }
}

/// A person with their own profile directory.
struct Person {
    profile: tempfile::TempDir,
    server: String,
    cert: PathBuf,
}

impl Person {
    fn new(server: &Server) -> Self {
        Self {
            profile: tempfile::tempdir().unwrap(),
            server: server.addr.clone(),
            cert: server.cert.clone(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_qpq"));
        command
            .arg("--profile")
            .arg(self.profile.path())
            .arg("--server")
            .arg(&self.server)
            .arg("--ca-cert")
            .arg(&self.cert)
            .args(args)
            .env("QPQ_PASSWORD", "a long test passphrase")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "qpq {args:?} failed\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[test]
fn register_send_watch_fetch_ack() {
    let server = start_server();
    let alice = Person::new(&server);
    let bob = Person::new(&server);
    assert!(
        alice
            .ok(&["register", "alice"])
            .contains("registered alice")
    );
    bob.ok(&["register", "bob"]);
    // The profile keeps the session and the identity key private.
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["identity.key", "session.toml"] {
            let mode = std::fs::metadata(bob.profile.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    assert!(alice.ok(&["login", "alice"]).contains("logged in as alice"));

    // Bob watches; once he is listening, Alice sends.
    let mut watch = bob
        .command(&["--json", "watch", "--count", "1", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(watch.stderr.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.contains("watching"), "{ready}");
    let sent = json_lines(&alice.ok(&["--json", "send", "bob", "hello bob"]));
    let seq = sent[0]["seq"].as_u64().unwrap();
    let watched = watch.wait_with_output().unwrap();
    assert!(watched.status.success());
    let events = json_lines(&String::from_utf8_lossy(&watched.stdout));
    assert_eq!(events[0]["event"], "new_message");
    assert_eq!(events[0]["sender"], "alice");
    assert_eq!(events[0]["payload_utf8"], "hello bob");
    assert_eq!(events[0]["seq"].as_u64(), Some(seq));

    // Peek shows it without removing it; ack removes it; fetch then finds nothing.
    let peeked = json_lines(&bob.ok(&["--json", "peek"]));
    assert_eq!(peeked.len(), 1);
    assert_eq!(peeked[0]["payload_utf8"], "hello bob");
    assert!(
        bob.ok(&["ack", &seq.to_string()])
            .contains("removed 1 message")
    );
    assert!(bob.ok(&["fetch"]).contains("(no messages)"));

    // Fetch drains; whois resolves; health answers.
    alice.ok(&["send", "bob", "second"]);
    assert!(bob.ok(&["fetch"]).contains("from alice: second"));
    assert!(alice.ok(&["whois", "bob"]).starts_with("bob: "));
    assert!(alice.ok(&["health"]).contains("SERVING"));
}

#[test]
fn errors_say_what_failed_and_what_to_do() {
    let server = start_server();
    let carol = Person::new(&server);
    let output = carol.run(&["fetch"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not logged in; run `qpq login"), "{stderr}");

    carol.ok(&["register", "carol"]);
    let output = carol.run(&["send", "nobody-here", "hi"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no user named `nobody-here`"), "{stderr}");

    // A wrong pinned certificate is refused with a hint.
    let other = tempfile::tempdir().unwrap();
    let wrong_cert = other.path().join("other.der");
    qpq_runtime::TlsIdentity::generate(&["localhost"])
        .unwrap()
        .save(&wrong_cert, &other.path().join("other.key"))
        .unwrap();
    let output = carol
        .command(&["health"])
        .arg("--ca-cert")
        .arg(&wrong_cert)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not the pinned certificate"), "{stderr}");
}

#[test]
fn every_command_has_help_with_an_example() {
    let help = Command::new(env!("CARGO_BIN_EXE_qpq"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Example"), "{text}");
    let commands: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    for command in commands {
        let help = Command::new(env!("CARGO_BIN_EXE_qpq"))
            .args([command.as_str(), "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{command}");
        assert!(
            text.contains("Example: qpq "),
            "`qpq {command} --help` lacks an example:\n{text}"
        );
    }
}
