//! Every public item of the client library is documented with an example.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The item a line declares, if it is a public (`pub`, not `pub(crate)`) one.
fn public_item(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix("pub ")?;
    let rest = rest.strip_prefix("async ").unwrap_or(rest);
    let (kind, rest) = rest.split_once(' ')?;
    if !matches!(
        kind,
        "fn" | "struct" | "enum" | "const" | "type" | "trait" | "mod"
    ) {
        return None;
    }
    let name = rest
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()?;
    Some((kind, name))
}

#[test]
fn every_public_item_has_a_doc_example() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("#[cfg(test)]") {
                break;
            }
            let Some((kind, name)) = public_item(line) else {
                continue;
            };
            checked += 1;
            let example = if kind == "mod" && line.trim_end().ends_with(';') {
                // A module's doc is the `//!` block of its file.
                let dir = file.parent().unwrap();
                let module = [
                    dir.join(format!("{name}.rs")),
                    dir.join(name).join("mod.rs"),
                ]
                .into_iter()
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("no file for module {name}"));
                std::fs::read_to_string(module)
                    .unwrap()
                    .lines()
                    .take_while(|l| l.starts_with("//!") || l.is_empty())
                    .any(|l| l.contains("```"))
            } else {
                lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| {
                        let l = l.trim_start();
                        l.starts_with("///") || l.starts_with("#[")
                    })
                    .any(|l| l.contains("```"))
            };
            if !example {
                missing.push(format!(
                    "{}:{} {kind} {name}",
                    file.strip_prefix(&src).unwrap().display(),
                    i + 1
                ));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} items found: is the scan broken?"
    );
    assert!(
        missing.is_empty(),
        "public items without a doc example:\n{}",
        missing.join("\n")
    );
}
