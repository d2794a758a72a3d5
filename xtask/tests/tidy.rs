//! Repository-wide checks that are cheaper as a test than as a review comment.

use std::{
    fs,
    path::{Path, PathBuf},
};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

/// Each directory under `crates/`, with its manifest text.
fn crates() -> Vec<(String, PathBuf, String)> {
    let mut crates: Vec<_> = fs::read_dir(workspace_root().join("crates"))
        .expect("read crates/")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let manifest = fs::read_to_string(path.join("Cargo.toml")).expect("read manifest");
            (name, path, manifest)
        })
        .collect();
    crates.sort();
    assert!(!crates.is_empty(), "no crates found");
    crates
}

fn is_published(manifest: &str) -> bool {
    !manifest.lines().any(|l| l.trim() == "publish = false")
}

#[test]
fn every_crate_has_readme_changelog_and_workspace_lints() {
    let mut problems = Vec::new();
    for (name, path, manifest) in crates() {
        for file in ["README.md", "CHANGELOG.md"] {
            if !path.join(file).is_file() {
                problems.push(format!("{name}: no {file}"));
            }
        }
        if !manifest.contains("[lints]\nworkspace = true") {
            problems.push(format!(
                "{name}: Cargo.toml does not inherit [workspace.lints]"
            ));
        }
        if !manifest.contains("edition.workspace = true") {
            problems.push(format!("{name}: edition not inherited from the workspace"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_published_crate_is_a_facade_feature_and_in_full() {
    let facade = fs::read_to_string(workspace_root().join("crates/brisk/Cargo.toml")).unwrap();
    let facade_lib = fs::read_to_string(workspace_root().join("crates/brisk/src/lib.rs")).unwrap();
    let full = facade
        .lines()
        .find(|l| l.starts_with("full ="))
        .expect("the facade has a `full` feature");
    let mut problems = Vec::new();
    for (name, _, manifest) in crates() {
        let Some(feature) = name.strip_prefix("brisk-") else {
            continue;
        };
        if !is_published(&manifest) {
            continue;
        }
        if !facade.contains(&format!("\n{feature} = [\"dep:{name}\"]")) {
            problems.push(format!(
                "facade has no `{feature} = [\"dep:{name}\"]` feature"
            ));
        }
        if !full.contains(&format!("\"{feature}\"")) {
            problems.push(format!("`full` does not enable `{feature}`"));
        }
        let reexport = format!("pub use {} as {feature};", name.replace('-', "_"));
        if !facade_lib.contains(&reexport) {
            problems.push(format!("facade lib.rs lacks `{reexport}`"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
