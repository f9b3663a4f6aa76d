//! Durations as options take them: `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
//!
//! One parser for every duration option, so that they all read the same way and are all bounded the same
//! way: a deadline is `now + duration`, and `Instant + Duration` panics on overflow, so no option may be
//! longer than [`MAX_SECS`] (a day). Whole numbers only: `1.5s` is refused with a hint to write `1500ms`,
//! which keeps the grammar to one line and every value exact.

use std::time::Duration;

use super::MAX_SECS;

/// Parses a duration option (see the module docs): digits, then an optional unit (`ms`, `s`, `m`, `h`;
/// none means seconds), at most [`MAX_SECS`]. Made for `clap`'s `value_parser`; the message says what is
/// expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    // Said plainly: read as digits and a unit, "-5s" would be "expected a whole number".
    if text.starts_with('-') {
        return Err(format!("{s:?}: a duration cannot be negative"));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let expected =
        "expected a whole number with a unit (500ms, 30s, 2m, 1h) or a bare number of seconds";
    if digits.is_empty() {
        return Err(format!("{s:?}: {expected}"));
    }
    if unit.starts_with('.') {
        return Err(format!("{s:?}: whole numbers only (write 1500ms for 1.5s)"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: too large (at most {MAX_SECS}s, a day)"))?;
    let duration = match unit.trim_start() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unknown unit {:?}; {expected}", unit.trim())),
    };
    if duration > Duration::from_secs(MAX_SECS) {
        return Err(format!("{s:?}: too long (at most {MAX_SECS}s, a day)"));
    }
    Ok(duration)
}

/// A duration that must not be zero (a deadline of zero would fail every wait).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: must be more than zero")),
        d => Ok(d),
    }
}

/// A duration that may be off (`0`). A type of its own, because clap reads an `Option` field as "the
/// option may be absent", not as the value an option parses to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeDuration(pub Option<Duration>);

/// A duration where `0` means "off".
pub fn parse_optional_duration(s: &str) -> Result<MaybeDuration, String> {
    parse_duration(s).map(|d| MaybeDuration((!d.is_zero()).then_some(d)))
}

/// A duration as the options write it: whole seconds as `30s`, else milliseconds.
pub fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        let ok = |s: &str| parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0ms"), Duration::ZERO);
        assert_eq!(ok(" 2m "), Duration::from_secs(120));
        assert_eq!(ok("10 s"), Duration::from_secs(10));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("86400"), Duration::from_secs(MAX_SECS));
        assert_eq!(ok("24h"), Duration::from_secs(MAX_SECS));
    }

    #[test]
    fn refusals_say_what_is_expected() {
        let err = |s: &str| parse_duration(s).expect_err(s);
        for s in ["", "s", "ms", "+1s", "ten seconds"] {
            assert!(err(s).contains("expected"), "{s}: {}", err(s));
        }
        assert!(err("1.5s").contains("1500ms"));
        assert!(err("10x").contains("unknown unit"));
        assert!(err("10sec").contains("unknown unit"));
        assert!(err("86401").contains("too long"));
        assert!(err("25h").contains("too long"));
        assert!(err("99999999999999999999h").contains("too large"));
        // Saturating multiplication: a huge count of hours is too long, never a wrapped small value.
        assert!(err("9999999999999999999m").contains("too long"));
    }

    #[test]
    fn zero_is_refused_or_off_and_durations_print_back() {
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_optional_duration("0"), Ok(MaybeDuration(None)));
        assert_eq!(
            parse_optional_duration("15s"),
            Ok(MaybeDuration(Some(Duration::from_secs(15))))
        );
        assert_eq!(
            parse_duration("-5s"),
            Err("\"-5s\": a duration cannot be negative".into())
        );
        assert_eq!(show(Duration::from_secs(15)), "15s");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
    }
}
