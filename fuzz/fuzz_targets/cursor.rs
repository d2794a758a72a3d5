//! Any text as a cursor: decoding never panics and never accepts what this codec did not sign
//! for this scope; and any one-byte change to a cursor it did sign is refused.
#![no_main]

use std::sync::LazyLock;

use brisk_stream::{Cursor, Cursors, Scope};
use libfuzzer_sys::fuzz_target;

static CURSORS: LazyLock<Cursors> = LazyLock::new(|| {
    Cursors::builder()
        .key(1, [7u8; 32])
        .retired_key(2, [9u8; 32])
        .build()
        .unwrap()
});
static SCOPE: LazyLock<Scope> = LazyLock::new(|| Scope::new("fuzz by a, b"));

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        assert!(
            CURSORS
                .decode::<(i64, Option<String>)>(&SCOPE, text)
                .is_err()
        );
    }
    // A real cursor with a key taken from the input, then altered at one byte.
    let Some((&at, rest)) = input.split_first() else {
        return;
    };
    let key = (
        i64::from(at),
        Some(String::from_utf8_lossy(rest).into_owned()),
    );
    let mut text = match CURSORS.encode(&SCOPE, &Cursor::after(key.clone())) {
        Ok(text) => text.into_bytes(),
        // Too long to be accepted back: refused when issued instead.
        Err(brisk_stream::Error::CursorTooLong { .. }) => return,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(
        CURSORS
            .decode::<(i64, Option<String>)>(&SCOPE, std::str::from_utf8(&text).unwrap())
            .unwrap(),
        Cursor::after(key)
    );
    let position = usize::from(at) % text.len();
    let original = text[position];
    text[position] = if original == b'A' { b'B' } else { b'A' };
    if let Ok(altered) = std::str::from_utf8(&text) {
        assert!(
            CURSORS
                .decode::<(i64, Option<String>)>(&SCOPE, altered)
                .is_err()
        );
    }
});
