//! Business-hours calendars: when the service desk is open, in the tenant's IANA time zone.
//!
//! A [`CalendarConfig`] is the stored form (serde, JSON); [`BusinessCalendar::new`] validates it and
//! gives the calendar the SLA clock computes with.
//!
//! # Semantics
//!
//! - **Wall-clock membership.** An interval `09:00`-`17:30` on a date covers every instant whose
//!   local wall-clock time in the calendar's zone lies in `[09:00, 17:30)` on that date. Hence on a
//!   day when the clocks spring forward (Europe/Berlin 2026-03-29, 02:00 → 03:00) an interval
//!   `01:00`-`04:00` lasts two real hours (local times in the skipped hour do not exist; an interval
//!   starting inside the gap starts when the clocks jump), and on a day when they fall back
//!   (2026-10-25, 03:00 → 02:00) the same interval lasts four real hours (the repeated hour counts
//!   twice, as it is worked twice). Neither a missing nor an ambiguous local time is an error.
//! - **Intervals** are `"HH:MM"` strings, `start < end`; `"24:00"` is allowed as an end (end of the
//!   day). Overnight intervals (end before or equal to start, such as `22:00`-`06:00`) are refused:
//!   write them as two entries, `22:00`-`24:00` on one day and `00:00`-`06:00` on the next.
//!   Overlapping intervals on the same day are refused (naming both entries), as they are almost
//!   always a typing error; intervals that merely touch (`09:00`-`12:00`, `12:00`-`13:00`) are merged.
//! - **Holidays** are whole local dates with no working time, whatever the weekday.
//! - **Extra working days** (e.g. a Saturday worked in exchange for a holiday bridge) give the
//!   hours of that date, replacing the weekly hours of its weekday. A date cannot be both a holiday
//!   and an extra working day.
//! - A calendar with no working hours at all (no weekly hours and no extra working day) is refused.
//! - [`BusinessCalendar::add_business_time`] and [`BusinessCalendar::next_open`] search at most
//!   [`SEARCH_HORIZON_DAYS`] days ahead (about 10 years) and answer
//!   [`CalendarError::HorizonExceeded`] beyond, so sparse calendars always terminate.
//!
//! Nothing here reads the system clock or the server's time zone (`chrono::Local` is never used):
//! results depend only on the arguments, whatever the `TZ` environment variable says.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How far ahead [`BusinessCalendar::add_business_time`] and [`BusinessCalendar::next_open`] look
/// for working time before giving up (3,660 days, about 10 years).
pub const SEARCH_HORIZON_DAYS: i64 = 3_660;

const SECONDS_PER_DAY: u32 = 86_400;

/// A day of the week, as written in calendar configurations (`"MONDAY"` ... `"SUNDAY"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    fn index(self) -> usize {
        match self {
            Weekday::Monday => 0,
            Weekday::Tuesday => 1,
            Weekday::Wednesday => 2,
            Weekday::Thursday => 3,
            Weekday::Friday => 4,
            Weekday::Saturday => 5,
            Weekday::Sunday => 6,
        }
    }
}

/// One working interval on a weekday, e.g. `{ "day": "MONDAY", "start": "09:00", "end": "17:30" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyHours {
    /// The weekday.
    pub day: Weekday,
    /// Local start time, `"HH:MM"`.
    pub start: String,
    /// Local end time, `"HH:MM"` (`"24:00"` for the end of the day), after `start`.
    pub end: String,
}

/// One working interval on a specific date that is worked although it normally is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraWorkingHours {
    /// The local date.
    pub date: NaiveDate,
    /// Local start time, `"HH:MM"`.
    pub start: String,
    /// Local end time, `"HH:MM"` (`"24:00"` for the end of the day), after `start`.
    pub end: String,
}

