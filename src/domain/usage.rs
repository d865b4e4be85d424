//! Usage rules: meter names and aggregations, what makes a usage event
//! countable, and the windows a query reads in a time zone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use strum::{EnumString, IntoStaticStr};
use uuid::Uuid;

use super::FieldViolation;
use super::plan::{OnLimit, Period};

/// Events one RecordUsage call may carry: a gateway flushing its buffer
/// sends hundreds; a bound keeps one call's transaction short.
pub const MAX_EVENTS_PER_CALL: usize = 1000;
/// Ids one CancelUsage call may name, for the same reason.
pub const MAX_CANCEL_IDS: usize = 1000;
/// Most characters of an event's idempotency key.
pub const MAX_EVENT_ID: usize = 128;
/// Most characters of an event's subject.
pub const MAX_SUBJECT: usize = 256;
/// How far ahead of the server's clock an event may be dated: callers'
/// clocks drift, but usage in the future is a mistake.
pub const MAX_FUTURE: Duration = Duration::from_secs(5 * 60);
/// Most windows one query returns: a bit over two years of days.
pub const MAX_WINDOWS: usize = 1000;
/// Most characters of a meter's description and unit.
pub const MAX_METER_DESCRIPTION: usize = 1000;
pub const MAX_METER_UNIT: usize = 32;
/// Windows a query spans when it gives no start.
pub const DEFAULT_WINDOWS: i32 = 30;

/// How a meter turns events into a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumString, IntoStaticStr, strum::Display)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Aggregation {
    Sum,
    Count,
    Max,
    Latest,
    UniqueCount,
}

/// What is measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    pub name: String,
    pub description: String,
    pub aggregation: Aggregation,
    pub unit: String,
    /// Built-in meters cannot be deleted.
    pub builtin: bool,
    pub create_time: DateTime<Utc>,
}

/// `^[a-z][a-z0-9_]{1,62}$`.
pub fn check_meter_name(field: &str, name: &str, out: &mut Vec<FieldViolation>) {
    let ok = (2..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        out.push(FieldViolation::new(
            field,
            "must match ^[a-z][a-z0-9_]{1,62}$",
        ));
    }
}

/// Checks what CreateMeter may set; `aggregation` is `None` when not given.
pub fn check_new_meter(
    name: &str,
    description: &str,
    aggregation: Option<Aggregation>,
    unit: &str,
) -> Result<Aggregation, Vec<FieldViolation>> {
    let mut out = Vec::new();
    check_meter_name("meter.name", name, &mut out);
    if description.chars().count() > MAX_METER_DESCRIPTION {
        out.push(FieldViolation::new(
            "meter.description",
            format!("must be at most {MAX_METER_DESCRIPTION} characters"),
        ));
    }
    if unit.chars().count() > MAX_METER_UNIT {
        out.push(FieldViolation::new(
            "meter.unit",
            format!("must be at most {MAX_METER_UNIT} characters"),
        ));
    }
    if aggregation.is_none() {
        out.push(FieldViolation::new(
            "meter.aggregation",
            "is required (SUM, COUNT, MAX, LATEST or UNIQUE_COUNT)",
        ));
    }
    match aggregation {
        Some(a) if out.is_empty() => Ok(a),
        _ => Err(out),
    }
}

/// A usage event as a caller sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageInput {
    pub id: String,
    pub tenant_id: String,
    pub meter: String,
    pub value: f64,
    /// `None`: now; `Some(Err)`: a time that could not be read, and why.
    pub time: Option<Result<DateTime<Utc>, String>>,
    pub subject: String,
}

/// An event that passed the checks that need no database.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    pub id: String,
    pub tenant_id: Uuid,
    pub meter: String,
    pub value: f64,
    pub time: DateTime<Utc>,
    /// Whether the caller dated it; a repeat without a time matches any.
    pub dated: bool,
    pub subject: String,
}

/// What became of one event of a RecordUsage call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageOutcome {
    Accepted,
    Duplicate,
    Conflict(String),
    Rejected(String),
}

