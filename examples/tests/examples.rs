//! Every example runs to completion and prints what it promises.

use std::process::Command;

fn run(binary: &str) -> String {
    let output = Command::new(binary).output().expect("example starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{binary} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn custom_service_runs_to_completion() {
    let out = run(env!("CARGO_BIN_EXE_custom-service"));
    assert!(out.contains("pushed: note 1 by ada: buy milk"), "{out}");
    assert!(
        out.contains("pushed: note 2 by ada: water the plants"),
        "{out}"
    );
    assert!(out.contains("refused: BadRequest(1)"), "{out}");
    assert!(out.contains("board has 2 notes"), "{out}");
}

#[test]
fn chat_runs_to_completion() {
    let out = run(env!("CARGO_BIN_EXE_chat"));
    assert!(
        out.contains("bob reads from alice: hi bob, lunch at noon?"),
        "{out}"
    );
    assert!(
        out.contains("alice reads from bob: yes, see you there"),
        "{out}"
    );
    assert!(out.contains("done"), "{out}");
}

/// Every regular file under `dir`, recursively (the control socket is no file to read).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn mls_chat_runs_and_the_server_never_stores_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mls-chat"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("example starts");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "mls-chat failed: {}\nstdout:\n{out}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let said = [
        "Alice: the launch code is 0451, keep it in the group",
        "Bob: got it, 0451 stays between us three",
        "Carol: joined late but I can read everything from here on",
    ];
    // The members decrypted each other's messages.
    assert!(out.contains(&format!("from alice: {}", said[0])), "{out}");
    assert!(out.contains(&format!("from bob: {}", said[1])), "{out}");
    assert!(out.contains(&format!("from carol: {}", said[2])), "{out}");
    assert!(
        out.contains("alice's commit for epoch 1 lost: Conflict"),
        "{out}"
    );
    assert!(
        out.contains("carol joined from the Welcome sent by alice: epoch 3, 3 members"),
        "{out}"
    );
    assert!(out.contains("done"), "{out}");

    // The server's data directory, every file of it, after the server stopped.
    let files = files_under(dir.path());
    assert!(!files.is_empty());
    let contents: Vec<(std::path::PathBuf, Vec<u8>)> = files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    // The scan sees what the server stores in the clear (the channel name is metadata)...
    assert!(
        contents
            .iter()
            .any(|(_, bytes)| contains(bytes, b"mls-chat demo channel")),
        "the channel name should be found in the data directory; is the scan reading the store?"
    );
    // ...and none of what was said, whole or in part.
    for text in said {
        let parts = [text, &text[..20], &text[text.len() - 20..]];
        for part in parts {
            for (path, bytes) in &contents {
                assert!(
                    !contains(bytes, part.as_bytes()),
                    "`{part}` is in {}",
                    path.display()
                );
            }
        }
    }
}
