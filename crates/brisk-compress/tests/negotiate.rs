//! Accept-Encoding negotiation: a table of real, odd and malformed headers, and properties
//! over arbitrary bytes.

use brisk_compress::{AcceptEncoding, Encoding, Error};
use proptest::prelude::*;

use Encoding::{Brotli as Br, Deflate, Gzip, Identity, Zstd};

const OFFER: [Encoding; 4] = [Br, Gzip, Zstd, Deflate];

#[test]
fn negotiation_table() {
    // (header, offer, expected); `None` is "not acceptable".
    let table: &[(&[u8], &[Encoding], Option<Encoding>)] = &[
        // What browsers and tools send.
        (b"gzip, deflate, br, zstd", &OFFER, Some(Br)),
        (b"gzip, deflate, br", &OFFER, Some(Br)),
        (b"gzip, deflate", &OFFER, Some(Gzip)),
        (b"gzip", &OFFER, Some(Gzip)),
        (b"deflate, gzip;q=1.0, *;q=0.5", &OFFER, Some(Gzip)),
        (b"identity", &OFFER, Some(Identity)),
        (b"", &OFFER, Some(Identity)),
        // q-values and ties.
        (b"gzip;q=0.5, zstd;q=0.9", &OFFER, Some(Zstd)),
        (b"br;q=0.8, gzip;q=0.8", &[Gzip, Br], Some(Gzip)),
        (b"br;q=0.8, gzip;q=0.8", &[Br, Gzip], Some(Br)),
        (b"gzip;q=0.001", &OFFER, Some(Gzip)),
        (b"gzip;q=0", &OFFER, Some(Identity)),
        (b"gzip;q=0.2, identity;q=0.5", &OFFER, Some(Identity)),
        (b"gzip;q=0.5, identity;q=0.5", &OFFER, Some(Gzip)),
        (b"br;q=1.000, gzip;q=0.999", &OFFER, Some(Br)),
        // Wildcards and refusals.
        (b"*", &OFFER, Some(Br)),
        (b"*;q=0.5, br;q=0.2", &OFFER, Some(Gzip)),
        (b"br;q=0, *;q=0.3", &OFFER, Some(Gzip)),
        (b"*;q=0", &OFFER, None),
        (b"*;q=0, identity", &OFFER, Some(Identity)),
        // Codings not listed are not acceptable once the header is present.
        (b"identity;q=0", &OFFER, None),
        (b"identity;q=0, gzip", &OFFER, Some(Gzip)),
        (b"identity;q=0", &[], None),
        (b"gzip;q=0, identity;q=0", &[Gzip], None),
        (b"lz4, identity;q=0", &OFFER, None),
        (b"zstd", &[Gzip], Some(Identity)),
        (b"gzip", &[], Some(Identity)),
        (b"gzip", &[Identity, Gzip], Some(Gzip)),
        // Case, aliases, whitespace and empty list elements.
        (b"GZIP;Q=1", &OFFER, Some(Gzip)),
        (b"x-gzip", &OFFER, Some(Gzip)),
        (b"  br ;  q=0.7 ,, \t gzip;q=0.6 ,", &OFFER, Some(Br)),
        (b",,,", &OFFER, Some(Identity)),
        // Malformed entries are skipped; the rest still counts.
        (b"br;q=1.5, gzip", &OFFER, Some(Gzip)),
        (b"br;q=0.1234, gzip;q=0.1", &OFFER, Some(Gzip)),
        (b"br;q=, gzip;q=0.1", &OFFER, Some(Gzip)),
        (b"br;q = 0.5, gzip;q=0.1", &OFFER, Some(Gzip)),
        (b"br;level=5, gzip;q=0.1", &OFFER, Some(Gzip)),
        (b"br;q=0.5;q=0.6, gzip;q=0.1", &OFFER, Some(Gzip)),
        (b"b r, gzip", &OFFER, Some(Gzip)),
        (b"br\xff, gzip;q=0.3", &OFFER, Some(Gzip)),
        (b"\"br\", gzip;q=0.3", &OFFER, Some(Gzip)),
        (b";q=1, gzip", &OFFER, Some(Gzip)),
        (b"identity;q=x, *;q=0", &OFFER, None),
        // The first entry for a coding counts.
        (b"gzip;q=0, gzip;q=1", &OFFER, Some(Identity)),
        (b"gzip;q=0.9, x-gzip;q=0.1, br;q=0.5", &OFFER, Some(Gzip)),
    ];
    for &(header, offer, expected) in table {
        let outcome = AcceptEncoding::parse(header).negotiate(offer);
        match expected {
            Some(encoding) => assert_eq!(
                outcome.ok(),
                Some(encoding),
                "{:?} offering {offer:?}",
                String::from_utf8_lossy(header)
            ),
            None => assert!(
                matches!(outcome, Err(Error::NotAcceptable)),
                "{:?}: {outcome:?}",
                String::from_utf8_lossy(header)
            ),
        }
    }
}

