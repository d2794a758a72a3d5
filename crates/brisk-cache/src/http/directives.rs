//! Reading `Cache-Control` (RFC 9111 §5.2): directives, with their arguments.

use std::borrow::Cow;

/// One `Cache-Control` directive: its name (lowercase) and argument, if it has one (a quoted
/// argument unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive<'a> {
    /// The directive's name, lowercase: `max-age`, `no-store`, …
    pub name: Cow<'a, str>,
    /// Its argument: `60` in `max-age=60`, `set-cookie` in `no-cache="set-cookie"`.
    pub argument: Option<Cow<'a, str>>,
}

impl Directive<'_> {
    /// The argument as delta-seconds (`max-age=60`): `None` without one or if it is not a
    /// number; a number past 2³¹ (2147483648, about 68 years) is taken as 2³¹, as RFC 9111
    /// §1.2.2 asks.
    pub fn seconds(&self) -> Option<u64> {
        const MAX: u64 = 1 << 31;
        let argument = self.argument.as_deref()?;
        if argument.is_empty() || !argument.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        Some(
            argument
                .parse::<u64>()
                .map_or(MAX, |seconds| seconds.min(MAX)),
        )
    }
}

/// The directives of a `Cache-Control` value, in order. Malformed parts (an empty name, an
/// unterminated quote) are skipped, never an error: a cache reads what it understands.
///
/// ```
/// use brisk_cache::http::directives;
///
/// let found: Vec<_> = directives(r#"public, max-age=60, no-cache="set-cookie, x-a""#)
///     .map(|directive| (directive.name.into_owned(), directive.argument.map(|a| a.into_owned())))
///     .collect();
/// assert_eq!(found, [
///     ("public".to_owned(), None),
///     ("max-age".to_owned(), Some("60".to_owned())),
///     ("no-cache".to_owned(), Some("set-cookie, x-a".to_owned())),
/// ]);
/// ```
pub fn directives(value: &str) -> impl Iterator<Item = Directive<'_>> {
    Directives { rest: value }
}

struct Directives<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Directives<'a> {
    type Item = Directive<'a>;

    fn next(&mut self) -> Option<Directive<'a>> {
        loop {
            let text = self.rest.trim_start_matches([' ', '\t', ',']);
            if text.is_empty() {
                self.rest = text;
                return None;
            }
            let name_end = text.find(['=', ',']).unwrap_or(text.len());
            let name = text[..name_end].trim();
            let after = &text[name_end..];
            let (argument, rest) = match after.strip_prefix('=') {
                None => (None, after),
                Some(value) => {
                    let value = value.trim_start();
                    if let Some(quoted) = value.strip_prefix('"') {
                        match unquote(quoted) {
                            Some((argument, rest)) => (Some(argument), rest),
                            // Unterminated: nothing after it can be read.
                            None => {
                                self.rest = "";
                                return None;
                            }
                        }
                    } else {
                        let end = value.find(',').unwrap_or(value.len());
                        (Some(Cow::Borrowed(value[..end].trim())), &value[end..])
                    }
                }
            };
            // Whatever follows an argument up to the next comma is not part of it.
            self.rest = rest.find(',').map_or("", |at| &rest[at..]);
            if name.is_empty() || name.contains(['"', ' ', '\t']) {
                continue;
            }
            let name = if name.bytes().any(|byte| byte.is_ascii_uppercase()) {
                Cow::Owned(name.to_ascii_lowercase())
            } else {
                Cow::Borrowed(name)
            };
            return Some(Directive { name, argument });
        }
    }
}

/// The quoted string `text` starts (after its opening quote) unquoted, and what follows its
/// closing quote; `None` if it is not closed.
fn unquote(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let mut escaped = false;
    let mut owned: Option<String> = None;
    for (at, character) in text.char_indices() {
        if escaped {
            escaped = false;
            if let Some(owned) = &mut owned {
                owned.push(character);
            }
            continue;
        }
        match character {
            '\\' => {
                escaped = true;
                owned.get_or_insert_with(|| text[..at].to_owned());
            }
            '"' => {
                let rest = &text[at + 1..];
                return Some((owned.map_or(Cow::Borrowed(&text[..at]), Cow::Owned), rest));
            }
            _ => {
                if let Some(owned) = &mut owned {
                    owned.push(character);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(value: &str) -> Vec<(String, Option<String>)> {
        directives(value)
            .map(|directive| {
                (
                    directive.name.into_owned(),
                    directive.argument.map(Cow::into_owned),
                )
            })
            .collect()
    }

    #[test]
    fn reads_names_arguments_and_quoted_strings() {
        assert_eq!(
            read("No-Store , MAX-AGE = 5,private=\"a, b\\\"c\" junk, s-maxage=7"),
            [
                ("no-store".to_owned(), None),
                ("max-age".to_owned(), Some("5".to_owned())),
                ("private".to_owned(), Some("a, b\"c".to_owned())),
                ("s-maxage".to_owned(), Some("7".to_owned())),
            ]
        );
        assert_eq!(read(",,  ,"), []);
        assert_eq!(read("=5, a"), [("a".to_owned(), None)]);
        assert_eq!(read("a=\"open, b"), []);
    }

    #[test]
    fn seconds_are_digits_only_and_capped_at_two_to_the_31() {
        let seconds = |value: &str| directives(value).next().and_then(|d| d.seconds());
        assert_eq!(seconds("max-age=60"), Some(60));
        assert_eq!(seconds("max-age=\"60\""), Some(60));
        assert_eq!(seconds("max-age=-1"), None);
        assert_eq!(seconds("max-age=6x"), None);
        assert_eq!(seconds("max-age="), None);
        assert_eq!(seconds("max-age"), None);
        // Past 2³¹ (and past u64): 2³¹ (RFC 9111 §1.2.2).
        assert_eq!(seconds("max-age=99999999999999999999999"), Some(1 << 31));
        assert_eq!(seconds("max-age=2147483649"), Some(1 << 31));
        assert_eq!(seconds("max-age=2147483647"), Some(2_147_483_647));
    }

    proptest! {
        /// Any text is read without a panic, and directives written by the grammar are read
        /// back as written.
        #[test]
        fn written_directives_read_back(
            noise in ".{0,64}",
            written in proptest::collection::vec(
                ("[a-z][a-z-]{0,8}", proptest::option::of("[ -~]{0,12}")),
                0..6,
            ),
        ) {
            let _ = read(&noise);
            let text: Vec<String> = written
                .iter()
                .map(|(name, argument)| match argument {
                    None => name.clone(),
                    Some(argument) => format!(
                        "{name}=\"{}\"",
                        argument.replace('\\', "\\\\").replace('"', "\\\"")
                    ),
                })
                .collect();
            prop_assert_eq!(read(&text.join(", ")), written);
        }
    }
}
