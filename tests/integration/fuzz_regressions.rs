//! Fuzzing inputs replayed in the suite: every seed of `fuzz/corpus/<target>/` and every input
//! that once crashed a target, saved (minimized) in `tests/data/fuzz-regressions/<target>/`,
//! goes through the target's own entry point (`streamgate::fuzzing`). A new crash becomes a
//! regression test by dropping its file into that folder; no code changes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The files of `dir`, by name (none when the folder does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Feeds every seed and saved crash of `target` to its entry point; fails naming each input
/// that panics.
fn replay(target: &str) {
    let entry = streamgate::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"))
        .1;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = files(&root.join("fuzz/corpus").join(target));
    assert!(!seeds.is_empty(), "fuzz/corpus/{target} has no seeds");
    let crashes = files(&root.join("tests/data/fuzz-regressions").join(target));
    let mut failed = Vec::new();
    for file in seeds.iter().chain(&crashes) {
        let data = std::fs::read(file).expect("a readable input");
        if catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err() {
            failed.push(
                file.strip_prefix(root)
                    .unwrap_or(file)
                    .display()
                    .to_string(),
            );
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs panic: {failed:?}",
        failed.len(),
        seeds.len() + crashes.len()
    );
}

#[test]
fn json_records() {
    replay("json_records");
}

#[test]
fn avro_plain() {
    replay("avro_plain");
}

#[test]
fn avro_confluent() {
    replay("avro_confluent");
}

#[test]
fn spec_pipeline() {
    replay("spec_pipeline");
}

#[test]
fn spec_gateway() {
    replay("spec_gateway");
}

#[test]
fn oip_request() {
    replay("oip_request");
}

#[test]
fn openai_body() {
    replay("openai_body");
}

#[test]
fn jwt() {
    replay("jwt");
}

/// Every target of `streamgate::fuzzing` has a test here and a file in `fuzz/fuzz_targets/`.
#[test]
fn every_target_is_replayed() {
    let source = include_str!("fuzz_regressions.rs");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in streamgate::fuzzing::TARGETS {
        assert!(
            source.contains(&format!("fn {name}() {{\n    replay(\"{name}\");")),
            "no test replays {name}"
        );
        let target = root.join("fuzz/fuzz_targets").join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
    }
}
