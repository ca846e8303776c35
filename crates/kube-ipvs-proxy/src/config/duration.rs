//! Go's duration syntax (`30s`, `1m0s`, `250ms`, `1h30m`, `1.5s`), as kube-proxy's flags and
//! KubeProxyConfiguration (`metav1.Duration`) write them.

use std::time::Duration;

use super::ConfigError;

/// Parses a Go duration string. Negative durations are refused: no setting here means anything by
/// them. `"0"` is the one unit-less value Go accepts.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let bad = |why: &str| ConfigError::Duration { value: text.to_string(), why: why.to_string() };
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(bad("negative durations mean nothing here"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return Err(bad("expected a number"));
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(bad("missing unit (ns, us, ms, s, m, h)")),
            _ => return Err(bad("unknown unit (ns, us, ms, s, m, h)")),
        };
        total_nanos = total_nanos
            .checked_add(scaled(number, unit_nanos).ok_or_else(|| bad("not a number"))?)
            .ok_or_else(|| bad("too large"))?;
        rest = after;
    }
    // Go's time.Duration is an int64 of nanoseconds (about 292 years): upstream refuses more.
    if total_nanos > i64::MAX as u128 {
        return Err(bad("beyond Go's duration range (about 292 years)"));
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| bad("too large"))?;
    // The remainder is below 1e9, so it always fits.
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// `number` (digits with at most one `.`) times `unit_nanos`, truncated to whole nanoseconds as
/// Go does. `None` when it is not a number or overflows.
fn scaled(number: &str, unit_nanos: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut nanos = whole.checked_mul(unit_nanos)?;
    let mut scale = unit_nanos;
    for digit in fraction.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos = nanos.checked_add(u128::from(digit - b'0') * scale)?;
    }
    Some(nanos)
}

/// Formats a duration as Go prints one (`1m0s`, `250ms`, `0s`), for logs that operators compare
/// with their configuration.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    if d < Duration::from_secs(1) {
        let nanos = d.subsec_nanos();
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}µs", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let frac = d.subsec_nanos();
    let seconds = if frac == 0 {
        format!("{s}s")
    } else {
        let digits = format!("{frac:09}");
        format!("{s}.{}s", digits.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("1m0s", Duration::from_secs(60)),
            ("1h30m", Duration::from_secs(5400)),
            ("2h22m", Duration::from_secs(8520)),
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            ("1m30.25s", Duration::from_millis(90_250)),
            ("+5s", Duration::from_secs(5)),
            (" 15m ", Duration::from_secs(900)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).unwrap(), *want, "{text}");
        }
    }

    #[test]
    fn refuses_malformed_durations() {
        for text in ["", "s", "30", "1x", "-1s", "1..5s", ".s", "5 s", "1h1", "99999999999999999999999h"] {
            assert!(parse_duration(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn formats_as_go_does() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(3661), "1h1m1s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1.5s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(*d), *want);
            assert_eq!(parse_duration(want).unwrap(), *d, "round trip of {want}");
        }
    }
}
