//! The one duration grammar of every brisk crate: in URLs, environment variables and files.

use std::time::Duration;

/// What [`parse_duration`] accepts, for error messages.
pub const DURATION_GRAMMAR: &str =
    "a number and a unit (ns, us or µs, ms, s, m or min, h): 800ns, 250us, 1.5ms, 5s, 30m, 1h";

/// Reads a duration written as a non-negative number, whole or decimal, followed by a unit:
/// `ns`, `us` (or `µs`), `ms`, `s`, `m` (or `min`) or `h`, with nothing between them
/// (`250ms`, `1.5s`, `30m`). Whole numbers are exact; decimals are rounded to the nearest
/// nanosecond. `None` for anything else: no unit, an unknown unit, a sign, or a duration too
/// long to hold.
///
/// ```
/// use std::time::Duration;
/// use brisk_metrics::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("250"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let nanos_per_unit: u64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    if !number.contains('.') {
        let whole: u64 = number.parse().ok()?;
        let nanos = u128::from(whole) * u128::from(nanos_per_unit);
        let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
        return Some(Duration::new(secs, (nanos % 1_000_000_000) as u32));
    }
    // Digits and one dot, at least one digit: `f64::from_str` would also take `inf`, `1e3`.
    if number.matches('.').count() > 1 || number.len() < 2 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(value * nanos_per_unit as f64 / 1e9).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_unit_and_decimals() {
        let cases = [
            ("800ns", Duration::from_nanos(800)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("20ms", Duration::from_millis(20)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.5ms", Duration::from_micros(500)),
            (".5s", Duration::from_millis(500)),
            ("5.s", Duration::from_secs(5)),
            ("30m", Duration::from_secs(1800)),
            ("30min", Duration::from_secs(1800)),
            ("1h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Some(expected), "{text}");
        }
        for refused in [
            "",
            "20",
            "ms",
            ".ms",
            "1..5s",
            "-1s",
            "+1s",
            "1 s",
            "1e3ms",
            "infs",
            "1sec",
            "1S",
            "18446744073709551615h",
        ] {
            assert_eq!(parse_duration(refused), None, "{refused:?}");
        }
    }

    proptest! {
        #[test]
        fn whole_numbers_are_exact(n in 0u64..10_000_000_000) {
            prop_assert_eq!(parse_duration(&format!("{n}ns")), Some(Duration::from_nanos(n)));
            prop_assert_eq!(parse_duration(&format!("{n}ms")), Some(Duration::from_millis(n)));
            prop_assert_eq!(parse_duration(&format!("{n}s")), Some(Duration::from_secs(n)));
        }

        #[test]
        fn any_text_is_read_or_refused_without_panicking(text in ".{0,24}") {
            let _ = parse_duration(&text);
        }
    }
}
