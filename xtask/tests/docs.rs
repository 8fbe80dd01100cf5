//! The docs' crate tables and pure-crate lists agree with the workspace and with CI.
//!
//! `docs/architecture.md` and the README each list every crate; `.ci/run` checks a list of
//! pure crates (no libtorch) with `cargo tree`, and `docs/architecture.md` names that list.
//! These tests read the workspace from the file system, so a crate added without a row, or a
//! pure crate added to CI without the docs (or the other way round), fails here.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// (directory relative to the root, package name) of every workspace member under `crates/`
/// and `examples/`, read from their `Cargo.toml` files.
fn members() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for parent in ["crates", "examples"] {
        let mut dirs: Vec<_> = fs::read_dir(root().join(parent))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("Cargo.toml").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            let name = manifest
                .lines()
                .find_map(|l| {
                    let l = l.trim();
                    let rest = l.strip_prefix("name")?.trim_start().strip_prefix('=')?;
                    Some(rest.trim().trim_matches('"').to_owned())
                })
                .unwrap_or_else(|| panic!("{} has no package name", dir.display()));
            let relative = format!("{parent}/{}", dir.file_name().unwrap().to_string_lossy());
            out.push((relative, name));
        }
    }
    assert!(
        out.len() >= 10,
        "expected the workspace's crates, found {out:?}"
    );
    out
}

#[test]
fn every_crate_has_a_row_in_the_architecture_crate_table() {
    let doc = read("docs/architecture.md");
    for (dir, name) in members() {
        let row = if dir.starts_with("examples/") {
            format!("| `{dir}` |")
        } else {
            format!("| `{name}` |")
        };
        assert!(
            doc.lines().any(|l| l.starts_with(&row)),
            "docs/architecture.md's crate table has no row `{row}` for {dir}: add one saying what \
             the crate owns and whether it links libtorch"
        );
    }
}

#[test]
fn every_crate_has_a_row_in_the_readme_layout() {
    let readme = read("README.md");
    for (dir, name) in members() {
        let row = if dir.starts_with("examples/") {
            format!("| `{dir}` |")
        } else {
            format!("| `{dir}` (`{name}`) |")
        };
        assert!(
            readme.lines().any(|l| l.starts_with(&row)),
            "README.md's layout table has no row `{row}`"
        );
    }
}

/// The crates `.ci/run` checks for libtorch with `cargo tree`.
fn ci_pure_crates() -> Vec<String> {
    let ci = read(".ci/run");
    let line = ci
        .lines()
        .find(|l| l.trim_start().starts_with("for crate in "))
        .expect(".ci/run has a `for crate in …; do` loop over the pure crates");
    let list = line
        .trim_start()
        .trim_start_matches("for crate in ")
        .split(';')
        .next()
        .unwrap();
    let mut crates: Vec<String> = list.split_whitespace().map(str::to_owned).collect();
    crates.sort();
    crates
}

#[test]
fn the_pure_crates_in_the_docs_are_the_ones_ci_checks() {
    let ci = ci_pure_crates();
    assert!(
        ci.len() >= 5,
        "too few pure crates read from .ci/run: {ci:?}"
    );
    let doc = read("docs/architecture.md");
    let start = doc
        .find("CI checks with `cargo tree` that the")
        .expect("docs/architecture.md names the pure crates CI checks");
    let sentence = &doc[start..start + doc[start..].find(" have neither").unwrap()];
    let mut named: Vec<String> = sentence
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("fair-"))
        .map(str::to_owned)
        .collect();
    named.sort();
    assert_eq!(
        named, ci,
        "docs/architecture.md's pure-crate sentence and .ci/run's `cargo tree` loop disagree"
    );
    let words = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    let count = words.get(ci.len()).copied().unwrap_or("many");
    assert!(
        sentence.contains(&format!(" {count} pure crates")),
        "docs/architecture.md should say `{count} pure crates` ({} in .ci/run): {sentence}",
        ci.len()
    );
    // Every crate the table marks as free of libtorch is checked by CI, and the other way round.
    let mut table_pure: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("| `fair-") && l.trim_end().ends_with("| no |"))
        .map(|l| l.split('`').nth(1).unwrap().to_owned())
        .collect();
    table_pure.sort();
    assert_eq!(
        table_pure, ci,
        "the crates marked `no` (libtorch) in docs/architecture.md's table and .ci/run's list differ"
    );
}

/// The pipeline README's "From a config" example is `crates/pipeline/examples/from_config.rs`
/// as written (without the file's `//!` header), so running the example, as `cargo xtask test`
/// does next to the CLI, runs what the README shows.
#[test]
fn the_pipeline_readme_config_example_is_the_example_file() {
    let readme = read("crates/pipeline/README.md");
    let example = read("crates/pipeline/examples/from_config.rs");
    let code: String = example
        .lines()
        .filter(|l| !l.starts_with("//!"))
        .skip_while(|l| l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let blocks: Vec<&str> = readme
        .split("```rust")
        .skip(1)
        .map(|b| {
            let b = &b[b.find('\n').expect("a code block has a first line") + 1..];
            &b[..b.find("```").expect("a code block is closed")]
        })
        .collect();
    assert!(
        blocks.iter().any(|b| *b == code),
        "no code block of crates/pipeline/README.md equals examples/from_config.rs; \
         copy the example's code (after its //! header) into the README"
    );
}
