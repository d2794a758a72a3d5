//! `cargo xtask budget <budgets.toml> <snapshot.json>`: fails when a brisk-metrics snapshot
//! breaks a performance budget, so a service's CI can gate on it.

use std::{fs, path::Path};

use anyhow::{Context, Result, bail};
use brisk_metrics::{Budgets, Snapshot, Violation};

pub(crate) fn run(args: &[String]) -> Result<()> {
    let [budgets, snapshot] = args else {
        bail!("usage: cargo xtask budget <budgets.toml> <snapshot.json>");
    };
    let violations = check(Path::new(budgets), Path::new(snapshot))?;
    if violations.is_empty() {
        println!("budgets: all hold ({budgets} against {snapshot})");
        return Ok(());
    }
    for v in &violations {
        println!("budget violated: {v}");
    }
    bail!("{} budget violation(s)", violations.len())
}

fn check(budgets: &Path, snapshot: &Path) -> Result<Vec<Violation>> {
    let budgets = Budgets::from_file(budgets)?;
    let text = fs::read_to_string(snapshot)
        .with_context(|| format!("reading snapshot {}", snapshot.display()))?;
    let snapshot: Snapshot = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a brisk-metrics JSON snapshot",
            snapshot.display()
        )
    })?;
    Ok(budgets.check(&snapshot))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use brisk_metrics::{Key, Recorder, Registry, Unit};

    use super::*;

    #[test]
    fn violations_come_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        let h = registry.histogram(&Key::new("q_seconds").unwrap(), Unit::Seconds);
        h.record_duration(Duration::from_millis(30));
        let snapshot = dir.path().join("snapshot.json");
        fs::write(
            &snapshot,
            serde_json::to_string(&registry.snapshot()).unwrap(),
        )
        .unwrap();
        let tight = dir.path().join("tight.toml");
        fs::write(
            &tight,
            "[[latency]]\nmetric = \"q_seconds\"\np99 = \"10ms\"\n",
        )
        .unwrap();
        let loose = dir.path().join("loose.toml");
        fs::write(
            &loose,
            "[[latency]]\nmetric = \"q_seconds\"\np99 = \"1s\"\n",
        )
        .unwrap();

        assert_eq!(check(&tight, &snapshot).unwrap().len(), 1);
        assert!(check(&loose, &snapshot).unwrap().is_empty());
        let args = [tight.display().to_string(), snapshot.display().to_string()];
        assert!(run(&args).is_err());
        let bad = dir.path().join("bad.json");
        fs::write(&bad, "{").unwrap();
        let err = check(&loose, &bad).unwrap_err().to_string();
        assert!(err.contains("not a brisk-metrics JSON snapshot"), "{err}");
        assert!(run(&["only-one".to_owned()]).is_err());
    }
}
