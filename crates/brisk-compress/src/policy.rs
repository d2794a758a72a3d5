//! What to compress, with which codings and at which levels.

use crate::{Encoding, Error, Level, Result};

/// Content types compressed by default.
const DEFAULT_ALLOW: &[&str] = &[
    "text/*",
    "+json",
    "+xml",
    "application/json",
    "application/x-ndjson",
    "application/jsonl",
    "application/javascript",
    "application/ecmascript",
    "application/xml",
    "application/yaml",
    "application/toml",
    "application/graphql",
    "application/x-www-form-urlencoded",
    "application/wasm",
    "image/svg+xml",
    "image/bmp",
    "font/ttf",
    "font/otf",
];

/// Content types never compressed by default: already compressed formats. They matter once an
/// application allows `*/*`.
const DEFAULT_DENY: &[&str] = &[
    "image/*",
    "video/*",
    "audio/*",
    "font/woff",
    "font/woff2",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/zstd",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/vnd.rar",
    "application/pdf",
    "application/grpc",
];

/// A media-type pattern: `type/subtype`, `type/*`, `*/*` or a structured-syntax suffix `+json`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Suffix(String),
    Type(String),
    Any,
}

impl Pattern {
    fn parse(pattern: &str) -> Result<Self> {
        let pattern = pattern.trim().to_ascii_lowercase();
        let invalid = || Error::Policy {
            reason: format!("`{pattern}` is not a media-type pattern"),
        };
        let token = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if pattern == "*/*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = pattern.strip_prefix('+') {
            return if token(suffix) {
                Ok(Self::Suffix(format!("+{suffix}")))
            } else {
                Err(invalid())
            };
        }
        let (kind, subtype) = pattern.split_once('/').ok_or_else(invalid)?;
        match subtype {
            "*" if token(kind) => Ok(Self::Type(kind.to_owned())),
            _ if token(kind) && token(subtype) => Ok(Self::Exact(pattern.clone())),
            _ => Err(invalid()),
        }
    }

    /// How specific a match is; the most specific matching pattern decides.
    fn specificity(&self, essence: &str) -> Option<u8> {
        match self {
            Self::Exact(exact) => (essence == exact).then_some(3),
            Self::Suffix(suffix) => essence.ends_with(suffix.as_str()).then_some(2),
            Self::Type(kind) => essence
                .split_once('/')
                .is_some_and(|(prefix, _)| prefix == kind)
                .then_some(1),
            Self::Any => Some(0),
        }
    }
}

/// When and how to compress: minimum size, content types, offered codings and their levels.
///
/// ```
/// use brisk_compress::{Encoding, Level, Policy};
///
/// let policy = Policy::builder()
///     .min_size(512)
///     .encodings([Encoding::Zstd, Encoding::Brotli, Encoding::Gzip])
///     .level(Encoding::Brotli, Level::Precise(5))
///     .allow("application/vnd.acme.report")
///     .build()?;
/// assert!(policy.should_compress(Some("application/json; charset=utf-8"), Some(4096)));
/// assert!(!policy.should_compress(Some("application/json"), Some(100))); // too small to gain
/// assert!(!policy.should_compress(Some("image/png"), Some(1 << 20))); // already compressed
/// assert!(policy.should_compress(Some("application/vnd.acme.report"), None)); // streamed
/// # Ok::<(), brisk_compress::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    min_size: u64,
    encodings: Vec<Encoding>,
    levels: [Level; 5],
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
}

impl Default for Policy {
    /// 1 KiB minimum; brotli, gzip, zstd, deflate in that order; [`Level::Default`]
    /// (brotli 4); text, JSON, XML, JavaScript, WebAssembly, SVG and friends; no images, video,
    /// audio or archives.
    fn default() -> Self {
        PolicyBuilder::new().build_unchecked()
    }
}