#[test]
fn a_missing_header_means_identity_and_lines_join_into_one_list() {
    assert_eq!(
        AcceptEncoding::absent().negotiate(&OFFER).unwrap(),
        Identity
    );
    assert!(!AcceptEncoding::absent().is_present());
    let lines = AcceptEncoding::parse_lines([&b"gzip;q=0.5"[..], b"br;q=0.9"]);
    assert_eq!(lines.negotiate(&OFFER).unwrap(), Br);
    assert_eq!(lines.quality(Br), Some(900));
    assert_eq!(lines.quality(Zstd), None);
    assert_eq!(
        AcceptEncoding::parse_lines(std::iter::empty()),
        AcceptEncoding::absent()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes: no panic, and the answer is an offered coding the client accepts, or
    /// identity, or "not acceptable" only when the client refused identity.
    #[test]
    fn any_header_gives_a_sound_answer(header in prop::collection::vec(any::<u8>(), 0..64)) {
        check(&header)?;
    }

    /// Headers built from real pieces, to reach the interesting cases more often.
    #[test]
    fn structured_headers_give_a_sound_answer(
        entries in prop::collection::vec(
            (
                prop::sample::select(vec!["gzip", "GZip", "x-gzip", "br", "zstd", "deflate", "identity", "*", "lz4", ""]),
                prop::option::of(prop::sample::select(vec!["q=0", "q=1", "q=0.5", "Q=0.25", "q=0.001", "q=1.0", "q=2", "q=", "q=0.5555"])),
            ),
            0..6,
        ),
    ) {
        let header = entries
            .iter()
            .map(|(coding, q)| q.map_or_else(|| (*coding).to_owned(), |q| format!("{coding};{q}")))
            .collect::<Vec<_>>()
            .join(", ");
        check(header.as_bytes())?;
    }
}

fn check(header: &[u8]) -> Result<(), TestCaseError> {
    let accept = AcceptEncoding::parse(header);
    match accept.negotiate(&OFFER) {
        Ok(Identity) => {
            prop_assert_ne!(accept.quality(Identity), Some(0));
            // Identity wins only if no offered coding is acceptable at least as much.
            let identity = accept.quality(Identity).unwrap_or(0);
            for encoding in OFFER {
                let quality = accept.quality(encoding).unwrap_or(0);
                prop_assert!(
                    quality == 0 || quality < identity,
                    "{encoding} at {quality} lost to identity"
                );
            }
        }
        Ok(encoding) => {
            prop_assert!(OFFER.contains(&encoding));
            let chosen = accept.quality(encoding).unwrap_or(0);
            prop_assert!(chosen > 0);
            for other in OFFER {
                prop_assert!(accept.quality(other).unwrap_or(0) <= chosen);
            }
        }
        Err(Error::NotAcceptable) => {
            prop_assert_eq!(accept.quality(Identity), Some(0));
            for encoding in OFFER {
                prop_assert_eq!(accept.quality(encoding).unwrap_or(0), 0);
            }
        }
        Err(other) => prop_assert!(false, "unexpected error {other}"),
    }
    Ok(())
}
