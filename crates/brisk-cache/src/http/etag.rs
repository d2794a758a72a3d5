//! Entity tags (RFC 9110 §8.8.3): `"xyzzy"` (strong) or `W/"xyzzy"` (weak), and the lists of
//! them that `If-Match` and `If-None-Match` carry.

use std::fmt;

/// An entity tag: an opaque validator of one representation of a resource.
///
/// Strong tags change whenever the representation's bytes do; weak ones (`W/"…"`) only when
/// its meaning does. Compare with [`strong_eq`](Self::strong_eq) (`If-Match`) or
/// [`weak_eq`](Self::weak_eq) (`If-None-Match`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityTag {
    weak: bool,
    /// The characters between the quotes.
    tag: String,
}

/// An entity tag's text is not `"…"` or `W/"…"` with allowed characters (`!`, `#`–`~`, and
/// bytes from 0x80, so no `"`, space or control character) between the quotes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid entity tag {0:?}: expected \"…\" or W/\"…\" with visible characters and no quote inside"
)]
pub struct InvalidEntityTag(pub String);

impl EntityTag {
    /// A strong tag with `tag` between the quotes.
    ///
    /// # Errors
    /// [`InvalidEntityTag`] if `tag` holds a `"`, a space or a control character.
    pub fn strong(tag: impl Into<String>) -> Result<Self, InvalidEntityTag> {
        Self::new(false, tag.into())
    }

    /// A weak tag (`W/"…"`) with `tag` between the quotes.
    ///
    /// # Errors
    /// As [`strong`](Self::strong).
    pub fn weak(tag: impl Into<String>) -> Result<Self, InvalidEntityTag> {
        Self::new(true, tag.into())
    }

    fn new(weak: bool, tag: String) -> Result<Self, InvalidEntityTag> {
        if tag.bytes().all(is_etagc) {
            Ok(Self { weak, tag })
        } else {
            Err(InvalidEntityTag(tag))
        }
    }

    /// The weak tag of a cache entry's [version](crate::Stamped::version): `W/"<hex>"`. Weak,
    /// since it names the data a response is built from, not the response's bytes.
    pub fn from_version(version: u64) -> Self {
        Self {
            weak: true,
            tag: format!("{version:016x}"),
        }
    }

    /// Parses a whole field value such as `W/"v1"` (an `ETag` header).
    ///
    /// # Errors
    /// [`InvalidEntityTag`] for anything else.
    pub fn parse(text: &str) -> Result<Self, InvalidEntityTag> {
        match EntityTagRef::parse(text.trim_matches(is_ows)) {
            Some(tag) => Ok(tag.to_owned()),
            None => Err(InvalidEntityTag(text.to_owned())),
        }
    }

    /// Whether it is weak (`W/"…"`).
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The characters between the quotes.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The same tag, weak: what a representation transformed after the tag was made (say,
    /// compressed) carries, since its bytes are no longer the ones the tag named.
    #[must_use]
    pub fn into_weak(self) -> Self {
        Self { weak: true, ..self }
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both strong, same characters.
    pub fn strong_eq(&self, other: &EntityTagRef<'_>) -> bool {
        !self.weak && !other.weak && self.tag == other.tag
    }

    /// Weak comparison: the same characters, weak or not.
    pub fn weak_eq(&self, other: &EntityTagRef<'_>) -> bool {
        self.tag == other.tag
    }
}

impl EntityTag {
    /// The tag as an `ETag` header value. Entity-tag characters are visible ASCII, so every
    /// tag makes one; `None` is not reached.
    pub(crate) fn header_value(&self) -> Option<http::HeaderValue> {
        http::HeaderValue::from_str(&self.to_string()).ok()
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weak {
            f.write_str("W/")?;
        }
        write!(f, "\"{}\"", self.tag)
    }
}

/// An entity tag borrowed from a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTagRef<'a> {
    weak: bool,
    tag: &'a str,
}

impl<'a> EntityTagRef<'a> {
    /// `"…"` or `W/"…"`, exactly (no surrounding space).
    fn parse(text: &'a str) -> Option<Self> {
        let (weak, quoted) = match text.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let tag = quoted.strip_prefix('"')?.strip_suffix('"')?;
        tag.bytes().all(is_etagc).then_some(Self { weak, tag })
    }

    fn to_owned(self) -> EntityTag {
        EntityTag {
            weak: self.weak,
            tag: self.tag.to_owned(),
        }
    }
}

/// An `If-Match` or `If-None-Match` field value: `*`, or a list of entity tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagList<'a> {
    /// `*`: any current representation.
    Any,
    /// A comma-separated list, read lazily; members that are not entity tags are skipped.
    Tags(&'a str),
}

impl<'a> TagList<'a> {
    pub(crate) fn parse(text: &'a str) -> Self {
        if text.trim_matches(is_ows) == "*" {
            Self::Any
        } else {
            Self::Tags(text)
        }
    }