impl Policy {
    /// A builder starting from the defaults.
    #[must_use]
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::new()
    }

    /// Bodies smaller than this are sent as they are: below about 1 KiB the codec's framing
    /// and the CPU outweigh the bytes saved.
    #[must_use]
    pub fn min_size(&self) -> u64 {
        self.min_size
    }

    /// The codings offered, in the server's order of preference.
    #[must_use]
    pub fn encodings(&self) -> &[Encoding] {
        &self.encodings
    }

    /// The level used for `encoding`.
    #[must_use]
    pub fn level(&self, encoding: Encoding) -> Level {
        self.levels[encoding.index()]
    }

    /// Whether a body of this `Content-Type` is worth compressing. Parameters (`; charset=…`)
    /// and case are ignored; a missing or unparsable type is not compressed. The most specific
    /// matching pattern decides (`type/subtype` over `+suffix` over `type/*` over `*/*`), and
    /// deny wins a tie.
    #[must_use]
    pub fn compresses_type(&self, content_type: Option<&str>) -> bool {
        let Some(essence) = content_type.and_then(essence) else {
            return false;
        };
        let best = |patterns: &[Pattern]| {
            patterns
                .iter()
                .filter_map(|pattern| pattern.specificity(&essence))
                .max()
        };
        match (best(&self.allow), best(&self.deny)) {
            (Some(allow), Some(deny)) => allow > deny,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Whether to compress a body of this type and size (`None` for a streamed body of unknown
    /// size, which is compressed when its type is).
    #[must_use]
    pub fn should_compress(&self, content_type: Option<&str>, size: Option<u64>) -> bool {
        size.is_none_or(|size| size >= self.min_size) && self.compresses_type(content_type)
    }
}

/// `type/subtype` in lower case, without parameters; `None` unless it looks like a media type.
fn essence(content_type: &str) -> Option<String> {
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    (!kind.is_empty() && !subtype.is_empty()).then_some(essence)
}

/// Builds a [`Policy`].
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    min_size: u64,
    encodings: Vec<Encoding>,
    levels: [Level; 5],
    allow: Vec<String>,
    deny: Vec<String>,
}

impl PolicyBuilder {
    fn new() -> Self {
        Self {
            min_size: 1024,
            // Brotli when accepted, else gzip: every browser sends `gzip, deflate, br` and brotli
            // is ~15–25 % smaller on text at level 4; zstd next, then deflate.
            encodings: vec![
                Encoding::Brotli,
                Encoding::Gzip,
                Encoding::Zstd,
                Encoding::Deflate,
            ],
            levels: [Level::Default; 5],
            allow: DEFAULT_ALLOW.iter().map(|&p| p.to_owned()).collect(),
            deny: DEFAULT_DENY.iter().map(|&p| p.to_owned()).collect(),
        }
    }

    /// Bodies smaller than `bytes` are not compressed (default 1024).
    #[must_use]
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = bytes;
        self
    }

    /// The codings to offer, most preferred first. Identity is always available and need not
    /// be listed.
    #[must_use]
    pub fn encodings(mut self, encodings: impl IntoIterator<Item = Encoding>) -> Self {
        self.encodings = encodings
            .into_iter()
            .filter(|&e| e != Encoding::Identity)
            .collect();
        self.encodings.dedup();
        self
    }

    /// The level for one coding.
    #[must_use]
    pub fn level(mut self, encoding: Encoding, level: Level) -> Self {
        self.levels[encoding.index()] = level;
        self
    }

    /// Also compress this media-type pattern (`type/subtype`, `type/*`, `*/*`, `+suffix`).
    #[must_use]
    pub fn allow(mut self, pattern: impl Into<String>) -> Self {
        self.allow.push(pattern.into());
        self
    }

    /// Never compress this pattern.
    #[must_use]
    pub fn deny(mut self, pattern: impl Into<String>) -> Self {
        self.deny.push(pattern.into());
        self
    }

    /// Forgets the default allow and deny lists, to start from none.
    #[must_use]
    pub fn clear_content_types(mut self) -> Self {
        self.allow.clear();
        self.deny.clear();
        self
    }

    /// Builds the policy.
    ///
    /// # Errors
    /// [`Error::Policy`] for a pattern that is not a media-type pattern.
    pub fn build(self) -> Result<Policy> {
        let parse = |patterns: Vec<String>| {
            patterns
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Policy {
            min_size: self.min_size,
            encodings: self.encodings,
            levels: self.levels,
            allow: parse(self.allow)?,
            deny: parse(self.deny)?,
        })
    }

    fn build_unchecked(self) -> Policy {
        // The defaults are constants checked by `the_defaults_parse`.
        let parse = |patterns: Vec<String>| {
            patterns
                .iter()
                .filter_map(|p| Pattern::parse(p).ok())
                .collect()
        };
        Policy {
            min_size: self.min_size,
            encodings: self.encodings,
            levels: self.levels,
            allow: parse(self.allow),
            deny: parse(self.deny),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_parse() {
        for pattern in DEFAULT_ALLOW.iter().chain(DEFAULT_DENY) {
            assert!(Pattern::parse(pattern).is_ok(), "{pattern}");
        }
        assert_eq!(Policy::default().allow.len(), DEFAULT_ALLOW.len());
        assert_eq!(Policy::default().deny.len(), DEFAULT_DENY.len());
    }

    #[test]
    fn default_content_types() {
        let policy = Policy::default();
        for yes in [
            "text/html; charset=utf-8",
            "TEXT/CSS",
            "application/json",
            "application/problem+json",
            "application/atom+xml",
            "image/svg+xml",
            "text/event-stream",
            "application/x-ndjson",
            "application/wasm",
        ] {
            assert!(policy.compresses_type(Some(yes)), "{yes}");
        }
        for no in [
            "image/png",
            "image/jpeg",
            "video/mp4",
            "audio/ogg",
            "font/woff2",
            "application/zip",
            "application/gzip",
            "application/octet-stream",
            "application/grpc",
            "",
            "json",
            "/",
        ] {
            assert!(!policy.compresses_type(Some(no)), "{no}");
        }
        assert!(!policy.compresses_type(None));
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let policy = Policy::builder()
            .allow("*/*")
            .deny("text/csv")
            .build()
            .unwrap();
        assert!(policy.compresses_type(Some("application/octet-stream")));
        assert!(
            !policy.compresses_type(Some("image/png")),
            "default deny beats */*"
        );
        assert!(
            policy.compresses_type(Some("image/svg+xml")),
            "exact allow beats image/*"
        );
        assert!(
            !policy.compresses_type(Some("text/csv")),
            "exact deny beats text/*"
        );
        let equal = Policy::builder()
            .clear_content_types()
            .allow("text/*")
            .deny("text/*")
            .build()
            .unwrap();
        assert!(
            !equal.compresses_type(Some("text/plain")),
            "deny wins a tie"
        );
    }

    #[test]
    fn bad_patterns_are_errors() {
        for bad in [
            "json",
            "text/",
            "/json",
            "+",
            "te xt/plain",
            "text/plain/extra",
        ] {
            assert!(
                matches!(
                    Policy::builder().allow(bad).build(),
                    Err(Error::Policy { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn sizes_and_levels() {
        let policy = Policy::builder()
            .min_size(10)
            .level(Encoding::Zstd, Level::Best)
            .build()
            .unwrap();
        assert!(!policy.should_compress(Some("text/plain"), Some(9)));
        assert!(policy.should_compress(Some("text/plain"), Some(10)));
        assert!(policy.should_compress(Some("text/plain"), None));
        assert_eq!(policy.level(Encoding::Zstd), Level::Best);
        assert_eq!(policy.level(Encoding::Brotli), Level::Default);
        assert_eq!(Policy::default().min_size(), 1024);
        assert_eq!(
            Policy::default().encodings()[..2],
            [Encoding::Brotli, Encoding::Gzip]
        );
    }
}
