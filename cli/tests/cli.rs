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
    start_server_with(&[])
}

fn start_server_with(args: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(server_binary())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
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

    /// Runs a command with `--json` that must succeed and prints one object; returns it.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let mut lines = json_lines(&self.ok(&all));
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        lines.remove(0)
    }

    /// Runs a command that must fail and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success(),
            "qpq {args:?} succeeded but should fail\nstdout: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        stderr
    }

    fn path(&self, name: &str) -> PathBuf {
        self.profile.path().join(name)
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

/// The subcommands a help text lists (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn every_command_has_help_with_an_example() {
    let help = Command::new(env!("CARGO_BIN_EXE_qpq"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Example"), "{text}");
    let commands = subcommands(&text);
    assert!(commands.len() >= 18, "{commands:?}");
    // Every command, and every leaf of a command group (`keys upload`), says what it does
    // with an example.
    let mut pending: Vec<Vec<String>> = commands.into_iter().map(|c| vec![c]).collect();
    let mut leaves = 0;
    while let Some(path) = pending.pop() {
        let help = Command::new(env!("CARGO_BIN_EXE_qpq"))
            .args(&path)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        let name = path.join(" ");
        assert!(help.status.success(), "{name}");
        assert!(
            text.contains(&format!("Example: qpq {name}")),
            "`qpq {name} --help` lacks an example of itself:\n{text}"
        );
        let children = subcommands(&text);
        if children.is_empty() {
            leaves += 1;
        }
        for child in children {
            let mut longer = path.clone();
            longer.push(child);
            pending.push(longer);
        }
    }
    assert!(leaves >= 30, "{leaves} leaf commands");
}

/// Deterministic bytes that do not compress or repeat.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn blob_round_trip_keeps_the_hash_and_resumes() {
    let server = start_server();
    let alice = Person::new(&server);
    let bob = Person::new(&server);
    alice.ok(&["register", "alice"]);
    bob.ok(&["register", "bob"]);

    // A few MiB, so the upload goes in several 1 MiB chunks.
    let content = noise((3 << 20) + 12_345, 0x9e37_79b9_7f4a_7c15);
    let file = alice.path("photo.bin");
    std::fs::write(&file, &content).unwrap();
    let output = alice.run(&["--json", "blob", "put", file.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let put = json_lines(&String::from_utf8_lossy(&output.stdout));
    let id = put[0]["blob_id"].as_str().unwrap().to_owned();
    assert_eq!(id, sha256_hex(&content), "the blob id is the SHA-256");
    assert_eq!(put[0]["size"].as_u64(), Some(content.len() as u64));
    // The progress bar went to stderr and reached the end.
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(progress.contains("uploading"), "{progress}");
    assert!(progress.contains("100%"), "{progress}");

    // Bob downloads it: same bytes, same hash.
    let out = bob.path("photo.copy");
    let got = bob.json(&["blob", "get", &id, out.to_str().unwrap()]);
    assert_eq!(got["sha256_verified"], true);
    assert_eq!(got["resumed_from"], 0);
    let copy = std::fs::read(&out).unwrap();
    assert_eq!(sha256_hex(&copy), id);
    assert!(copy == content);

    // A partial file is completed from where it ends.
    let partial = bob.path("photo.partial");
    std::fs::write(&partial, &content[..(1 << 20) + 7]).unwrap();
    let got = bob.json(&["blob", "get", &id, partial.to_str().unwrap()]);
    assert_eq!(got["resumed_from"].as_u64(), Some((1 << 20) + 7));
    assert!(std::fs::read(&partial).unwrap() == content);

    // A file that is not the start of this blob is caught by the hash check.
    let wrong = bob.path("photo.wrong");
    std::fs::write(&wrong, b"not the first bytes").unwrap();
    let stderr = bob.fails(&["blob", "get", &id, wrong.to_str().unwrap()]);
    assert!(stderr.contains("SHA-256"), "{stderr}");
    assert!(stderr.contains("delete it and download again"), "{stderr}");

    // A file longer than the blob is refused, and left alone.
    let longer = bob.path("photo.longer");
    let mut too_long = content.clone();
    too_long.push(0);
    std::fs::write(&longer, &too_long).unwrap();
    let stderr = bob.fails(&["blob", "get", &id, longer.to_str().unwrap()]);
    assert!(stderr.contains("longer than the blob"), "{stderr}");
    assert_eq!(std::fs::read(&longer).unwrap().len(), too_long.len());

    // A small file goes in one call, without a progress bar.
    let small = alice.path("note.txt");
    std::fs::write(&small, b"hello").unwrap();
    let output = alice.run(&["blob", "put", small.to_str().unwrap()]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with(&sha256_hex(b"hello")));
    assert!(output.stderr.is_empty(), "{output:?}");

    // An unknown blob is reported as such.
    let stderr = bob.fails(&[
        "blob",
        "get",
        &"00".repeat(32),
        bob.path("x").to_str().unwrap(),
    ]);
    assert!(stderr.contains("downloading"), "{stderr}");
}

#[test]
fn kt_audit_verifies_and_checks_consistency() {
    let server = start_server();
    let alice = Person::new(&server);
    let bob = Person::new(&server);
    let carol = Person::new(&server);
    alice.ok(&["register", "alice"]);
    bob.ok(&["register", "bob"]);

    let bob_key = bob.json(&["whois", "bob"])["identity_key"].clone();
    let first = alice.json(&["kt", "audit", "bob"]);
    assert_eq!(first["verified"], true);
    assert_eq!(first["identity_key"], bob_key);
    assert_eq!(first["kind"], "binding");
    assert_eq!(first["log_key_pinned_now"], true);
    assert!(first["consistent_with"].is_null());
    assert_eq!(first["tree_size"], 2);
    assert!(alice.path("kt.toml").exists());

    // Another registration grows the log; the next audit proves it extends the first.
    carol.ok(&["register", "carol"]);
    let second = alice.json(&["kt", "audit", "carol"]);
    assert_eq!(second["verified"], true);
    assert_eq!(second["tree_size"], 3);
    assert_eq!(second["consistent_with"], 2);
    assert_eq!(second["log_key_pinned_now"], false);
    assert_eq!(second["log_key"], first["log_key"]);
    // People read it too; auditing oneself checks the profile's own key.
    let text = alice.ok(&["kt", "audit"]);
    assert!(text.contains("alice is bound to"), "{text}");
    assert!(
        text.contains("consistent with the log of 3 entries"),
        "{text}"
    );

    // A remembered head that this log does not extend is caught.
    let kt = std::fs::read_to_string(alice.path("kt.toml")).unwrap();
    let root = second["root_hash"].as_str().unwrap();
    std::fs::write(alice.path("kt.toml"), kt.replace(root, &"ab".repeat(32))).unwrap();
    let stderr = alice.fails(&["kt", "audit", "bob"]);
    assert!(stderr.contains("consistency proof failed"), "{stderr}");
    // So is an answer not signed by the pinned log key.
    std::fs::write(
        alice.path("kt.toml"),
        kt.replace(first["log_key"].as_str().unwrap(), &"cd".repeat(32)),
    )
    .unwrap();
    let stderr = alice.fails(&["kt", "audit", "bob"]);
    assert!(stderr.contains("pinned"), "{stderr}");
    std::fs::write(alice.path("kt.toml"), kt).unwrap();
    alice.ok(&["kt", "audit", "bob"]);
    let stderr = alice.fails(&["kt", "audit", "nobody"]);
    assert!(stderr.contains("no entry for nobody"), "{stderr}");
}

#[test]
fn keys_upload_and_fetch() {
    let server = start_server();
    let alice = Person::new(&server);
    let bob = Person::new(&server);
    alice.ok(&["register", "alice"]);
    bob.ok(&["register", "bob"]);

    // Nothing uploaded yet.
    let stderr = alice.fails(&["keys", "fetch", "bob"]);
    assert!(stderr.contains("bob has no KeyPackage left"), "{stderr}");

    for (name, bytes) in [
        ("kp1", &b"key package one"[..]),
        ("kp2", b"key package two"),
        ("lr", b"last resort"),
    ] {
        std::fs::write(bob.path(name), bytes).unwrap();
    }
    let up = bob.json(&[
        "keys",
        "upload",
        bob.path("kp1").to_str().unwrap(),
        bob.path("kp2").to_str().unwrap(),
    ]);
    assert_eq!(up["queue_depth"], 2);
    assert_eq!(up["has_last_resort"], false);
    assert_eq!(up["hybrid_generated"], true);
    let x25519 = up["hybrid_x25519_public"].clone();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(bob.path("hybrid.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let up = bob.json(&[
        "keys",
        "upload",
        "--last-resort",
        bob.path("lr").to_str().unwrap(),
    ]);
    assert_eq!(up["has_last_resort"], true);
    assert_eq!(
        up["hybrid_generated"], false,
        "the profile's hybrid key is kept"
    );
    assert_eq!(up["hybrid_x25519_public"], x25519);

    // Alice takes bob's KeyPackages in order, then the last-resort one, which stays.
    let out = alice.path("bob-kp");
    let hybrid = alice.path("bob-hybrid");
    for (expected, last_resort) in [
        (&b"key package one"[..], false),
        (b"key package two", false),
        (b"last resort", true),
        (b"last resort", true),
    ] {
        let got = alice.json(&[
            "keys",
            "fetch",
            "bob",
            "--key-package-out",
            out.to_str().unwrap(),
            "--hybrid-out",
            hybrid.to_str().unwrap(),
        ]);
        assert_eq!(std::fs::read(&out).unwrap(), expected);
        assert_eq!(got["key_package"]["last_resort"], last_resort);
        assert_eq!(got["hybrid_key"]["signature_verified"], true);
        assert_eq!(got["hybrid_key"]["x25519_public"], x25519);
    }
    assert_eq!(std::fs::read(&hybrid).unwrap().len(), 32 + 1184);
    // Without an output file the KeyPackage is printed; --hybrid-only leaves them alone.
    let got = alice.json(&["keys", "fetch", "bob"]);
    assert_eq!(got["key_package"]["hex"], "6c617374207265736f7274");
    let got = alice.json(&["keys", "fetch", "bob", "--hybrid-only"]);
    assert!(got["key_package"].is_null());
    assert_eq!(got["hybrid_key"]["x25519_public"], x25519);
    // Alice has no hybrid key.
    let text = bob.ok(&["keys", "fetch", "alice", "--hybrid-only"]);
    assert!(text.contains("hybrid key: none uploaded"), "{text}");
    // A new hybrid key replaces the old one.
    let up = bob.json(&["keys", "upload", "--new-hybrid"]);
    assert_ne!(up["hybrid_x25519_public"], x25519);
    let got = alice.json(&["keys", "fetch", "bob", "--hybrid-only"]);
    assert_eq!(
        got["hybrid_key"]["x25519_public"],
        up["hybrid_x25519_public"]
    );
}

#[test]
fn devices_are_registered_listed_and_revoked() {
    let server = start_server();
    let alice = Person::new(&server);
    alice.ok(&["register", "alice"]);
    assert!(alice.ok(&["device", "list"]).contains("(no devices"));
    let registered = alice.json(&["device", "register", "laptop"]);
    let id = registered["device_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let stderr = alice.fails(&["device", "register", "again"]);
    assert!(stderr.contains("already the device `laptop`"), "{stderr}");

    // A second profile of the same account is another device.
    let phone = Person {
        profile: tempfile::tempdir().unwrap(),
        server: alice.server.clone(),
        cert: alice.cert.clone(),
    };
    std::fs::copy(alice.path("identity.key"), phone.path("identity.key")).unwrap();
    phone.ok(&["login", "alice"]);
    let phone_id = phone.json(&["device", "register", "phone"])["device_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Logging in again binds the session to this profile's device.
    alice.ok(&["login"]);
    let devices = json_lines(&alice.ok(&["--json", "device", "list"]));
    assert_eq!(devices.len(), 2, "{devices:?}");
    let this = devices
        .iter()
        .find(|d| d["device_id"] == id.as_str())
        .unwrap();
    assert_eq!(this["name"], "laptop");
    assert_eq!(this["current"], true);
    let other = devices
        .iter()
        .find(|d| d["device_id"] == phone_id.as_str())
        .unwrap();
    assert_eq!(other["current"], false);
    assert!(alice.ok(&["device", "list"]).contains("(this session)"));

    // Revoking the phone ends its session.
    let revoked = alice.json(&["device", "revoke", &phone_id]);
    assert!(revoked["sessions_ended"].as_u64().unwrap() >= 1);
    assert_eq!(revoked["this_device"], false);
    let stderr = phone.fails(&["fetch"]);
    assert!(stderr.contains("qpq login"), "{stderr}");
    let devices = json_lines(&alice.ok(&["--json", "device", "list"]));
    assert_eq!(devices.len(), 1);
    let stderr = alice.fails(&["device", "revoke", "xyz"]);
    assert!(stderr.contains("not a device id"), "{stderr}");
}

#[test]
fn recovery_bundle_round_trip_needs_the_password() {
    let server = start_server();
    let alice = Person::new(&server);
    alice.ok(&["register", "alice"]);
    let secret = alice.path("codes.txt");
    std::fs::write(&secret, b"backup code 1234-5678").unwrap();
    let stderr = alice.fails(&["recovery", "fetch", alice.path("x").to_str().unwrap()]);
    assert!(stderr.contains("no recovery bundle is stored"), "{stderr}");
    assert!(
        alice
            .ok(&["recovery", "store", secret.to_str().unwrap()])
            .contains("encrypted")
    );
    let out = alice.path("restored.txt");
    alice.ok(&["recovery", "fetch", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"backup code 1234-5678");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The wrong password gets nothing.
    let output = alice
        .command(&["recovery", "fetch", alice.path("y").to_str().unwrap()])
        .env("QPQ_PASSWORD", "not the password")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("wrong username or password"), "{stderr}");
    assert!(!alice.path("y").exists());
}

#[test]
fn channels_created_listed_added_and_removed() {
    let server = start_server();
    let alice = Person::new(&server);
    let bob = Person::new(&server);
    let carol = Person::new(&server);
    alice.ok(&["register", "alice"]);
    bob.ok(&["register", "bob"]);
    carol.ok(&["register", "carol"]);

    let created = alice.json(&["channel", "create", "team", "--member", "bob"]);
    let id = created["channel_id"].as_str().unwrap().to_owned();
    let members = json_lines(&bob.ok(&["--json", "channel", "list", &id]));
    // Members joined in the same millisecond: compare as a set.
    let mut roles: Vec<(String, String)> = members
        .iter()
        .map(|m| {
            (
                m["username"].as_str().unwrap().into(),
                m["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            ("alice".into(), "owner".into()),
            ("bob".into(), "member".into())
        ]
    );
    let stderr = carol.fails(&["channel", "list", &id]);
    assert!(stderr.contains("not a member"), "{stderr}");

    // Adding carol is an MLS commit plus her Welcome (opaque bytes to this tool).
    std::fs::write(alice.path("commit"), b"mls commit bytes").unwrap();
    std::fs::write(alice.path("welcome"), b"mls welcome bytes").unwrap();
    let add = |epoch: &str| {
        alice.run(&[
            "--json",
            "channel",
            "add",
            &id,
            "carol",
            "--epoch",
            epoch,
            "--commit",
            alice.path("commit").to_str().unwrap(),
            "--welcome",
            alice.path("welcome").to_str().unwrap(),
        ])
    };
    let output = add("0");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        json_lines(&String::from_utf8_lossy(&output.stdout))[0]["new_epoch"],
        1
    );
    let welcome = json_lines(&carol.ok(&["--json", "peek"]));
    assert_eq!(welcome[0]["payload_utf8"], "mls welcome bytes");
    let commit = json_lines(&bob.ok(&["--json", "peek"]));
    assert_eq!(commit[0]["payload_utf8"], "mls commit bytes");
    // A commit for a past epoch loses.
    let output = add("0");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another commit won"), "{stderr}");
    assert!(
        carol
            .ok(&["channel", "list", &id])
            .contains("epoch 1, 3 member(s)")
    );

    assert!(
        alice
            .ok(&["channel", "remove", &id, "bob"])
            .contains("removed bob")
    );
    assert!(
        alice
            .ok(&["channel", "remove", &id, "bob"])
            .contains("was not a member")
    );
    let members = json_lines(&alice.ok(&["--json", "channel", "list", &id]));
    let mut names: Vec<&str> = members
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["alice", "carol"]);
    let stderr = alice.fails(&["channel", "list", "abc"]);
    assert!(stderr.contains("not a channel id"), "{stderr}");
}

#[test]
fn admin_commands_on_a_server_with_an_admin() {
    let server = start_server_with(&["--admin", "alice"]);
    let alice = Person::new(&server);
    let bob = Person::new(&server);
    let carol = Person::new(&server);
    alice.ok(&["register", "alice"]);
    bob.ok(&["register", "bob"]);
    carol.ok(&["register", "carol"]);

    assert!(alice.ok(&["admin", "reports"]).contains("(no reports)"));
    carol.ok(&[
        "report",
        "bob",
        "--category",
        "spam",
        "--reason",
        "ads every hour",
        "--evidence",
        "buy now",
    ]);
    let reports = json_lines(&alice.ok(&["--json", "admin", "reports"]));
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["reporter"], "carol");
    assert_eq!(reports[0]["reported"], "bob");
    assert_eq!(reports[0]["category"], "spam");
    assert_eq!(reports[0]["reason"], "ads every hour");
    assert_eq!(reports[0]["evidence_utf8"], "buy now");

    // Not for everyone.
    let stderr = bob.fails(&["admin", "reports"]);
    assert!(stderr.contains("admin"), "{stderr}");
    let stderr = bob.fails(&["admin", "ban", "carol"]);
    assert!(stderr.contains("server administrators"), "{stderr}");

    // A server-wide ban ends bob's session and stops his logins until lifted.
    assert!(
        alice
            .ok(&["admin", "ban", "bob", "--reason", "spam"])
            .contains("banned bob server-wide permanently")
    );
    bob.fails(&["fetch"]);
    let stderr = bob.fails(&["login", "bob"]);
    assert!(stderr.contains("banned"), "{stderr}");
    let bans = json_lines(&alice.ok(&["--json", "admin", "bans"]));
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0]["username"], "bob");
    assert_eq!(bans[0]["reason"], "spam");
    let unbanned = alice.json(&["admin", "unban", "bob"]);
    assert_eq!(unbanned["was_banned"], true);
    bob.ok(&["login", "bob"]);
    assert!(
        alice
            .ok(&["admin", "unban", "bob"])
            .contains("was not banned")
    );
    assert!(alice.ok(&["admin", "bans"]).contains("(no bans)"));

    // A channel ban removes the member from that channel only.
    let id = alice.json(&["channel", "create", "room", "--member", "carol"])["channel_id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.ok(&[
        "admin",
        "ban",
        "carol",
        "--channel",
        &id,
        "--reason",
        "off topic",
    ]);
    let stderr = carol.fails(&["channel", "list", &id]);
    assert!(stderr.contains("not a member"), "{stderr}");
    carol.ok(&["fetch"]);
}

#[test]
fn admin_users_and_stats_show_accounts_queues_and_storage() {
    let server = start_server_with(&["--admin", "alice"]);
    let alice = Person::new(&server);
    let bob = Person::new(&server);
    let carol = Person::new(&server);
    for (person, name) in [(&carol, "carol"), (&alice, "alice"), (&bob, "bob")] {
        person.ok(&["register", name]);
    }
    bob.ok(&["send", "carol", "see you at noon"]);
    let content = noise(5_000, 7);
    let file = bob.path("notes.bin");
    std::fs::write(&file, &content).unwrap();
    bob.ok(&["blob", "put", file.to_str().unwrap()]);

    // Every account once, in username order, with what an operator needs to know.
    let users = json_lines(&alice.ok(&["--json", "admin", "users"]));
    let names: Vec<&str> = users
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    for user in &users {
        assert_eq!(user["identity_key"].as_str().unwrap().len(), 64, "{user}");
        assert!(user["created_at_unix_ms"].as_u64().unwrap() > 0, "{user}");
        assert_eq!(user["banned"], false, "{user}");
        assert_eq!(user["devices"], 0, "{user}");
        assert!(user["online"].is_boolean(), "{user}");
    }
    assert_eq!(users[2]["queued_messages"], 1);
    assert_eq!(users[2]["queued_bytes"], "see you at noon".len());
    assert_eq!(users[0]["queued_messages"], 0);

    // Pages: the last line of a page that has more is the cursor for the next one.
    let page = json_lines(&alice.ok(&["--json", "admin", "users", "--limit", "2"]));
    assert_eq!(page.len(), 3, "{page:?}");
    assert_eq!(page[2], serde_json::json!({"next_after": "bob"}));
    let rest =
        json_lines(&alice.ok(&["--json", "admin", "users", "--limit", "2", "--after", "bob"]));
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["username"], "carol");
    let text = alice.ok(&["admin", "users", "--limit", "2"]);
    assert!(text.starts_with("USER "), "{text}");
    assert!(
        text.contains("(more users: qpq admin users --after bob --limit 2)"),
        "{text}"
    );
    assert!(
        alice
            .ok(&["admin", "users", "--after", "carol"])
            .contains("(no users after carol)")
    );

    let stats = alice.json(&["admin", "stats"]);
    assert_eq!(stats["accounts"], 3);
    assert_eq!(stats["live_sessions"], 3);
    assert_eq!(stats["queued_messages"], 1);
    assert_eq!(stats["queued_bytes"], "see you at noon".len());
    assert_eq!(stats["nonempty_queues"], 1);
    assert_eq!(stats["blobs"], 1);
    assert_eq!(stats["blob_bytes"], content.len());
    assert_eq!(stats["channels"], 0);
    assert_eq!(stats["kt_log_size"], 3);
    assert_eq!(stats["federation_outbox_messages"], 0);
    assert!(stats["disk_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["journal_syncs"].as_u64().unwrap() > 0, "{stats}");
    for key in ["online_users", "mean_sync_micros", "last_sync_micros"] {
        assert!(stats[key].is_u64(), "{key}: {stats}");
    }
    let text = alice.ok(&["admin", "stats"]);
    assert!(text.contains("accounts           3"), "{text}");
    assert!(text.contains("disk use"), "{text}");

    // Not for everyone.
    for command in [&["admin", "users"][..], &["admin", "stats"]] {
        let stderr = bob.fails(command);
        assert!(stderr.contains("administrators"), "{stderr}");
    }
}
