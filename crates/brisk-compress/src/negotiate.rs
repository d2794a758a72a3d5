//! `Accept-Encoding` parsing and content-coding negotiation (RFC 9110 §12.5.3).

use crate::{Encoding, Error};

/// A quality value in thousandths: `q=0.5` is 500, `q=1` is 1000.
pub type Quality = u16;

const MAX_QUALITY: Quality = 1000;

/// A parsed `Accept-Encoding` request header.
///
/// Parsing never fails: an entry that does not follow RFC 9110 (a bad token, a q-value outside
/// 0–1 or with more than three decimals, a parameter other than `q`) is skipped and the rest of
/// the header still counts, as the RFC's robustness advice asks. Names are case-insensitive;
/// tokens this crate does not implement (`compress`, `lz4`, …) are kept only to be ignored.
///
/// ```
/// use brisk_compress::{AcceptEncoding, Encoding};
///
/// let accept = AcceptEncoding::parse(b"gzip;q=0.8, br, *;q=0");
/// let offer = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];
/// assert_eq!(accept.negotiate(&offer)?, Encoding::Brotli);
///
/// // Ties go to the server's order; `identity;q=0` with nothing usable is "not acceptable".
/// assert_eq!(AcceptEncoding::parse(b"gzip, br").negotiate(&[Encoding::Gzip, Encoding::Brotli])?, Encoding::Gzip);
/// assert!(AcceptEncoding::parse(b"lz4, identity;q=0").negotiate(&offer).is_err());
/// # Ok::<(), brisk_compress::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptEncoding {
    /// `None` when the request had no `Accept-Encoding` field at all.
    entries: Option<Vec<Entry>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    coding: Coding,
    quality: Quality,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Known(Encoding),
    Any,
    Other,
}

impl AcceptEncoding {
    /// The value for a request without an `Accept-Encoding` field.
    ///
    /// RFC 9110 lets a server then pick any coding, but clients that omit the header are mostly
    /// tools and libraries that cannot decode one, so [`negotiate`](Self::negotiate) answers
    /// identity.
    #[must_use]
    pub fn absent() -> Self {
        Self { entries: None }
    }

    /// Parses one field value. An empty value means "identity only".
    #[must_use]
    pub fn parse(value: &[u8]) -> Self {
        Self::parse_lines([value])
    }

    /// Parses a field sent on several lines, which HTTP defines as one comma-separated list.
    /// No lines at all is [`absent`](Self::absent).
    #[must_use]
    pub fn parse_lines<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut entries: Option<Vec<Entry>> = None;
        for line in lines {
            let entries = entries.get_or_insert_with(Vec::new);
            for element in line.split(|&byte| byte == b',') {
                if let Some(entry) = parse_entry(element) {
                    // The first entry for a coding counts; later duplicates are ignored.
                    if !entries.iter().any(|seen| seen.coding == entry.coding) {
                        entries.push(entry);
                    }
                }
            }
        }
        Self { entries }
    }

    /// Reads every `Accept-Encoding` field of a request.
    #[cfg(feature = "tower")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
    #[must_use]
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        Self::parse_lines(
            headers
                .get_all(http::header::ACCEPT_ENCODING)
                .iter()
                .map(http::HeaderValue::as_bytes),
        )
    }

    /// Whether the request had an `Accept-Encoding` field.
    #[must_use]
    pub fn is_present(&self) -> bool {
        self.entries.is_some()
    }

    /// The quality the client gave `encoding` explicitly or through `*`, or `None` when it
    /// named neither. `identity` is acceptable when not mentioned; see
    /// [`negotiate`](Self::negotiate).
    #[must_use]
    pub fn quality(&self, encoding: Encoding) -> Option<Quality> {
        let entries = self.entries.as_deref()?;
        let find = |coding| entries.iter().find(|entry| entry.coding == coding);
        find(Coding::Known(encoding))
            .or_else(|| find(Coding::Any))
            .map(|entry| entry.quality)
    }

    /// Picks the coding to respond with from `offer`, the codings the server can produce in its
    /// order of preference.
    ///
    /// - The highest quality wins; ties go to the earlier coding in `offer`.
    /// - A quality of 0 means "not acceptable".
    /// - `identity` is always available to the server. It wins only when the client ranks it
    ///   strictly above every offered coding, or as the last resort when nothing else is
    ///   acceptable; it is refused only by `identity;q=0`, or by `*;q=0` without an `identity`
    ///   entry.
    /// - Without the header, the answer is identity (see [`absent`](Self::absent)).
    ///
    /// # Errors
    /// [`Error::NotAcceptable`] when neither an offered coding nor identity is acceptable.
    pub fn negotiate(&self, offer: &[Encoding]) -> Result<Encoding, Error> {
        if self.entries.is_none() {
            return Ok(Encoding::Identity);
        }
        let best = offer
            .iter()
            .filter(|&&encoding| encoding != Encoding::Identity)
            .filter_map(|&encoding| Some((encoding, self.quality(encoding)?)))
            .filter(|&(_, quality)| quality > 0)
            // `max_by_key` keeps the last of equal keys, so walk the offer backwards to keep the
            // server's first choice among ties.
            .rev()
            .max_by_key(|&(_, quality)| quality);
        let identity = self.quality(Encoding::Identity);
        match (best, identity) {
            (Some((_, best_quality)), Some(identity_quality))
                if identity_quality > best_quality =>
            {
                Ok(Encoding::Identity)
            }
            (Some((encoding, _)), _) => Ok(encoding),
            (None, Some(0)) => Err(Error::NotAcceptable),
            (None, _) => Ok(Encoding::Identity),
        }
    }
}

