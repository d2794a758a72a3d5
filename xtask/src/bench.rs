//! `cargo xtask bench [crate...]`: each crate's benchmarks, beside their peers in the same
//! process, written to docs/benchmarks.md as ratios.

use std::{fs, path::Path};

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;

/// Crates with benchmarks: (name for the command line, package, bench target).
const BENCHES: &[(&str, &str, &str)] = &[
    ("metrics", "brisk-metrics", "record"),
    ("dedup", "brisk-dedup", "single_flight"),
    ("pool", "brisk-pool", "pool"),
    ("batch", "brisk-batch", "loader"),
    ("compress", "brisk-compress", "codecs"),
    ("cache", "brisk-cache", "cache"),
    ("stream", "brisk-stream", "stream"),
];

pub(crate) fn run(selected: &[String]) -> Result<()> {
    for name in selected {
        if !BENCHES.iter().any(|(n, _, _)| n == name) {
            let known: Vec<&str> = BENCHES.iter().map(|(n, _, _)| *n).collect();
            bail!("no benchmarks for `{name}`; known: {}", known.join(", "));
        }
    }
    let machine = machine()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask sits in the workspace root")?;
    let path = root.join("docs").join("benchmarks.md");
    let mut doc = fs::read_to_string(&path).unwrap_or_else(|_| HEADER.to_owned());
    for (name, package, bench) in BENCHES {
        if !selected.is_empty() && !selected.iter().any(|s| s == name) {
            continue;
        }
        println!("==> bench {name} ({package}, {bench})");
        let table = Cmd::cargo()
            // All features: some benches need a connector's feature (brisk-pool's postgres).
            .args([
                "bench",
                "--quiet",
                "--all-features",
                "-p",
                package,
                "--bench",
                bench,
            ])
            .read()?;
        print!("{table}");
        let section = format!("## {package}\n\nMeasured on {machine}.\n\n{table}");
        doc = replace_section(&doc, name, &section);
    }
    fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

const HEADER: &str = "# Benchmarks\n\nWritten by `cargo xtask bench`: each brisk crate beside the peer a user would pick instead, in the same run. Ratios are brisk / peer (for times, lower is better).\n";

/// Replaces (or appends) the text between this crate's markers.
fn replace_section(doc: &str, name: &str, section: &str) -> String {
    let start = format!("<!-- bench:{name}:start -->");
    let end = format!("<!-- bench:{name}:end -->");
    let block = format!("{start}\n{section}{end}");
    match (doc.find(&start), doc.find(&end)) {
        (Some(s), Some(e)) if s < e => format!("{}{block}{}", &doc[..s], &doc[e + end.len()..]),
        _ => format!("{}\n{block}\n", doc.trim_end()),
    }
}

fn machine() -> Result<String> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let date = Cmd::new("date").args(["-u", "+%Y-%m-%d"]).read()?;
    Ok(format!("{cpus} × {model}, {}", date.trim()))
}

#[cfg(test)]
mod tests {
    use super::replace_section;

    #[test]
    fn sections_are_replaced_in_place_or_appended() {
        let doc = "# B\n<!-- bench:a:start -->\nold\n<!-- bench:a:end -->\ntail\n";
        let new = replace_section(doc, "a", "new\n");
        assert_eq!(
            new,
            "# B\n<!-- bench:a:start -->\nnew\n<!-- bench:a:end -->\ntail\n"
        );
        let appended = replace_section(&new, "b", "bee\n");
        assert!(appended.ends_with("<!-- bench:b:start -->\nbee\n<!-- bench:b:end -->\n"));
        assert!(appended.contains("new\n"));
    }
}
