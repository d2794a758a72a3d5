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

/// The text of feature `name`'s list in `manifest` (`name = [ ... ]`, over one line or several).
fn feature_list(manifest: &str, name: &str) -> Option<String> {
    let features = &manifest[manifest.find("\n[features]")?..];
    let start = features.find(&format!("\n{name} = ["))?;
    let list = &features[start + name.len() + 4..];
    Some(list[..list.find(']')? + 1].to_owned())
}

/// The features a crate's manifest declares, but `default`.
fn features(manifest: &str) -> Vec<String> {
    let Some(at) = manifest.find("\n[features]\n") else {
        return Vec::new();
    };
    manifest[at + "\n[features]\n".len()..]
        .lines()
        .take_while(|line| !line.starts_with('['))
        .filter_map(|line| line.split_once(" = [").map(|(name, _)| name.trim()))
        .filter(|name| !name.is_empty() && !name.starts_with('#') && *name != "default")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_feature_of_a_published_crate_has_a_facade_feature_in_full() {
    let facade = fs::read_to_string(workspace_root().join("crates/brisk/Cargo.toml")).unwrap();
    let full = feature_list(&facade, "full").expect("the facade has a `full` feature");
    let mut problems = Vec::new();
    for (short, name, manifest) in published_members() {
        let short = short.as_str();
        for feature in features(&manifest) {
            // `metrics-rs` of brisk-metrics is `metrics-rs`, not `metrics-metrics-rs`.
            let facade_feature = if feature.starts_with(&format!("{short}-")) {
                feature.clone()
            } else {
                format!("{short}-{feature}")
            };
            match feature_list(&facade, &facade_feature) {
                Some(list) if list.contains(&format!("\"{name}/{feature}\"")) => {}
                _ => problems.push(format!(
                    "facade has no `{facade_feature} = [\"{short}\", \"{name}/{feature}\"]`"
                )),
            }
            if !full.contains(&format!("\"{facade_feature}\"")) {
                problems.push(format!("`full` does not enable `{facade_feature}`"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The published `brisk-*` crates (the facade's members): short name (`cache`), full name
/// and manifest.
fn published_members() -> Vec<(String, String, String)> {
    crates()
        .into_iter()
        .filter(|(_, _, manifest)| is_published(manifest))
        .filter_map(|(name, _, manifest)| {
            let short = name.strip_prefix("brisk-")?.to_owned();
            Some((short, name, manifest))
        })
        .collect()
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
    let full = feature_list(&facade, "full").expect("the facade has a `full` feature");
    let mut problems = Vec::new();
    for (feature, name, _) in published_members() {
        // `<feature> = ["dep:<name>"` (perhaps with the crate's own default features after).
        if !facade.contains(&format!("\n{feature} = [\"dep:{name}\"")) {
            problems.push(format!(
                "facade has no `{feature} = [\"dep:{name}\", ...]` feature"
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

#[test]
fn every_published_readme_is_compiled_as_a_doctest() {
    let mut problems = Vec::new();
    for (name, path, _) in crates().into_iter().filter(|(_, _, m)| is_published(m)) {
        let lib = fs::read_to_string(path.join("src/lib.rs")).unwrap_or_default();
        if !lib.contains("#[cfg(doctest)]\n#[doc = include_str!(\"../README.md\")]") {
            problems.push(format!(
                "{name}: src/lib.rs does not include README.md as a `#[cfg(doctest)]` doc"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = fs::read_to_string(&path).expect("read source");
                found.push((path, text));
            }
        }
    }
    found
}

/// The metric names quoted in `text`: `"brisk_…"` string literals of name characters only.
fn quoted_metric_names(text: &str) -> Vec<&str> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|quoted| {
            quoted.starts_with("brisk_")
                && quoted
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .collect()
}

/// A published crate's `METRICS` table (the names in its `Description`s) must list exactly
/// the metrics its code registers: the facade's test runs promtool over the tables, so a
/// metric missing from one would be exported without help text and never checked.
#[test]
fn every_metric_a_crate_registers_is_in_its_metrics_table() {
    let mut problems = Vec::new();
    for (short, name, _) in published_members() {
        let files = sources(&workspace_root().join("crates").join(&name).join("src"));
        let Some((_, table_file)) = files
            .iter()
            .find(|(_, text)| text.contains("pub const METRICS: &[Description]"))
        else {
            problems.push(format!("{name} has no `pub const METRICS` table"));
            continue;
        };
        let start = table_file
            .find("pub const METRICS: &[Description]")
            .unwrap();
        let table = &table_file[start..start + table_file[start..].find("\n];").unwrap()];
        // `name: "brisk_…",` or `name: SOME_CONST,` with `const SOME_CONST: &str = "…";`.
        let described: Vec<&str> = table
            .lines()
            .filter_map(|line| line.trim().strip_prefix("name: "))
            .filter_map(|rest| rest.strip_suffix(','))
            .filter_map(|value| match value.strip_prefix('"') {
                Some(quoted) => quoted.strip_suffix('"'),
                None => {
                    let definition = format!("const {value}: &str = \"");
                    let at = table_file.find(&definition)? + definition.len();
                    table_file[at..].split('"').next()
                }
            })
            .collect();
        if described.is_empty() {
            problems.push(format!(
                "{name}: no metric names read from its METRICS table"
            ));
        }
        let prefix = format!("brisk_{}_", short.replace('-', "_"));
        for metric in &described {
            if !metric.starts_with(&prefix) {
                problems.push(format!("{name}: {metric} does not start with {prefix}"));
            }
        }
        // Collectors' tables (`pub const PROCESS_METRICS: &[Description]`) describe metrics
        // under names other clients use (`process_cpu_seconds_total`): no prefix asked.
        let mut described = described;
        let mut other_tables = Vec::new();
        for (_, text) in &files {
            for (at, _) in text.match_indices("_METRICS: &[Description] = &[") {
                let start = text[..at].rfind("pub const ").unwrap_or(at);
                let end = at + text[at..].find("\n];").unwrap_or(text.len() - at);
                let other = &text[start..end];
                described.extend(
                    other
                        .lines()
                        .filter_map(|line| line.trim().strip_prefix("name: \""))
                        .filter_map(|rest| rest.strip_suffix("\",")),
                );
                other_tables.push(other);
            }
        }
        // The code around the tables: what registers metrics.
        let mut outside = String::new();
        for (path, text) in &files {
            let mut text = if std::ptr::eq(text, table_file) {
                text.replacen(table, "", 1)
            } else {
                text.clone()
            };
            for other in &other_tables {
                text = text.replacen(other, "", 1);
            }
            for metric in quoted_metric_names(&text) {
                if !described.contains(&metric) {
                    problems.push(format!(
                        "{name}: {} registers {metric}, which its METRICS table does not describe",
                        path.display()
                    ));
                }
            }
            outside.push_str(&text);
        }
        for metric in &described {
            if !outside.contains(&format!("\"{metric}\"")) {
                problems.push(format!(
                    "{name}: {metric} is described but never registered"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// docs/architecture.md's crate-graph table says which brisk crates each crate depends on;
/// `cargo metadata` says what the manifests do. They must agree, optional dependencies with
/// the feature that turns them on.
#[test]
fn the_architecture_crate_graph_matches_cargo_metadata() {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{output:?}");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut actual = std::collections::BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        if !name.starts_with("brisk") {
            continue;
        }
        let manifest = fs::read_to_string(package["manifest_path"].as_str().unwrap()).unwrap();
        let mut deps: Vec<String> = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|dep| dep["kind"].is_null())
            .filter_map(|dep| {
                let dep_name = dep["name"].as_str()?;
                if !dep_name.starts_with("brisk") {
                    return None;
                }
                if !dep["optional"].as_bool().unwrap_or(false) {
                    return Some(dep_name.to_owned());
                }
                // The feature that enables it: `feature = [.."dep:<name>"..]`.
                let enabled_by = manifest
                    .lines()
                    .find(|line| line.contains(&format!("\"dep:{dep_name}\"")))
                    .and_then(|line| line.split(" = [").next())
                    .expect("an optional dependency is enabled by a feature")
                    .trim()
                    .to_owned();
                Some(format!("{dep_name} (`{enabled_by}`)"))
            })
            .collect();
        deps.sort();
        actual.insert(name.to_owned(), deps);
    }
    let doc = fs::read_to_string(workspace_root().join("docs/architecture.md")).unwrap();
    let section = &doc[doc.find("## Crate graph").expect("a crate graph section")..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let mut documented = std::collections::BTreeMap::new();
    for row in section.lines().filter(|line| line.starts_with("| brisk")) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].split_whitespace().next().unwrap().to_owned();
        let mut deps: Vec<String> = if cells[1] == "none" {
            Vec::new()
        } else {
            cells[1].split(", ").map(str::to_owned).collect()
        };
        deps.sort();
        documented.insert(name, deps);
    }
    assert_eq!(
        documented, actual,
        "docs/architecture.md's crate graph (left) disagrees with the manifests (right)"
    );
}

/// Each member's dev-dependencies are used by its code (tests, benches, examples or doc
/// examples): an unused one costs every test build its compile time.
#[test]
fn every_dev_dependency_is_used() {
    // Linked for a feature, not named in code: SQLite built in (`bundled`).
    const LINKED_ONLY: &[&str] = &["libsqlite3-sys"];
    // Crates whose library name is not their package name.
    const LIBRARY_NAMES: &[(&str, &str)] = &[("amalgam-cache", "amalgam")];
    let mut members: Vec<(String, PathBuf, String)> = crates();
    let xtask = workspace_root().join("xtask");
    let manifest = fs::read_to_string(xtask.join("Cargo.toml")).unwrap();
    members.push(("xtask".to_owned(), xtask, manifest));
    let mut problems = Vec::new();
    for (name, dir, manifest) in members {
        let Some(start) = manifest.find("\n[dev-dependencies]\n") else {
            continue;
        };
        let section = &manifest[start + "\n[dev-dependencies]\n".len()..];
        let section = &section[..section.find("\n[").unwrap_or(section.len())];
        let mut code = String::new();
        for (_, text) in sources(&dir) {
            code.push_str(&text);
        }
        code.push_str(&fs::read_to_string(dir.join("README.md")).unwrap_or_default());
        for line in section.lines() {
            let Some((dependency, _)) = line.split_once(" = ").or_else(|| line.split_once('.'))
            else {
                continue;
            };
            let dependency = dependency.trim().trim_end_matches(".workspace");
            if dependency.is_empty() || dependency.starts_with('#') {
                continue;
            }
            if LINKED_ONLY.contains(&dependency) {
                continue;
            }
            let library = LIBRARY_NAMES
                .iter()
                .find(|(package, _)| *package == dependency)
                .map_or_else(
                    || dependency.replace('-', "_"),
                    |(_, lib)| (*lib).to_owned(),
                );
            let used = code.match_indices(&library).any(|(at, _)| {
                let before = code[..at].chars().next_back();
                let after = code[at + library.len()..].chars().next();
                let boundary =
                    |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                boundary(before) && boundary(after)
            });
            if !used {
                problems.push(format!("{name}: dev-dependency {dependency} is not used"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A crate that only records metrics builds brisk-metrics' core: no histogram store and no
/// budget-file parser in any other published crate's default dependency tree.
#[test]
fn only_brisk_metrics_builds_the_registry_and_budgets() {
    for (_, name, _) in published_members() {
        if name == "brisk-metrics" {
            continue;
        }
        let output = std::process::Command::new(env!("CARGO"))
            .args(["tree", "-e", "normal", "--prefix", "none", "-p", &name])
            .current_dir(workspace_root())
            .output()
            .expect("cargo tree runs");
        assert!(output.status.success(), "{output:?}");
        let tree = String::from_utf8(output.stdout).unwrap();
        for heavy in ["hdrhistogram ", "toml "] {
            assert!(
                !tree.lines().any(|line| line.starts_with(heavy)),
                "{name}'s default tree builds {heavy}through brisk-metrics:\n{tree}"
            );
        }
    }
}

/// Every relative link in the repository's Markdown (README, docs/, each crate's README and
/// CHANGELOG) points at a file that exists.
#[test]
fn every_relative_markdown_link_resolves() {
    let root = workspace_root();
    let mut files = vec![root.join("README.md")];
    for dir in [root.join("docs")]
        .into_iter()
        .chain(crates().into_iter().map(|(_, path, _)| path))
    {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "md") {
                files.push(path);
            }
        }
    }
    let mut broken = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("](") {
            let target = &text[at + 2..];
            let Some(end) = target.find(')') else {
                continue;
            };
            let target = target[..end].split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.contains(' ') {
                continue;
            }
            if !file.parent().unwrap().join(target).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// A published crate's examples build from the published crate: they may not use the
/// unpublished brisk-testkit (tests may, benchmarks may).
#[test]
fn no_published_example_needs_the_testkit() {
    let mut problems = Vec::new();
    for (_, name, _) in published_members() {
        let examples = workspace_root().join("crates").join(&name).join("examples");
        if !examples.is_dir() {
            continue;
        }
        for (path, text) in sources(&examples) {
            if text.contains("brisk_testkit") {
                problems.push(format!("{} uses brisk_testkit", path.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
