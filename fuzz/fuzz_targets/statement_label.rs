//! Any SQL text, any bound: the statement label never panics, stays within the bound (plus the
//! `…` that marks a cut), and normalised SQL (no `/* name: */` comment) is its own label.
#![no_main]

use brisk_pool::statement_label;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (max, bytes) = input;
    let Ok(sql) = std::str::from_utf8(bytes) else {
        return;
    };
    let max = usize::from(max).max(1);
    let label = statement_label(sql, max);
    assert!(label.chars().count() <= max + 1, "{label:?} over {max}");
    if !label.ends_with('…') && !sql.contains("/*") {
        assert_eq!(statement_label(&label, max), label, "not stable: {sql:?}");
    }
});