    /// The list's entity tags, in order. A comma inside a tag's quotes is part of the tag.
    pub(crate) fn tags(self) -> impl Iterator<Item = EntityTagRef<'a>> {
        let text = match self {
            Self::Any => "",
            Self::Tags(text) => text,
        };
        Members { rest: text }.filter_map(|member| EntityTagRef::parse(member.trim_matches(is_ows)))
    }
}

/// The members of a comma-separated list whose members may be quoted strings.
struct Members<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Members<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        for (at, byte) in self.rest.bytes().enumerate() {
            match byte {
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    let member = &self.rest[..at];
                    self.rest = &self.rest[at + 1..];
                    return Some(member);
                }
                _ => {}
            }
        }
        let member = self.rest;
        self.rest = "";
        Some(member)
    }
}

/// `etagc = %x21 / %x23-7E / obs-text`.
fn is_etagc(byte: u8) -> bool {
    byte == 0x21 || (0x23..=0x7E).contains(&byte) || byte >= 0x80
}

/// Optional whitespace: space or horizontal tab.
fn is_ows(character: char) -> bool {
    character == ' ' || character == '\t'
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tags(text: &str) -> Vec<(bool, &str)> {
        TagList::parse(text)
            .tags()
            .map(|tag| (tag.weak, tag.tag))
            .collect()
    }

    #[test]
    fn lists_parse_as_the_rfc_writes_them() {
        assert_eq!(TagList::parse(" * "), TagList::Any);
        assert_eq!(
            tags(r#""xyzzy", W/"r2d2xxxx" ,"c3piozzzz""#),
            [(false, "xyzzy"), (true, "r2d2xxxx"), (false, "c3piozzzz")]
        );
        assert_eq!(
            tags(r#""a,b", "c""#),
            [(false, "a,b"), (false, "c")],
            "a comma inside quotes"
        );
        assert_eq!(
            tags(r#"xyzzy, "ok", W/x, w/"lower""#),
            [(false, "ok")],
            "non-tags skipped"
        );
        assert_eq!(tags(r#""""#), [(false, "")], "the empty tag is a tag");
        assert!(tags("").is_empty());
    }

    #[test]
    fn comparison_follows_rfc_9110_table() {
        // RFC 9110 §8.8.3.2's examples.
        let w1 = EntityTag::weak("1").unwrap();
        let w2 = EntityTag::weak("2").unwrap();
        let s1 = EntityTag::strong("1").unwrap();
        let tag = |text| EntityTagRef::parse(text).unwrap();
        assert!(!w1.strong_eq(&tag(r#"W/"1""#)) && w1.weak_eq(&tag(r#"W/"1""#)));
        assert!(!w1.strong_eq(&tag(r#"W/"2""#)) && !w1.weak_eq(&tag(r#"W/"2""#)));
        assert!(!w2.strong_eq(&tag(r#""1""#)) && !w2.weak_eq(&tag(r#""1""#)));
        assert!(!w1.strong_eq(&tag(r#""1""#)) && w1.weak_eq(&tag(r#""1""#)));
        assert!(s1.strong_eq(&tag(r#""1""#)) && s1.weak_eq(&tag(r#""1""#)));
    }

    #[test]
    fn tags_print_and_parse_back() {
        let weak = EntityTag::weak("v1-gzip").unwrap();
        assert_eq!(weak.to_string(), r#"W/"v1-gzip""#);
        assert_eq!(EntityTag::parse(&weak.to_string()).unwrap(), weak);
        assert_eq!(
            EntityTag::strong("a").unwrap().into_weak(),
            EntityTag::weak("a").unwrap()
        );
        assert!(EntityTag::strong("has \"quote\"").is_err());
        assert!(EntityTag::strong("space inside").is_err());
        assert!(EntityTag::parse("unquoted").is_err());
    }

    proptest! {
        /// Any header text: parsing gives tags or nothing, never a panic, and every tag found
        /// prints back to text that parses to it.
        #[test]
        fn any_list_text_parses_without_panicking(text in "\\PC{0,200}") {
            for tag in TagList::parse(&text).tags() {
                let owned = tag.to_owned();
                prop_assert_eq!(EntityTag::parse(&owned.to_string()).unwrap(), owned);
            }
        }

        #[test]
        fn valid_tags_round_trip(tag in "[!#-~]{0,40}", weak: bool) {
            let made = if weak { EntityTag::weak(tag.clone()) } else { EntityTag::strong(tag.clone()) }.unwrap();
            let list = format!("\"other\", {made}, W/\"x\"");
            prop_assert!(TagList::parse(&list).tags().any(|found| made.weak_eq(&found)));
            prop_assert_eq!(EntityTag::parse(&made.to_string()).unwrap(), made);
        }
    }
}
