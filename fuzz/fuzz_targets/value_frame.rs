//! Whatever a cache returns: `ValueCodec::decode` never panics, and what it accepts re-encodes
//! to a frame that decodes to the same value.
#![no_main]

use brisk_compress::ValueCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|framed: &[u8]| {
    let codec = ValueCodec::builder()
        .max_decoded_size(1 << 20)
        .build()
        .unwrap();
    if let Ok(value) = codec.decode(framed) {
        let again = codec.encode(&value).expect("encoding a decoded value");
        assert_eq!(codec.decode(&again).expect("decoding our own frame"), value);
    }
});
