use std::{borrow::Cow, fmt};

use crate::error::{Error, Result};

/// The label sets a `Registry` keeps per metric name by default
/// (`RegistryBuilder::max_label_sets`); the tower layer's default route budget is sized to fit.
#[cfg_attr(not(any(feature = "registry", feature = "tower")), allow(dead_code))]
pub(crate) const DEFAULT_MAX_LABEL_SETS: usize = 1000;

/// Names one series: a metric name and a few static labels, validated once when created so
/// that recording never has to check anything.
///
/// Labels are kept sorted by name, so the same set given in any order is the same series.
///
/// ```
/// # fn main() -> Result<(), brisk_metrics::Error> {
/// let key = brisk_metrics::Key::new("db_query_seconds")?
///     .with_label("query", "user_by_id")?;
/// assert_eq!(key.to_string(), r#"db_query_seconds{query="user_by_id"}"#);
/// assert!(brisk_metrics::Key::new("2fast").is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    name: Cow<'static, str>,
    labels: Vec<(Cow<'static, str>, Cow<'static, str>)>,
}

impl Key {
    /// A key with no labels.
    ///
    /// # Errors
    /// [`Error::InvalidMetricName`] unless `name` matches `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Result<Self> {
        let name = name.into();
        let valid = name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
        });
        if name.is_empty() || !valid {
            return Err(Error::InvalidMetricName(name.into_owned()));
        }
        Ok(Self {
            name,
            labels: Vec::new(),
        })
    }

    /// Adds a label. Values may be any text; they are escaped on exposition.
    ///
    /// # Errors
    /// [`Error::InvalidLabelName`] unless the name matches `[a-zA-Z_][a-zA-Z0-9_]*`, does not
    /// start with `__` and is not `le` or `quantile` (which exposition adds);
    /// [`Error::DuplicateLabel`] when the name is already present.
    pub fn with_label(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Result<Self> {
        let label = name.into();
        let valid = !label.is_empty()
            && label.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphabetic() || b == b'_' || (i > 0 && b.is_ascii_digit())
            })
            && !label.starts_with("__")
            && label != "le"
            && label != "quantile";
        if !valid {
            return Err(Error::InvalidLabelName {
                metric: self.name.into_owned(),
                name: label.into_owned(),
            });
        }
        match self
            .labels
            .binary_search_by(|(n, _)| n.as_ref().cmp(&label))
        {
            Ok(_) => Err(Error::DuplicateLabel {
                metric: self.name.into_owned(),
                name: label.into_owned(),
            }),
            Err(at) => {
                self.labels.insert(at, (label, value.into()));
                Ok(self)
            }
        }
    }

    /// The metric name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The labels, sorted by name.
    pub fn labels(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.labels.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// The same name with the labels replaced by `overflow="true"`: where series beyond the
    /// label-set cap are counted.
    #[cfg(feature = "registry")]
    pub(crate) fn overflow(&self) -> Self {
        Self {
            name: self.name.clone(),
            labels: vec![(Cow::Borrowed("overflow"), Cow::Borrowed("true"))],
        }
    }
}

impl fmt::Display for Key {
    /// Prometheus series notation: `name{label="value",...}` with values escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (name, value)) in self.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{name}=\"")?;
                write_escaped(f, value)?;
                f.write_str("\"")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// Escapes a label value for the Prometheus text format: `\`, `"` and newline.
pub(crate) fn write_escaped(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    for c in value.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str("\\n")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["a", "_x", "ns:sub_total", "A9"] {
            assert!(Key::new(good).is_ok(), "{good}");
        }
        for bad in ["", "9a", "a-b", "a b", "é"] {
            assert!(
                matches!(Key::new(bad), Err(Error::InvalidMetricName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn labels_are_validated_sorted_and_unique() {
        let key = Key::new("m").unwrap();
        for bad in ["", "1a", "__x", "le", "quantile", "a:b", "a-b"] {
            assert!(
                matches!(
                    key.clone().with_label(bad, "v"),
                    Err(Error::InvalidLabelName { .. })
                ),
                "{bad}"
            );
        }
        let a = key
            .clone()
            .with_label("b", "2")
            .unwrap()
            .with_label("a", "1")
            .unwrap();
        let b = key
            .clone()
            .with_label("a", "1")
            .unwrap()
            .with_label("b", "2")
            .unwrap();
        assert_eq!(a, b);
        assert!(matches!(
            a.with_label("a", "x"),
            Err(Error::DuplicateLabel { .. })
        ));
    }

    #[test]
    fn display_escapes_values() {
        let key = Key::new("m")
            .unwrap()
            .with_label("path", "a\"b\\c\nd")
            .unwrap();
        assert_eq!(key.to_string(), r#"m{path="a\"b\\c\nd"}"#);
    }
}
