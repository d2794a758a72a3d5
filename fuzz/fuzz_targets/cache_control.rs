//! Any `Cache-Control` text: its directives are read without panicking, each name non-empty
//! and lowercase, and the reader ends (every directive consumes input).
#![no_main]

use brisk_cache::http::directives;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let mut count = 0;
    for directive in directives(text) {
        assert!(!directive.name.is_empty());
        assert!(!directive.name.bytes().any(|byte| byte.is_ascii_uppercase()));
        let _ = directive.seconds();
        count += 1;
        assert!(count <= text.len(), "more directives than bytes");
    }
});
