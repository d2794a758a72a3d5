//! Arbitrary compressed input for every decoder: never a panic, never more output than the limit,
//! and the one-shot and streaming decoders agree, on success and on failure alike (a decoder
//! that refused valid data only when it arrived in pieces passed the old check, which compared
//! outputs only when both succeeded).
#![no_main]

use brisk_compress::{Decoder, Encoding, decompress};
use libfuzzer_sys::fuzz_target;

const LIMIT: u64 = 1 << 20;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let encoding = Encoding::ALL[usize::from(selector) % Encoding::ALL.len()];
    let whole = decompress(encoding, data, LIMIT);
    if let Ok(output) = &whole {
        assert!(output.len() as u64 <= LIMIT);
    }
    // Fed in pieces whose size comes from the selector byte.
    let piece = usize::from(selector / 5).max(1);
    let mut decoder = Decoder::new(encoding, LIMIT);
    let mut streamed = Vec::new();
    let mut outcome = Ok(());
    for chunk in data.chunks(piece) {
        outcome = decoder.write(chunk);
        streamed.extend_from_slice(&decoder.take());
        if outcome.is_err() {
            break;
        }
    }
    let outcome = outcome.and_then(|()| decoder.finish());
    assert!(decoder.bytes_out() <= LIMIT + 1);
    assert_eq!(
        whole.is_ok(),
        outcome.is_ok(),
        "one-shot {whole:?} against streamed {outcome:?}"
    );
    if let Ok(output) = &whole {
        assert_eq!(output, &streamed);
    }
});