/// Checks one event against everything but the database; `now` and
/// `late_window` bound its time.
pub fn check_event(
    e: &UsageInput,
    now: DateTime<Utc>,
    late_window: Duration,
) -> Result<UsageEvent, String> {
    if e.id.is_empty() || e.id.chars().count() > MAX_EVENT_ID {
        return Err(format!("id must be 1 to {MAX_EVENT_ID} characters"));
    }
    if e.id.chars().any(char::is_control) {
        return Err("id must not contain control characters".into());
    }
    let tenant_id = Uuid::try_parse(&e.tenant_id).map_err(|_| "tenant_id must be a UUID")?;
    let mut names = Vec::new();
    check_meter_name("meter", &e.meter, &mut names);
    if !names.is_empty() {
        return Err(format!("unknown meter {:?}", e.meter));
    }
    if !e.value.is_finite() || e.value < 0.0 {
        return Err(format!(
            "value must be a finite number at least 0, not {}",
            e.value
        ));
    }
    if e.subject.chars().count() > MAX_SUBJECT {
        return Err(format!("subject must be at most {MAX_SUBJECT} characters"));
    }
    let time = match &e.time {
        None => now,
        Some(Ok(time)) => *time,
        Some(Err(reason)) => return Err(format!("time {reason}")),
    };
    if time > now + MAX_FUTURE {
        return Err(format!(
            "time {} is more than {} ahead of the server's clock",
            time.to_rfc3339(),
            humantime::format_duration(MAX_FUTURE)
        ));
    }
    if time < now - late_window {
        return Err(format!(
            "time {} is older than the late window of {}",
            time.to_rfc3339(),
            humantime::format_duration(late_window)
        ));
    }
    Ok(UsageEvent {
        id: e.id.clone(),
        tenant_id,
        meter: e.meter.clone(),
        value: e.value,
        // Microseconds, as stored, so that a repeat compares equal.
        time: truncate_micros(time),
        dated: e.time.is_some(),
        subject: e.subject.clone(),
    })
}

/// Why a repeat of a stored event is a conflict, if it is one: another
/// value, subject, or (when the repeat is dated) time.
pub fn conflict(stored: &UsageEvent, repeat: &UsageEvent) -> Option<String> {
    if stored.value != repeat.value {
        Some(format!(
            "id {:?} was recorded with value {}",
            stored.id, stored.value
        ))
    } else if stored.subject != repeat.subject {
        Some(format!(
            "id {:?} was recorded with another subject",
            stored.id
        ))
    } else if repeat.dated && stored.time != repeat.time {
        Some(format!(
            "id {:?} was recorded at {}",
            stored.id,
            stored.time.to_rfc3339()
        ))
    } else {
        None
    }
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The length of a query's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Month,
}

impl Window {
    /// The unit PostgreSQL's `date_trunc` and intervals name it by.
    pub fn unit(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// The shortest such window in any zone (a DST change shortens days by
    /// an hour; Lord Howe Island's shortens hours by half), to bound a
    /// query's windows before counting them.
    pub fn shortest(self) -> chrono::Duration {
        match self {
            Window::Hour => chrono::Duration::minutes(30),
            Window::Day => chrono::Duration::hours(22),
            Window::Month => chrono::Duration::days(27),
        }
    }

    /// A nominal length, to place a default start.
    pub fn nominal(self) -> chrono::Duration {
        match self {
            Window::Hour => chrono::Duration::hours(1),
            Window::Day => chrono::Duration::days(1),
            Window::Month => chrono::Duration::days(31),
        }
    }
}

/// A query, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    pub tenant_id: Uuid,
    pub meter: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub window: Window,
    /// An IANA name PostgreSQL knows too.
    pub time_zone: String,
}

