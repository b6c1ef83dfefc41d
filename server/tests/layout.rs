//! The server's layout as ARCHITECTURE.md describes it: each method group of the schema is
//! served by one file, `server/src/api/<group>.rs`, which implements that group's generated
//! trait, and nothing else implements it. Adding a method then touches `methods.toml`, a
//! proto and that file only.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
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

fn trait_of(group: &str) -> String {
    let mut name: String = group
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    name.push_str("Service");
    name
}

#[test]
fn each_group_is_served_by_its_own_api_file() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let groups: BTreeSet<&str> = qpq_schema::METHODS.iter().map(|m| m.group).collect();
    let files: Vec<(PathBuf, String)> = rust_files(&src)
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect();
    let mut problems = Vec::new();
    for group in &groups {
        let implementation = format!("impl<S: Store> {} for Messenger<S>", trait_of(group));
        let expected = src.join("api").join(format!("{group}.rs"));
        let implementers: Vec<&PathBuf> = files
            .iter()
            .filter(|(_, text)| text.contains(&implementation))
            .map(|(path, _)| path)
            .collect();
        if implementers != [&expected] {
            problems.push(format!(
                "group `{group}`: `{implementation}` should be in {} alone, found in {implementers:?}",
                expected.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        !src.join("service.rs").exists(),
        "the service trait is the composition of the group traits; no delegation file"
    );
}
