//! The binary's modules import one another without cycles: each command area
//! (`src/commands/<area>.rs`) imports only the shared modules, never another area, and the
//! shared modules import no area.

use std::path::Path;

/// What each module of `src/` may import from the crate; `main.rs` may import anything.
const SHARED: [(&str, &[&str]); 4] = [
    ("args.rs", &[]),
    ("format.rs", &[]),
    ("progress.rs", &[]),
    ("context.rs", &["args"]),
];
const AREA_MAY_IMPORT: &[&str] = &["args", "context", "format", "progress"];

/// The crate modules `text` names (`crate::<module>`), with the offending line for anything
/// this check cannot read (`crate::{..}`, `super::`).
fn imports(text: &str) -> Result<Vec<String>, String> {
    let mut modules = Vec::new();
    for line in text.lines() {
        if line.contains("super::") || line.contains("crate::{") {
            return Err(line.to_owned());
        }
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let module: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            modules.push(module);
        }
    }
    Ok(modules)
}

fn check(path: &Path, allowed: &[&str], problems: &mut Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    match imports(&text) {
        Ok(modules) => {
            for module in modules {
                if !allowed.contains(&module.as_str()) {
                    problems.push(format!("{name} imports crate::{module}"));
                }
            }
        }
        Err(line) => problems.push(format!(
            "{name}: name each module as crate::<module>::… in `{}`",
            line.trim()
        )),
    }
}

#[test]
fn command_areas_import_only_the_shared_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for (file, allowed) in SHARED {
        check(&src.join(file), allowed, &mut problems);
    }
    let mut areas = 0;
    for entry in std::fs::read_dir(src.join("commands")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            check(&path, AREA_MAY_IMPORT, &mut problems);
            areas += 1;
        }
    }
    assert!(
        areas >= 10,
        "only {areas} files in src/commands: is the scan broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