/// Checks a query's time zone and span; `start` `None` means
/// [`DEFAULT_WINDOWS`] windows before `end`.
pub fn check_query(
    tenant_id: Uuid,
    meter: &str,
    start: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    window: Window,
    time_zone: &str,
) -> Result<UsageQuery, Vec<FieldViolation>> {
    let mut out = Vec::new();
    check_meter_name("meter", meter, &mut out);
    let time_zone = if time_zone.is_empty() {
        "UTC"
    } else {
        time_zone
    };
    if time_zone.parse::<chrono_tz::Tz>().is_err() {
        out.push(FieldViolation::new(
            "time_zone",
            format!("{time_zone:?} is not an IANA time zone such as Europe/Berlin"),
        ));
    }
    let start = start.unwrap_or(end - window.nominal() * (DEFAULT_WINDOWS - 1));
    if end <= start {
        out.push(FieldViolation::new("end_time", "must be after start_time"));
    } else if (end - start) > window.shortest() * MAX_WINDOWS as i32 {
        out.push(FieldViolation::new(
            "start_time",
            format!(
                "the query spans more than {MAX_WINDOWS} windows; narrow it or use a longer window"
            ),
        ));
    }
    if !out.is_empty() {
        return Err(out);
    }
    Ok(UsageQuery {
        tenant_id,
        meter: meter.to_owned(),
        start,
        end,
        window,
        time_zone: time_zone.to_owned(),
    })
}

/// The plan limits that bind meters: the meter, the limit's name in
/// `PlanLimits`, and what one unit of the limit is in the meter's unit.
pub const LIMIT_BINDINGS: &[(&str, &str, f64)] = &[
    ("api_calls", "max_api_calls_per_day", 1.0),
    ("storage_bytes", "max_storage_mb", 1024.0 * 1024.0),
    ("users", "max_users", 1.0),
];

/// Shares of a limit whose crossing is an event, in percent.
pub const THRESHOLDS: [i16; 2] = [80, 100];

/// A meter's figure for a tenant's current period (a UTC day or month; a
/// LATEST meter's figure is its latest value), with the plan's limit and
/// what reaching it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub tenant_id: Uuid,
    pub meter: String,
    pub aggregation: Aggregation,
    pub unit: String,
    pub period: Period,
    pub period_start: DateTime<Utc>,
    pub value: f64,
    pub limit: Option<f64>,
    pub on_limit: OnLimit,
}

impl Figure {
    /// `value / limit`, when there is a limit.
    pub fn share(&self) -> Option<f64> {
        self.limit.map(|l| self.value / l)
    }

    /// Whether the figure is at or past its whole limit.
    pub fn exhausted(&self) -> bool {
        self.limit.is_some_and(|l| self.value >= l)
    }

    /// The thresholds (percent) the figure has reached.
    pub fn reached(&self) -> impl Iterator<Item = i16> + '_ {
        THRESHOLDS.into_iter().filter(move |t| {
            self.limit
                .is_some_and(|l| self.value >= l * f64::from(*t) / 100.0)
        })
    }

    /// Whether `amount` more stays within the limit, and what is left.
    pub fn allows(&self, amount: f64) -> (bool, Option<f64>) {
        match self.limit {
            None => (true, None),
            Some(limit) => (
                self.value + amount <= limit,
                Some((limit - self.value).max(0.0)),
            ),
        }
    }

    /// Adds a recorded value to a figure read earlier, where the
    /// aggregation allows it without reading again; `false` if it does not.
    pub fn add(&mut self, value: f64) -> bool {
        match self.aggregation {
            Aggregation::Sum => self.value += value,
            Aggregation::Count => self.value += 1.0,
            Aggregation::Max => self.value = self.value.max(value),
            Aggregation::Latest | Aggregation::UniqueCount => return false,
        }
        true
    }
}

