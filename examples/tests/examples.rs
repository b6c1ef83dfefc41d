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
