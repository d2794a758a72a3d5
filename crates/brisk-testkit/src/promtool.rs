//! Prometheus' own checker, `promtool check metrics`, over an exposition.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use crate::{
    error::{Error, Result, io_err},
    process::find_binary,
};

/// What `promtool check metrics` says of `exposition` (Prometheus text format): `Ok(())` when
/// it has no complaint, [`Error::Setup`] with its complaints otherwise, and
/// [`Error::BinaryNotFound`] when `promtool` (Debian's `prometheus` package) is not installed.
pub fn promtool_check_metrics(exposition: &str) -> Result<()> {
    let promtool = find_binary("promtool", "prometheus", &[])?;
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("starting promtool"))?;
    // Written from another thread: promtool may answer before it has read everything.
    let mut stdin = child.stdin.take().ok_or_else(|| Error::Io {
        action: "opening promtool's input".to_owned(),
        source: std::io::Error::other("no stdin"),
    })?;
    let text = exposition.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let output = child
        .wait_with_output()
        .map_err(io_err("running promtool"))?;
    let written = writer.join().unwrap_or(Ok(()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && said.trim().is_empty() {
        return written.map_err(io_err("writing to promtool"));
    }
    Err(Error::Setup {
        program: promtool,
        status: output.status,
        output: said,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs `promtool`, which `cargo xtask ci` installs.
    #[test]
    fn promtool_accepts_a_clean_exposition_and_names_each_complaint() {
        let clean = "# HELP up_total Times up.\n# TYPE up_total counter\nup_total 1\n";
        promtool_check_metrics(clean).unwrap();
        let bare = "# TYPE up_total counter\nup_total 1\n# HELP up Up.\n# TYPE up counter\nup 1\n";
        let complaint = promtool_check_metrics(bare).unwrap_err().to_string();
        assert!(complaint.contains("up_total no help text"), "{complaint}");
        assert!(
            complaint.contains(r#"up counter metrics should have "_total" suffix"#),
            "{complaint}"
        );
    }
}