/// One window of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub value: f64,
    pub events: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> UsageInput {
        UsageInput {
            id: "req-1".into(),
            tenant_id: Uuid::nil().to_string(),
            meter: "api_calls".into(),
            value: 1.0,
            time: None,
            subject: String::new(),
        }
    }

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    #[test]
    fn events_are_checked_one_by_one() {
        let now = Utc::now();
        assert!(check_event(&input(), now, WEEK).is_ok());
        for (patch, reason) in [
            (
                UsageInput {
                    value: f64::NAN,
                    ..input()
                },
                "finite",
            ),
            (
                UsageInput {
                    value: f64::INFINITY,
                    ..input()
                },
                "finite",
            ),
            (
                UsageInput {
                    value: -1.0,
                    ..input()
                },
                "at least 0",
            ),
            (
                UsageInput {
                    id: "x".repeat(129),
                    ..input()
                },
                "1 to 128",
            ),
            (
                UsageInput {
                    id: String::new(),
                    ..input()
                },
                "1 to 128",
            ),
            (
                UsageInput {
                    tenant_id: "nope".into(),
                    ..input()
                },
                "UUID",
            ),
            (
                UsageInput {
                    meter: "Bad Meter".into(),
                    ..input()
                },
                "unknown meter",
            ),
            (
                UsageInput {
                    time: Some(Ok(now + chrono::Duration::minutes(6))),
                    ..input()
                },
                "ahead",
            ),
            (
                UsageInput {
                    time: Some(Ok(now - chrono::Duration::days(8))),
                    ..input()
                },
                "late window",
            ),
            (
                UsageInput {
                    time: Some(Err("is not a valid timestamp".into())),
                    ..input()
                },
                "time is not",
            ),
        ] {
            let err = check_event(&patch, now, WEEK).expect_err(reason);
            assert!(err.contains(reason), "{err:?} should mention {reason:?}");
        }
        let edge = UsageInput {
            id: "x".repeat(128),
            time: Some(Ok(now - chrono::Duration::days(6))),
            ..input()
        };
        assert!(check_event(&edge, now, WEEK).is_ok());
    }

    #[test]
    fn an_undated_repeat_matches_any_time() {
        let now = Utc::now();
        let stored = check_event(
            &UsageInput {
                time: Some(Ok(now - chrono::Duration::hours(1))),
                ..input()
            },
            now,
            WEEK,
        )
        .unwrap();
        let undated = check_event(&input(), now, WEEK).unwrap();
        assert_eq!(conflict(&stored, &undated), None);
        let dated = check_event(
            &UsageInput {
                time: Some(Ok(now)),
                ..input()
            },
            now,
            WEEK,
        )
        .unwrap();
        assert!(conflict(&stored, &dated).is_some());
        let other = check_event(
            &UsageInput {
                value: 2.0,
                ..input()
            },
            now,
            WEEK,
        )
        .unwrap();
        assert!(conflict(&stored, &other).unwrap().contains("value 1"));
    }

    #[test]
    fn figures_know_their_thresholds_and_what_they_allow() {
        let mut f = Figure {
            tenant_id: Uuid::nil(),
            meter: "api_calls".into(),
            aggregation: Aggregation::Sum,
            unit: String::new(),
            period: Period::Day,
            period_start: Utc::now(),
            value: 79.0,
            limit: Some(100.0),
            on_limit: OnLimit::Notify,
        };
        assert_eq!(f.reached().count(), 0);
        assert!(!f.exhausted());
        assert_eq!(f.allows(21.0), (true, Some(21.0)));
        assert_eq!(f.allows(22.0), (false, Some(21.0)));
        assert!(f.add(1.0));
        assert_eq!(f.reached().collect::<Vec<_>>(), [80]);
        f.value = 130.0;
        assert_eq!(f.reached().collect::<Vec<_>>(), [80, 100]);
        assert!(f.exhausted());
        assert_eq!(f.allows(0.0), (false, Some(0.0)));
        f.limit = None;
        assert_eq!((f.allows(1e12), f.share()), ((true, None), None));
        f.aggregation = Aggregation::Latest;
        assert!(!f.add(1.0));
    }

    #[test]
    fn queries_are_bounded_and_zoned() {
        let end = Utc::now();
        let id = Uuid::nil();
        let q = check_query(id, "api_calls", None, end, Window::Day, "").unwrap();
        assert_eq!(q.time_zone, "UTC");
        assert_eq!(q.end - q.start, chrono::Duration::days(29));
        let bad = check_query(id, "api_calls", None, end, Window::Day, "Mars/Olympus").unwrap_err();
        assert_eq!(bad[0].field, "time_zone");
        let long = check_query(
            id,
            "api_calls",
            Some(end - chrono::Duration::days(3000)),
            end,
            Window::Day,
            "Europe/Berlin",
        )
        .unwrap_err();
        assert_eq!(long[0].field, "start_time");
        let back = check_query(
            id,
            "api_calls",
            Some(end),
            end - chrono::Duration::hours(1),
            Window::Hour,
            "UTC",
        )
        .unwrap_err();
        assert_eq!(back[0].field, "end_time");
    }
}
