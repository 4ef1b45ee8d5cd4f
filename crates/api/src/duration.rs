//! The duration syntax shared by the API and the CLI: integer-and-unit
//! parts such as `30s`, `10m`, `1h30m` or `500ms` (units `ms`, `s`, `m`,
//! `h`, `d`). `CheckpointSchedule.every` is written this way, and the CLI
//! reads `--since` with it.

use std::time::Duration;

/// Parses a duration made of integer-and-unit parts (`10m`, `1h30m`,
/// `500ms`); `None` when `s` is not one (empty, a number without a unit,
/// an unknown unit, or too large).
pub fn parse(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits_end);
        let number: u64 = number.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let seconds = |factor: u64| number.checked_mul(factor).map(Duration::from_secs);
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => seconds(1),
            "m" => seconds(60),
            "h" => seconds(3600),
            "d" => seconds(86400),
            _ => None,
        }?;
        total = total.checked_add(part)?;
        rest = tail;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_add_their_parts() {
        assert_eq!(parse("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse(" 1s "), Some(Duration::from_secs(1)));
    }

    #[test]
    fn anything_else_is_not_a_duration() {
        for bad in [
            "",
            "10",
            "m",
            "10y",
            "1.5s",
            "-1s",
            "1 s",
            "s1",
            "99999999999999999999s",
            "18446744073709551615d",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