/// `OWS`: optional spaces and horizontal tabs.
fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// `tchar` from RFC 9110 §5.6.2.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// One list element: `codings [ OWS ";" OWS "q=" qvalue ]`. `None` for an empty or invalid
/// element.
fn parse_entry(element: &[u8]) -> Option<Entry> {
    let mut parts = element.split(|&byte| byte == b';');
    let token = trim_ows(parts.next()?);
    if token.is_empty() || !token.iter().copied().all(is_tchar) {
        return None;
    }
    let coding = if token == b"*" {
        Coding::Any
    } else {
        Encoding::from_token(token).map_or(Coding::Other, Coding::Known)
    };
    let quality = match (parts.next(), parts.next()) {
        (None, _) => MAX_QUALITY,
        (Some(weight), None) => parse_weight(trim_ows(weight))?,
        // Accept-Encoding allows the weight as the only parameter.
        (Some(_), Some(_)) => return None,
    };
    Some(Entry { coding, quality })
}

/// `"q=" qvalue` with `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`; the
/// parameter name is case-insensitive.
fn parse_weight(weight: &[u8]) -> Option<Quality> {
    let [b'q' | b'Q', b'=', value @ ..] = weight else {
        return None;
    };
    let (whole, fraction) = match value {
        [whole] => (*whole, &[][..]),
        [whole, b'.', fraction @ ..] if fraction.len() <= 3 => (*whole, fraction),
        _ => return None,
    };
    if !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = fraction
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0, |acc, digit| acc * 10 + Quality::from(digit - b'0'));
    match whole {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(MAX_QUALITY),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_the_qvalue_grammar() {
        let cases: &[(&str, Option<Quality>)] = &[
            ("q=1", Some(1000)),
            ("q=1.", Some(1000)),
            ("q=1.000", Some(1000)),
            ("Q=0.5", Some(500)),
            ("q=0", Some(0)),
            ("q=0.", Some(0)),
            ("q=0.001", Some(1)),
            ("q=0.12", Some(120)),
            ("q=0.999", Some(999)),
            ("q=1.001", None),
            ("q=0.1234", None),
            ("q=2", None),
            ("q=-0.5", None),
            ("q=.5", None),
            ("q=", None),
            ("q = 0.5", None),
            ("q=0.5x", None),
            ("level=1", None),
            ("q=1e0", None),
        ];
        for &(weight, expected) in cases {
            assert_eq!(parse_weight(weight.as_bytes()), expected, "{weight}");
        }
    }
}
