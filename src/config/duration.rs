//! Durations on the command line, in environment variables and in the config file: `30s`, `500ms`, `2m`,
//! `1h`, or a bare number of seconds.

use std::time::Duration;

use super::MAX_SECS;

/// Parses a duration: a number (decimals allowed) and an optional unit, `ms`, `s`, `m` or `h` (no unit:
/// seconds). At most [`MAX_SECS`]: deadlines are added to `Instant`s, and no wait needs more than a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    // Said plainly: read as a number and a unit, "-5s" would be an unknown unit "-5s".
    if t.starts_with('-') {
        return Err(format!("{s:?}: a duration cannot be negative"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use ms, s, m or h, e.g. 500ms or 30s)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 30s, 500ms or 2m"))?;
    let secs = value * scale;
    if !(0.0..=MAX_SECS as f64).contains(&secs) {
        return Err(format!("{s:?}: at most {MAX_SECS} s (a day)"));
    }
    Ok(Duration::from_secs_f64(secs))
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
        let ok =
            |s: &str, ms: u64| assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        ok("30", 30_000);
        ok("30s", 30_000);
        ok(" 1.5s ", 1_500);
        ok("500ms", 500);
        ok("2m", 120_000);
        ok("1h", 3_600_000);
        ok("0", 0);
        for bad in ["", "s", "-1s", "10 parsecs", "1e3", "2d", "90000", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration("-5s"),
            Err("\"-5s\": a duration cannot be negative".into())
        );
        assert_eq!(parse_optional_duration("0s"), Ok(MaybeDuration(None)));
        assert_eq!(show(Duration::from_secs(15)), "15s");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
    }
}
