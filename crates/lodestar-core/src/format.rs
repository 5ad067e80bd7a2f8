//! Numbers for people: the one place where a value becomes text (thousands separators, a few
//! decimals, percentages), shared by the core's own summaries, the CLI, the HTML report and
//! the server's answers to the dashboard. It imports nothing, so any layer may use it.

/// What is shown where there is no value.
pub const MISSING: &str = "–";

/// A number for people: thousands separated, a few decimals for small values (one from 10,
/// three below), none for whole numbers; `–` for a value that is not finite.
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        return MISSING.into();
    }
    let abs = value.abs();
    // Floating-point noise (a contribution of -50.99999999999978) reads as the whole number.
    let whole = (value - value.round()).abs() <= 1e-9 * abs.max(1.0);
    if abs >= 1000.0 || whole {
        let rounded = abs.round();
        let mut out = String::new();
        if value < 0.0 && rounded != 0.0 {
            out.push('-');
        }
        out.push_str(&group(&format!("{rounded:.0}")));
        out
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// [`number`], or `–` for none.
pub fn optional(value: Option<f64>) -> String {
    value.map_or_else(|| MISSING.into(), number)
}

/// [`number`] with a `+` before a positive value (a change); `–` for none.
pub fn signed(value: Option<f64>) -> String {
    match value {
        Some(v) if v > 0.0 && v.is_finite() => format!("+{}", number(v)),
        Some(v) => number(v),
        None => MISSING.into(),
    }
}

/// A size in bytes: `100 B`, `64 KiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// A count with thousands separated: 1,234,567.
pub fn thousands(n: u64) -> String {
    group(&n.to_string())
}

/// A share as a percentage with one decimal (0.6431 → 64.3%); `–` for none.
pub fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| MISSING.into(), |x| format!("{:.1}%", x * 100.0))
}

/// A relative change as a signed percentage with one decimal (0.125 → +12.5%); `–` for none.
pub fn signed_percent(share: Option<f64>) -> String {
    share.map_or_else(|| MISSING.into(), |x| format!("{:+.1}%", x * 100.0))
}

/// A share as a whole percentage (0.456 → 46%), where space is short (a heat map's cell).
pub fn whole_percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// A statistic with a fixed number of decimals (a lift, a correlation), without a minus sign
/// on a value that rounds to zero; `–` for none.
pub fn fixed(value: Option<f64>, decimals: usize) -> String {
    let Some(value) = value else {
        return MISSING.into();
    };
    let text = format!("{value:.decimals$}");
    match text.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => text,
    }
}

/// Digits with a comma every three from the right.
fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(3_480.0), "3,480");
        assert_eq!(number(-12_345.6), "-12,346");
        assert_eq!(number(1_234_567.0), "1,234,567");
        assert_eq!(number(42.0), "42");
        assert_eq!(number(-0.0), "0");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(2.456), "2.456");
        assert_eq!(number(-50.99999999999978), "-51");
        assert_eq!(number(f64::NAN), "–");
        assert_eq!(optional(None), "–");
        assert_eq!(signed(Some(12.5)), "+12.5");
        assert_eq!(signed(Some(-3.0)), "-3");
        assert_eq!(signed(Some(0.0)), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn sizes_are_written_in_binary_units() {
        assert_eq!(bytes(512 << 20), "512 MiB");
        assert_eq!(bytes(1536 << 20), "1.5 GiB");
        assert_eq!(bytes(100), "100 B");
        assert_eq!(bytes(64 << 10), "64 KiB");
    }

    #[test]
    fn shares_read_as_percentages() {
        assert_eq!(percent(Some(0.6431)), "64.3%");
        assert_eq!(percent(None), "–");
        assert_eq!(signed_percent(Some(0.125)), "+12.5%");
        assert_eq!(signed_percent(Some(-0.5)), "-50.0%");
        assert_eq!(whole_percent(0.456), "46%");
        assert_eq!(fixed(Some(1.234), 2), "1.23");
        assert_eq!(fixed(Some(-0.0001), 3), "0.000");
        assert_eq!(fixed(Some(-0.0123), 3), "-0.012");
        assert_eq!(fixed(None, 2), "–");
    }
}
