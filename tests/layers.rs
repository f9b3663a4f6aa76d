//! The shape of the code, checked: the layers only look down, the examples use only the reactor, no source
//! file grows past ~500 lines, and every type's inherent `impl` lives in one module. These are the rules of
//! the design (docs/05-the-map.md); a test keeps them from eroding one convenient import at a time.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Test code: `tests_*.rs`, `tests.rs`, and everything after a file's first `#[cfg(test)]`.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name.starts_with("tests_")
}

fn product_text(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("read source");
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn sources(dir: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&root().join(dir), &mut files);
    files.sort();
    files.into_iter().filter(|p| !is_test_file(p)).collect()
}

#[test]
fn the_reactor_knows_only_mio() {
    let files = sources("src/reactor");
    assert!(files.len() >= 5, "{files:?}");
    for path in files {
        let text = product_text(&path);
        for layer in ["relay", "mock", "conn", "server", "config", "http"] {
            for needle in [format!("crate::{layer}"), format!("super::super::{layer}")] {
                assert!(
                    !text.contains(&needle),
                    "{} uses {needle}: the reactor is the ground layer",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn the_applications_use_no_layer_above_them() {
    // (application, what it must not name): the relay and the mock never see the metrics that read
    // them, the assembly or the load generator; the load generator sees neither application.
    let rules = [
        ("src/relay", &["metrics", "server", "loadgen"][..]),
        ("src/mock", &["metrics", "server", "loadgen"][..]),
        (
            "src/loadgen",
            &["relay", "mock", "metrics", "server", "config"][..],
        ),
    ];
    for (dir, above) in rules {
        let files = sources(dir);
        assert!(!files.is_empty(), "{dir}");
        for path in files {
            let text = product_text(&path);
            for layer in above {
                let needle = format!("crate::{layer}");
                assert!(
                    !text.contains(&needle),
                    "{} uses {needle}: an arrow that points up (docs/05-the-map.md)",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn the_examples_use_only_the_reactor() {
    let mut files = Vec::new();
    rust_files(&root().join("examples"), &mut files);
    assert!(files.len() >= 3, "examples: {files:?}");
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        for module in ["relay", "mock", "conn", "http", "server", "config"] {
            assert!(
                !text.contains(&format!("tokenpipe::{module}")),
                "{} uses tokenpipe::{module}",
                path.display()
            );
        }
    }
}

#[test]
fn no_source_file_passes_500_lines() {
    for path in sources("src") {
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(
            lines <= 500,
            "{} has {lines} lines: split it by concept",
            path.display()
        );
    }
}

/// `impl Name {` (or `impl<T> Name<T> {`), not `impl Trait for Name`.
fn inherent_impl(line: &str) -> Option<String> {
    let rest = line.strip_prefix("impl")?;
    if line.contains(" for ") || !line.trim_end().ends_with('{') {
        return None;
    }
    let rest = if let Some(generic) = rest.strip_prefix('<') {
        &generic[generic.find('>')? + 1..]
    } else {
        rest
    };
    let name: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[test]
fn every_type_is_implemented_in_one_module() {
    let mut homes: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for path in sources("src") {
        for line in product_text(&path).lines() {
            if let Some(name) = inherent_impl(line) {
                let files = homes.entry(name).or_default();
                if !files.contains(&path) {
                    files.push(path.clone());
                }
            }
        }
    }
    assert!(
        homes.contains_key("Worker") && homes.contains_key("Exchange"),
        "{homes:?}"
    );
    for (name, files) in homes {
        assert_eq!(files.len(), 1, "`impl {name}` is spread over {files:?}");
    }
}