/// The stored form of a business-hours calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarConfig {
    /// IANA time zone name, e.g. `"Europe/Berlin"`, `"Asia/Shanghai"`.
    pub time_zone: String,
    /// Working intervals per weekday; several entries per day are allowed.
    #[serde(default)]
    pub weekly_hours: Vec<WeeklyHours>,
    /// Local dates with no working time at all.
    #[serde(default)]
    pub holidays: Vec<NaiveDate>,
    /// Dates worked with the given hours instead of their weekday's hours.
    #[serde(default)]
    pub extra_working_days: Vec<ExtraWorkingHours>,
}

/// A calendar configuration error or a search that found no working time; names the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// A field has a value that is not allowed.
    #[error("{field}: {message}")]
    Invalid {
        /// Field path, e.g. `calendar.weekly_hours[2].start`.
        field: String,
        /// What is wrong, lower-case.
        message: String,
    },
    /// No working time was found within [`SEARCH_HORIZON_DAYS`] after the given instant.
    #[error("calendar: no working time within {days} days after {from}")]
    HorizonExceeded {
        /// The instant the search started from.
        from: DateTime<Utc>,
        /// The horizon searched, in days.
        days: i64,
    },
    /// A negative duration was given where business time is added.
    #[error("{field}: must not be negative")]
    NegativeDuration {
        /// The argument or field path.
        field: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> CalendarError {
    CalendarError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A half-open local interval `[start, end)` in seconds after local midnight.
type Span = (u32, u32);

/// A validated business-hours calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessCalendar {
    tz: Tz,
    weekly: [Vec<Span>; 7],
    holidays: BTreeSet<NaiveDate>,
    extra: BTreeMap<NaiveDate, Vec<Span>>,
}

/// Parses `"HH:MM"` (or `"24:00"` when `allow_24` is set) into seconds after midnight.
fn parse_hhmm(field: &str, value: &str, allow_24: bool) -> Result<u32, CalendarError> {
    let v = value.trim();
    if allow_24 && v == "24:00" {
        return Ok(SECONDS_PER_DAY);
    }
    let t = NaiveTime::parse_from_str(v, "%H:%M")
        .map_err(|_| invalid(field, format!("'{v}' is not a time of day (HH:MM)")))?;
    Ok(chrono::Timelike::num_seconds_from_midnight(&t))
}

/// Sorts a day's intervals, refuses overlaps (naming both entries) and merges touching ones.
fn normalise_day(mut spans: Vec<(Span, String)>) -> Result<Vec<Span>, CalendarError> {
    spans.sort_by_key(|(s, _)| *s);
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    let mut last_field: Option<String> = None;
    for ((start, end), field) in spans {
        if let Some(prev) = out.last_mut() {
            if start < prev.1 {
                return Err(invalid(
                    format!("{field}.start"),
                    format!(
                        "overlaps {}",
                        last_field.as_deref().unwrap_or("another interval")
                    ),
                ));
            }
            if start == prev.1 {
                prev.1 = end;
                last_field = Some(field);
                continue;
            }
        }
        out.push((start, end));
        last_field = Some(field);
    }
    Ok(out)
}

fn parse_span(prefix: &str, start: &str, end: &str) -> Result<Span, CalendarError> {
    let s = parse_hhmm(&format!("{prefix}.start"), start, false)?;
    let e = parse_hhmm(&format!("{prefix}.end"), end, true)?;
    if e <= s {
        return Err(invalid(
            format!("{prefix}.end"),
            format!(
                "must be after start ({start}); overnight intervals are written as two entries, \
                 one ending at 24:00 and one starting at 00:00 the next day"
            ),
        ));
    }
    Ok((s, e))
}

impl BusinessCalendar {
    /// Validates a configuration. Field paths in errors start with `calendar.`.
    pub fn new(config: &CalendarConfig) -> Result<Self, CalendarError> {
        let tz: Tz = config.time_zone.trim().parse().map_err(|_| {
            invalid(
                "calendar.time_zone",
                format!("'{}' is not an IANA time zone", config.time_zone),
            )
        })?;

        let mut per_day: [Vec<(Span, String)>; 7] = Default::default();
        for (i, w) in config.weekly_hours.iter().enumerate() {
            let prefix = format!("calendar.weekly_hours[{i}]");
            let span = parse_span(&prefix, &w.start, &w.end)?;
            per_day[w.day.index()].push((span, prefix));
        }
        let mut weekly: [Vec<Span>; 7] = Default::default();
        for (day, spans) in per_day.into_iter().enumerate() {
            weekly[day] = normalise_day(spans)?;
        }

        let holidays: BTreeSet<NaiveDate> = config.holidays.iter().copied().collect();

        let mut extra_raw: BTreeMap<NaiveDate, Vec<(Span, String)>> = BTreeMap::new();
        for (i, x) in config.extra_working_days.iter().enumerate() {
            let prefix = format!("calendar.extra_working_days[{i}]");
            if holidays.contains(&x.date) {
                return Err(invalid(
                    format!("{prefix}.date"),
                    format!("{} is also a holiday", x.date),
                ));
            }
            let span = parse_span(&prefix, &x.start, &x.end)?;
            extra_raw.entry(x.date).or_default().push((span, prefix));
        }
        let mut extra = BTreeMap::new();
        for (date, spans) in extra_raw {
            extra.insert(date, normalise_day(spans)?);
        }

        if weekly.iter().all(Vec::is_empty) && extra.is_empty() {
            return Err(invalid(
                "calendar.weekly_hours",
                "the calendar has no working hours at all",
            ));
        }
        Ok(Self {
            tz,
            weekly,
            holidays,
            extra,
        })
    }

    /// The calendar's time zone.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The local date of an instant in the calendar's zone.
    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.tz).date_naive()
    }

    /// The local working spans of a date (empty on holidays).
    fn spans_of(&self, date: NaiveDate) -> &[Span] {
        if self.holidays.contains(&date) {
            return &[];
        }
        if let Some(x) = self.extra.get(&date) {
            return x;
        }
        let idx = date.weekday().num_days_from_monday() as usize;
        self.weekly.get(idx).map(Vec::as_slice).unwrap_or(&[])
    }

    /// UTC offset (local minus UTC, seconds) in force at a UTC instant.
    fn offset_at(&self, utc: DateTime<Utc>) -> i64 {
        i64::from(
            self.tz
                .offset_from_utc_datetime(&utc.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    }

    /// Splits `[from, to)` into pieces of constant UTC offset: `(piece_start, piece_end, offset)`.
    /// Offset changes are found by sampling every 3 hours and bisecting to the second.
    fn constant_offset_pieces(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>, i64)> {
        let step = Duration::hours(3);
        let mut pieces = Vec::new();
        let mut piece_start = from;
        let mut offset = self.offset_at(from);
        let mut probe = from;
        while probe < to {
            let next = (probe + step).min(to);
            let off_next = self.offset_at(next);
            if off_next != offset {
                // Bisect on whole seconds: lo has `offset`, hi has another offset.
                let (mut lo, mut hi) = (probe.timestamp(), next.timestamp());
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    let m = DateTime::<Utc>::from_timestamp(mid, 0).unwrap_or(next);
                    if self.offset_at(m) == offset {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                let change = DateTime::<Utc>::from_timestamp(hi, 0).unwrap_or(next);
                pieces.push((piece_start, change, offset));
                piece_start = change;
                offset = self.offset_at(change);
                probe = change;
                continue;
            }
            probe = next;
        }
        pieces.push((piece_start, to, offset));
        pieces
    }

    /// The working intervals of a local date as UTC instants, in order, non-overlapping.
    pub fn day_intervals(&self, date: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let spans = self.spans_of(date);
        if spans.is_empty() {
            return Vec::new();
        }
        let midnight = date.and_time(NaiveTime::MIN).and_utc();
        // Every instant whose local date is `date` lies in this window (offsets are within ±15 h).
        let window_from = midnight - Duration::hours(15);
        let window_to = midnight + Duration::hours(24 + 15);
        let mut out = Vec::new();
        for (p_from, p_to, offset) in self.constant_offset_pieces(window_from, window_to) {
            for &(s, e) in spans {
                let a = midnight + Duration::seconds(i64::from(s) - offset);
                let b = midnight + Duration::seconds(i64::from(e) - offset);
                let a = a.max(p_from);
                let b = b.min(p_to);
                if a < b {
                    match out.last_mut() {
                        Some((_, last_end)) if *last_end == a => *last_end = b,
                        _ => out.push((a, b)),
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Whether the desk is open at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        self.day_intervals(self.local_date(at))
            .iter()
            .any(|&(a, b)| a <= at && at < b)
    }

    /// The first instant at or after `at` when the desk is open (`at` itself when open).
    pub fn next_open(&self, at: DateTime<Utc>) -> Result<DateTime<Utc>, CalendarError> {
        let first = self.local_date(at);
        for i in 0..=SEARCH_HORIZON_DAYS {
            let date = first + Duration::days(i);
            for (a, b) in self.day_intervals(date) {
                if b > at {
                    return Ok(a.max(at));
                }
            }
        }
        Err(CalendarError::HorizonExceeded {
            from: at,
            days: SEARCH_HORIZON_DAYS,
        })
    }

    /// Business time between two instants: the length of the working time inside `[start, end)`.
    /// Zero when `end <= start`. The cost grows with the number of days spanned.
    pub fn business_time_between(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Duration {
        if end <= start {
            return Duration::zero();
        }
        let mut total = Duration::zero();
        let mut date = self.local_date(start);
        let last = self.local_date(end);
        while date <= last {
            for (a, b) in self.day_intervals(date) {
                let a = a.max(start);
                let b = b.min(end);
                if a < b {
                    total += b - a;
                }
            }
            date += Duration::days(1);
        }
        total
    }

    /// The instant when `d` of business time has elapsed after `start`. With `d` zero this is
    /// `start` itself, open or not. Searches at most [`SEARCH_HORIZON_DAYS`] days ahead.
    pub fn add_business_time(
        &self,
        start: DateTime<Utc>,
        d: Duration,
    ) -> Result<DateTime<Utc>, CalendarError> {
        if d < Duration::zero() {
            return Err(CalendarError::NegativeDuration {
                field: "duration".to_string(),
            });
        }
        if d.is_zero() {
            return Ok(start);
        }
        let mut remaining = d;
        let first = self.local_date(start);
        for i in 0..=SEARCH_HORIZON_DAYS {
            let date = first + Duration::days(i);
            for (a, b) in self.day_intervals(date) {
                let a = a.max(start);
                if a >= b {
                    continue;
                }
                let len = b - a;
                if remaining <= len {
                    return Ok(a + remaining);
                }
                remaining -= len;
            }
        }
        Err(CalendarError::HorizonExceeded {
            from: start,
            days: SEARCH_HORIZON_DAYS,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    pub(crate) fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hours(day: Weekday, start: &str, end: &str) -> WeeklyHours {
        WeeklyHours {
            day,
            start: start.into(),
            end: end.into(),
        }
    }

    fn weekdays(tz: &str, start: &str, end: &str) -> CalendarConfig {
        use Weekday::*;
        CalendarConfig {
            time_zone: tz.into(),
            weekly_hours: [Monday, Tuesday, Wednesday, Thursday, Friday]
                .into_iter()
                .map(|d| hours(d, start, end))
                .collect(),
            holidays: vec![],
            extra_working_days: vec![],
        }
    }

    fn all_days(tz: &str, start: &str, end: &str) -> CalendarConfig {
        use Weekday::*;
        CalendarConfig {
            time_zone: tz.into(),
            weekly_hours: [
                Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
            ]
            .into_iter()
            .map(|d| hours(d, start, end))
            .collect(),
            holidays: vec![],
            extra_working_days: vec![],
        }
    }

    fn cal(c: &CalendarConfig) -> BusinessCalendar {
        BusinessCalendar::new(c).unwrap()
    }

    fn field_of(e: CalendarError) -> String {
        match e {
            CalendarError::Invalid { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_zone_names_the_field() {
        let mut c = weekdays("Europe/Berlin", "09:00", "17:00");
        c.time_zone = "Mars/Olympus".into();
        let e = BusinessCalendar::new(&c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "calendar.time_zone: 'Mars/Olympus' is not an IANA time zone"
        );
    }

    #[test]
    fn bad_times_name_the_entry() {
        let mut c = weekdays("Europe/Berlin", "09:00", "17:00");
        c.weekly_hours[2].start = "9h".into();
        assert_eq!(
            field_of(BusinessCalendar::new(&c).unwrap_err()),
            "calendar.weekly_hours[2].start"
        );
        let mut c = weekdays("Europe/Berlin", "09:00", "17:00");
        c.weekly_hours[1].end = "25:00".into();
        assert_eq!(
            field_of(BusinessCalendar::new(&c).unwrap_err()),
            "calendar.weekly_hours[1].end"
        );
        // "24:00" is an end only.
        let mut c = weekdays("Europe/Berlin", "09:00", "17:00");
        c.weekly_hours[0].start = "24:00".into();
        assert_eq!(
            field_of(BusinessCalendar::new(&c).unwrap_err()),
            "calendar.weekly_hours[0].start"
        );
    }

    #[test]
    fn overnight_is_refused() {
        let c = CalendarConfig {
            time_zone: "UTC".into(),
            weekly_hours: vec![hours(Weekday::Monday, "22:00", "06:00")],
            holidays: vec![],
            extra_working_days: vec![],
        };
        let e = BusinessCalendar::new(&c).unwrap_err();
        assert_eq!(field_of(e), "calendar.weekly_hours[0].end");
    }

    #[test]
    fn overlap_is_refused_touching_is_merged() {
        let c = CalendarConfig {
            time_zone: "UTC".into(),
            weekly_hours: vec![
                hours(Weekday::Monday, "09:00", "12:00"),
                hours(Weekday::Tuesday, "09:00", "12:00"),
                hours(Weekday::Monday, "11:00", "13:00"),
            ],
            holidays: vec![],
            extra_working_days: vec![],
        };
        let e = BusinessCalendar::new(&c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "calendar.weekly_hours[2].start: overlaps calendar.weekly_hours[0]"
        );
        let c = CalendarConfig {
            time_zone: "UTC".into(),
            weekly_hours: vec![
                hours(Weekday::Monday, "12:00", "13:00"),
                hours(Weekday::Monday, "09:00", "12:00"),
                hours(Weekday::Monday, "14:00", "15:00"),
            ],
            holidays: vec![],
            extra_working_days: vec![],
        };
        let k = cal(&c);
        assert_eq!(
            k.weekly[0],
            vec![(9 * 3600, 13 * 3600), (14 * 3600, 15 * 3600)]
        );
        // 2026-03-02 is a Monday.
        let d = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        assert_eq!(
            k.day_intervals(d),
            vec![
                (utc("2026-03-02T09:00:00Z"), utc("2026-03-02T13:00:00Z")),
                (utc("2026-03-02T14:00:00Z"), utc("2026-03-02T15:00:00Z"))
            ]
        );
    }

    #[test]
    fn empty_calendar_is_refused() {
        let c = CalendarConfig {
            time_zone: "UTC".into(),
            weekly_hours: vec![],
            holidays: vec![],
            extra_working_days: vec![],
        };
        assert_eq!(
            field_of(BusinessCalendar::new(&c).unwrap_err()),
            "calendar.weekly_hours"
        );
    }

    #[test]
    fn holiday_and_extra_day_conflict() {
        let mut c = weekdays("Asia/Shanghai", "09:00", "18:00");
        let d = NaiveDate::from_ymd_opt(2026, 10, 10).unwrap();
        c.holidays.push(d);
        c.extra_working_days.push(ExtraWorkingHours {
            date: d,
            start: "09:00".into(),
            end: "18:00".into(),
        });
        assert_eq!(
            field_of(BusinessCalendar::new(&c).unwrap_err()),
            "calendar.extra_working_days[0].date"
        );
    }

    #[test]
    fn serde_round_trip() {
        let c = weekdays("Europe/Berlin", "09:00", "17:30");
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"MONDAY\""));
        let back: CalendarConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        // Holidays and extra days default to empty.
        let c: CalendarConfig = serde_json::from_str(
            r#"{"time_zone":"UTC","weekly_hours":[{"day":"FRIDAY","start":"09:00","end":"10:00"}]}"#,
        )
        .unwrap();
        assert!(BusinessCalendar::new(&c).is_ok());
    }

    #[test]
    fn basic_week_berlin() {
        let k = cal(&weekdays("Europe/Berlin", "09:00", "17:00"));
        // Friday 2026-01-09 16:00 Berlin (15:00Z) + 2 h → Monday 10:00 Berlin (09:00Z).
        let start = utc("2026-01-09T15:00:00Z");
        let due = k.add_business_time(start, Duration::hours(2)).unwrap();
        assert_eq!(due, utc("2026-01-12T09:00:00Z"));
        assert_eq!(k.business_time_between(start, due), Duration::hours(2));
        assert!(k.is_open(utc("2026-01-09T15:00:00Z")));
        assert!(!k.is_open(utc("2026-01-09T16:00:00Z")));
        assert!(!k.is_open(utc("2026-01-10T10:00:00Z")));
        assert_eq!(
            k.next_open(utc("2026-01-09T16:00:00Z")).unwrap(),
            utc("2026-01-12T08:00:00Z")
        );
        assert_eq!(
            k.next_open(utc("2026-01-12T10:00:00Z")).unwrap(),
            utc("2026-01-12T10:00:00Z")
        );
        // A whole week is 40 hours.
        assert_eq!(
            k.business_time_between(utc("2026-01-05T00:00:00Z"), utc("2026-01-12T00:00:00Z")),
            Duration::hours(40)
        );
        assert_eq!(
            k.business_time_between(utc("2026-01-12T00:00:00Z"), utc("2026-01-05T00:00:00Z")),
            Duration::zero()
        );
        assert_eq!(k.add_business_time(start, Duration::zero()).unwrap(), start);
        assert!(matches!(
            k.add_business_time(start, Duration::seconds(-1)),
            Err(CalendarError::NegativeDuration { .. })
        ));
    }

    #[test]
    fn berlin_spring_forward_2026_03_29() {
        // Clocks jump 02:00 → 03:00 local (01:00Z). 01:00-04:00 local is 00:00Z-02:00Z: 2 real hours.
        let k = cal(&all_days("Europe/Berlin", "01:00", "04:00"));
        let d = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        assert_eq!(
            k.day_intervals(d),
            vec![(utc("2026-03-29T00:00:00Z"), utc("2026-03-29T02:00:00Z"))]
        );
        // An interval starting inside the skipped hour starts when the clocks jump.
        let k = cal(&all_days("Europe/Berlin", "02:30", "05:00"));
        assert_eq!(
            k.day_intervals(d),
            vec![(utc("2026-03-29T01:00:00Z"), utc("2026-03-29T03:00:00Z"))]
        );
        // An ordinary office day keeps 8 hours, an hour earlier in UTC than the day before.
        let k = cal(&all_days("Europe/Berlin", "09:00", "17:00"));
        assert_eq!(
            k.day_intervals(NaiveDate::from_ymd_opt(2026, 3, 28).unwrap()),
            vec![(utc("2026-03-28T08:00:00Z"), utc("2026-03-28T16:00:00Z"))]
        );
        assert_eq!(
            k.day_intervals(d),
            vec![(utc("2026-03-29T07:00:00Z"), utc("2026-03-29T15:00:00Z"))]
        );
        // Saturday 16:00 local + 2 h → Sunday 10:00 CEST.
        let due = k
            .add_business_time(utc("2026-03-28T15:00:00Z"), Duration::hours(2))
            .unwrap();
        assert_eq!(due, utc("2026-03-29T08:00:00Z"));
    }

    #[test]
    fn berlin_fall_back_2026_10_25() {
        // Clocks go 03:00 → 02:00 local (01:00Z): 02:00-03:00 happens twice and counts twice.
        let k = cal(&all_days("Europe/Berlin", "01:00", "04:00"));
        let d = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        assert_eq!(
            k.day_intervals(d),
            vec![(utc("2026-10-24T23:00:00Z"), utc("2026-10-25T03:00:00Z"))]
        );
        let day = k.business_time_between(utc("2026-10-24T20:00:00Z"), utc("2026-10-25T20:00:00Z"));
        assert_eq!(day, Duration::hours(4));
        // An interval inside the repeated hour: both occurrences count.
        let k = cal(&all_days("Europe/Berlin", "02:15", "02:45"));
        assert_eq!(
            k.day_intervals(d),
            vec![
                (utc("2026-10-25T00:15:00Z"), utc("2026-10-25T00:45:00Z")),
                (utc("2026-10-25T01:15:00Z"), utc("2026-10-25T01:45:00Z"))
            ]
        );
        assert!(k.is_open(utc("2026-10-25T01:30:00Z")));
        assert!(!k.is_open(utc("2026-10-25T01:00:00Z")));
        let due = k
            .add_business_time(utc("2026-10-25T00:00:00Z"), Duration::minutes(45))
            .unwrap();
        assert_eq!(due, utc("2026-10-25T01:30:00Z"));
    }

    #[test]
    fn new_york_dst_2026() {
        let k = cal(&all_days("America/New_York", "00:00", "24:00"));
        // 2026-03-08: 02:00 → 03:00 EST→EDT, a 23-hour day.
        let d = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        assert_eq!(
            k.day_intervals(d),
            vec![(utc("2026-03-08T05:00:00Z"), utc("2026-03-09T04:00:00Z"))]
        );
        // 2026-11-01: 02:00 → 01:00 EDT→EST, a 25-hour day.
        let d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        assert_eq!(
            k.day_intervals(d),
            vec![(utc("2026-11-01T04:00:00Z"), utc("2026-11-02T05:00:00Z"))]
        );
        assert_eq!(
            k.business_time_between(utc("2026-11-01T04:00:00Z"), utc("2026-11-02T05:00:00Z")),
            Duration::hours(25)
        );
        // Office hours shift by one hour in UTC across the change.
        let k = cal(&weekdays("America/New_York", "09:00", "17:00"));
        // Friday 2026-03-06 16:00 EST (21:00Z) + 2 h → Monday 2026-03-09 10:00 EDT (14:00Z).
        let due = k
            .add_business_time(utc("2026-03-06T21:00:00Z"), Duration::hours(2))
            .unwrap();
        assert_eq!(due, utc("2026-03-09T14:00:00Z"));
        // Friday 2026-10-30 16:00 EDT (20:00Z) + 2 h → Monday 2026-11-02 10:00 EST (15:00Z).
        let due = k
            .add_business_time(utc("2026-10-30T20:00:00Z"), Duration::hours(2))
            .unwrap();
        assert_eq!(due, utc("2026-11-02T15:00:00Z"));
    }

    #[test]
    fn shanghai_national_day_holidays() {
        let mut c = weekdays("Asia/Shanghai", "09:00", "18:00");
        for day in 1..=7 {
            c.holidays
                .push(NaiveDate::from_ymd_opt(2026, 10, day).unwrap());
        }
        // A make-up working Saturday.
        c.extra_working_days.push(ExtraWorkingHours {
            date: NaiveDate::from_ymd_opt(2026, 10, 10).unwrap(),
            start: "09:00".into(),
            end: "18:00".into(),
        });
        let k = cal(&c);
        // Wednesday 2026-09-30 17:00 CST (09:00Z) + 2 h: 1 h on the 30th, then Thursday 10-08 10:00.
        let due = k
            .add_business_time(utc("2026-09-30T09:00:00Z"), Duration::hours(2))
            .unwrap();
        assert_eq!(due, utc("2026-10-08T02:00:00Z"));
        assert!(!k.is_open(utc("2026-10-05T03:00:00Z")));
        assert!(k.is_open(utc("2026-10-10T03:00:00Z")));
        // 10-08, 10-09 and the extra 10-10 are worked: 27 h in the fortnight 09-28..10-11 plus
        // 09-28..09-30 (3 × 9 h).
        let total =
            k.business_time_between(utc("2026-09-27T16:00:00Z"), utc("2026-10-11T16:00:00Z"));
        assert_eq!(total, Duration::hours(6 * 9));
    }

    #[test]
    fn sparse_calendar_is_bounded() {
        let c = CalendarConfig {
            time_zone: "UTC".into(),
            weekly_hours: vec![],
            holidays: vec![],
            extra_working_days: vec![ExtraWorkingHours {
                date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
                start: "09:00".into(),
                end: "10:00".into(),
            }],
        };
        let k = cal(&c);
        assert_eq!(
            k.add_business_time(utc("2025-12-31T00:00:00Z"), Duration::minutes(30))
                .unwrap(),
            utc("2026-01-01T09:30:00Z")
        );
        assert!(matches!(
            k.add_business_time(utc("2025-12-31T00:00:00Z"), Duration::hours(2)),
            Err(CalendarError::HorizonExceeded { .. })
        ));
        assert!(matches!(
            k.next_open(utc("2026-01-02T00:00:00Z")),
            Err(CalendarError::HorizonExceeded { .. })
        ));
    }

    #[test]
    fn zones_far_from_utc() {
        // Pacific/Kiritimati is UTC+14, Pacific/Pago_Pago UTC-11.
        for tz in ["Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kolkata"] {
            let k = cal(&all_days(tz, "00:00", "24:00"));
            let a = utc("2026-06-01T00:00:00Z");
            let b = utc("2026-06-03T07:30:00Z");
            assert_eq!(k.business_time_between(a, b), b - a, "{tz}");
            assert_eq!(k.add_business_time(a, b - a).unwrap(), b, "{tz}");
        }
    }
    /// Calendar results as text, for comparing processes run with different `TZ` variables.
    fn tz_probe() -> String {
        let mut out = Vec::new();
        for tz in ["Europe/Berlin", "America/New_York", "Asia/Shanghai"] {
            let k = cal(&weekdays(tz, "09:00", "17:30"));
            let a = utc("2026-03-06T20:00:00Z");
            let due = k.add_business_time(a, Duration::hours(20)).unwrap();
            let between = k.business_time_between(a, utc("2026-11-02T12:00:00Z"));
            let open = k.is_open(utc("2026-10-26T08:30:00Z"));
            let next = k.next_open(utc("2026-10-31T12:00:00Z")).unwrap();
            out.push(format!("{tz}|{due}|{between}|{open}|{next}"));
        }
        out.join(";")
    }

    /// Nothing reads `chrono::Local`; this checks it: the same computations in child processes
    /// with different `TZ` variables give the same text as this process.
    #[test]
    fn results_do_not_depend_on_the_tz_variable() {
        if std::env::var_os("CRM_TZ_PROBE").is_some() {
            println!("PROBE:{}", tz_probe());
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let expected = format!("PROBE:{}", tz_probe());
        for tz in [
            "UTC",
            "Asia/Shanghai",
            "America/New_York",
            "Pacific/Chatham",
        ] {
            let out = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "calendar::tests::results_do_not_depend_on_the_tz_variable",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("TZ", tz)
                .env("CRM_TZ_PROBE", "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout
                .lines()
                .find_map(|l| l.find("PROBE:").map(|i| &l[i..]))
                .unwrap_or_default();
            assert_eq!(line, expected, "TZ={tz}");
        }
    }
}
