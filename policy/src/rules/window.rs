//! Weekly time windows for auto-approval, evaluated in the window's own time zone.
//!
//! A window is "these days, from HH:MM to HH:MM, in this zone". An instant is inside when,
//! converted to the zone's local time (so daylight-saving changes are respected), its
//! weekday is one of the days and its wall-clock time is in `[from, to)`. When `to` is
//! earlier than `from` the window runs overnight and belongs to the day it *starts* on:
//! `mon 22:00–06:00` covers Monday 22:00 to Tuesday 06:00.

use std::fmt;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Day names in Monday-first order, as written in configs and shown back.
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// Full day names, also accepted in configs.
const FULL_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
/// `24:00` in minutes: the only value above 23:59, allowed as an end time.
const END_OF_DAY: u16 = 24 * 60;

/// One validated window.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    /// `days[0]` = Monday … `days[6]` = Sunday: may the window start on this day?
    days: [bool; 7],
    /// The days as written (normalised to lower case), for messages.
    days_text: String,
    /// Minutes after local midnight.
    from: u16,
    /// Minutes after local midnight; `24 * 60` = end of the day.
    to: u16,
    /// The zone the times are wall-clock times in.
    tz: TimeZone,
    /// Its name as configured (`UTC` by default).
    tz_name: String,
}

/// Which part of a window spec was wrong, so the caller can name the field.
#[derive(Debug)]
pub(crate) enum WindowError {
    /// `days` (with the index of the bad entry, if one).
    Days(Option<usize>, String),
    /// `from`.
    From(String),
    /// `to`.
    To(String),
    /// `time_zone`.
    TimeZone(String),
}

impl Window {
    /// Parses and checks one window.
    pub(crate) fn parse(
        days: Option<&[String]>,
        from: &str,
        to: &str,
        time_zone: Option<&str>,
    ) -> Result<Window, WindowError> {
        let (days, days_text) = match days {
            None => ([true; 7], "every day".to_owned()),
            Some([]) => {
                return Err(WindowError::Days(
                    None,
                    "an empty list matches no day; omit `days` for every day, or list days \
                     like [mon-fri, sun]"
                        .to_owned(),
                ))
            }
            Some(list) => parse_days(list)?,
        };
        let from = parse_time(from, false).map_err(WindowError::From)?;
        let to = parse_time(to, true).map_err(WindowError::To)?;
        if from == to {
            return Err(WindowError::To(format!(
                "equals `from` ({}), which would be an empty window; for a whole day write \
                 from: \"00:00\", to: \"24:00\"",
                hhmm(from)
            )));
        }
        let tz_name = time_zone.map(str::trim).unwrap_or("UTC").to_owned();
        let tz = if tz_name == "UTC" {
            TimeZone::UTC
        } else {
            jiff::tz::db().get(&tz_name).map_err(|_| {
                WindowError::TimeZone(format!(
                    "unknown time zone {tz_name:?}; use an IANA name such as Europe/Berlin, \
                     America/New_York or UTC"
                ))
            })?
        };
        Ok(Window {
            days,
            days_text,
            from,
            to,
            tz,
            tz_name,
        })
    }

    /// Whether `at` falls inside the window (local time of the window's zone).
    pub(crate) fn contains(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.tz.clone());
        let minute =
            u16::from(local.hour().unsigned_abs()) * 60 + u16::from(local.minute().unsigned_abs());
        let today = day_index(local.weekday());
        if self.from < self.to {
            self.days[today] && self.from <= minute && minute < self.to
        } else {
            // Overnight: the evening part belongs to today, the morning part to yesterday.
            let yesterday = (today + 6) % 7;
            (self.days[today] && minute >= self.from) || (self.days[yesterday] && minute < self.to)
        }
    }
}

impl fmt::Display for Window {
    /// E.g. `mon-fri 09:00-18:00 Europe/Berlin`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}-{} {}",
            self.days_text,
            hhmm(self.from),
            hhmm(self.to),
            self.tz_name
        )
    }
}

/// Monday = 0 … Sunday = 6.
fn day_index(day: Weekday) -> usize {
    usize::from(day.to_monday_zero_offset().unsigned_abs())
}

fn parse_day(name: &str) -> Option<usize> {
    let name = name.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|d| *d == name)
        .or_else(|| FULL_DAYS.iter().position(|d| *d == name))
}

/// `[mon-fri, sun]` → flags and `"mon-fri,sun"`. A range may wrap (`fri-mon`).
fn parse_days(list: &[String]) -> Result<([bool; 7], String), WindowError> {
    let mut days = [false; 7];
    let mut text = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let bad = || {
            WindowError::Days(
                Some(i),
                format!(
                    "{entry:?} is not a day or a day range; write mon, tue, wed, thu, fri, \
                     sat or sun, or a range like mon-fri"
                ),
            )
        };
        let (first, last) = match entry.split_once('-') {
            Some((a, b)) => (parse_day(a).ok_or_else(bad)?, parse_day(b).ok_or_else(bad)?),
            None => {
                let d = parse_day(entry).ok_or_else(bad)?;
                (d, d)
            }
        };
        let mut d = first;
        loop {
            days[d] = true;
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
        text.push(entry.trim().to_ascii_lowercase());
    }
    Ok((days, text.join(",")))
}

/// `HH:MM` (or `H:MM`) → minutes after midnight; `24:00` only when `end` is set.
fn parse_time(text: &str, end: bool) -> Result<u16, String> {
    let bad = || {
        format!(
            "{text:?} is not a time of day; write HH:MM in 24-hour form, e.g. \"09:00\" or \
             \"18:30\"{}",
            if end { " (\"24:00\" = midnight)" } else { "" }
        )
    };
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let digits = |s: &str, max_len: usize| {
        (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
    };
    let hour = digits(h, 2).ok_or_else(bad)?;
    let minute = if m.len() == 2 { digits(m, 2) } else { None }.ok_or_else(bad)?;
    match (hour, minute) {
        (24, 0) if end => Ok(END_OF_DAY),
        (0..=23, 0..=59) => Ok(hour * 60 + minute),
        _ => Err(bad()),
    }
}

/// Minutes after midnight → `HH:MM`.
fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}
