//! The one way jitgate reads a duration a person wrote — in the configuration, on the
//! command line, in an API request, in a policy rule: humantime syntax (`30s`, `10m`,
//! `2h`, `1h 30m`, `7d`), and longer than zero. Callers add their own bounds (a grant's
//! longest duration) and the name of the field in their error.

use jiff::SignedDuration;

/// `text` as a positive duration, or a message saying what is wrong and what to write.
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    const EXAMPLES: &str = "examples: 30s, 10m, 2h, 1h 30m";
    let std = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?}: {e} ({EXAMPLES})"))?;
    let d = SignedDuration::try_from(std)
        .map_err(|_| format!("invalid duration {text:?}: too long ({EXAMPLES})"))?;
    if d.is_zero() {
        return Err(format!(
            "invalid duration {text:?}: it must be longer than zero ({EXAMPLES})"
        ));
    }
    Ok(d)
}

/// [`parse_duration`] as a `std` duration (timeouts and intervals).
pub fn parse_std_duration(text: &str) -> Result<std::time::Duration, String> {
    parse_duration(text).map(|d| d.unsigned_abs())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_humantime_and_refuses_zero_and_garbage() {
        assert_eq!(
            parse_duration(" 1h 30m ").unwrap(),
            SignedDuration::from_mins(90)
        );
        assert_eq!(
            parse_std_duration("250ms").unwrap(),
            std::time::Duration::from_millis(250)
        );
        for zero in ["0s", "0m", "0h 0s"] {
            let e = parse_duration(zero).unwrap_err();
            assert!(e.contains("longer than zero"), "{e}");
        }
        for bad in ["", "ten minutes", "5", "-5m", "1h30"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(
                e.starts_with("invalid duration") && e.contains("30s"),
                "{bad}: {e}"
            );
        }
    }
}
