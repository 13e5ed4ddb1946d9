//! Plain-text tables and human-friendly times for CLI output.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Left-aligned columns separated by two spaces, header first.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// RFC 3339 to the second (UTC), e.g. `2026-01-31T14:00:00Z`.
pub fn time(ts: Timestamp) -> String {
    Timestamp::from_second(ts.as_second())
        .unwrap_or(ts)
        .to_string()
}

/// A span in whole seconds, e.g. `29m 59s`; negative spans read as `0s`.
pub fn span(d: SignedDuration) -> String {
    let secs = u64::try_from(d.as_secs()).unwrap_or(0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// `in 29m 59s` / `5m ago`, relative to `now`.
pub fn relative(ts: Timestamp, now: Timestamp) -> String {
    let d = ts.duration_since(now);
    if d.is_negative() {
        format!("{} ago", span(-d))
    } else {
        format!("in {}", span(d))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let out = render(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "alice".into()],
                vec!["22".into(), "b".into()],
            ],
        );
        assert_eq!(out, "ID  NAME\n1   alice\n22  b\n");
    }

    #[test]
    fn formats_times() {
        let t: Timestamp = "2026-01-31T14:00:00.75Z".parse().unwrap();
        assert_eq!(time(t), "2026-01-31T14:00:00Z");
        let later = t + SignedDuration::from_secs(90);
        assert_eq!(relative(later, t), "in 1m 30s");
        assert_eq!(relative(t, later), "1m 30s ago");
    }
}
