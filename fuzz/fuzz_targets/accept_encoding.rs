//! Any `Accept-Encoding` value: parsing and negotiation never panic, and the answer is an offered
//! coding with a positive quality, identity, or "not acceptable" only when identity is refused.
#![no_main]

use brisk_compress::{AcceptEncoding, Encoding};
use libfuzzer_sys::fuzz_target;

const OFFER: [Encoding; 4] = [
    Encoding::Brotli,
    Encoding::Gzip,
    Encoding::Zstd,
    Encoding::Deflate,
];

fuzz_target!(|header: &[u8]| {
    let accept = AcceptEncoding::parse(header);
    match accept.negotiate(&OFFER) {
        Ok(Encoding::Identity) => assert_ne!(accept.quality(Encoding::Identity), Some(0)),
        Ok(encoding) => assert!(accept.quality(encoding).unwrap_or(0) > 0),
        Err(_) => assert_eq!(accept.quality(Encoding::Identity), Some(0)),
    }
});
