//! UsageService: meters, idempotent recording, per-event outcomes, queries
//! in a time zone across a DST change, the late window, and cancellations
//! that correct every figure.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use tenantd::proto::usage_service_client::UsageServiceClient;
use tenantd::proto::{
    Aggregation, CancelUsageRequest, CreateMeterRequest, DeleteMeterRequest, ListMetersRequest,
    Meter, QueryUsageRequest, RecordUsageRequest, UsageBucket, UsageEvent, UsageResult,
    UsageWindow,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{TestApp, violated_fields};

type Client = UsageServiceClient<Channel>;

async fn client(app: &TestApp) -> Client {
    UsageServiceClient::new(app.channel().await)
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn event(
    id: &str,
    tenant: &str,
    meter: &str,
    value: f64,
    time: Option<DateTime<Utc>>,
) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        tenant_id: tenant.into(),
        meter: meter.into(),
        value,
        time: time.map(ts),
        subject: String::new(),
    }
}

/// Records `events`; the results as (id, result, reason).
async fn record(
    client: &mut Client,
    events: Vec<UsageEvent>,
) -> Vec<(String, UsageResult, String)> {
    client
        .record_usage(RecordUsageRequest { events })
        .await
        .expect("record usage")
        .into_inner()
        .results
        .into_iter()
        .map(|r| (r.result(), r.id, r.reason))
        .map(|(result, id, reason)| (id, result, reason))
        .collect()
}

async fn query(
    client: &mut Client,
    tenant: &str,
    meter: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    window: UsageWindow,
    zone: &str,
) -> Vec<UsageBucket> {
    client
        .query_usage(QueryUsageRequest {
            tenant_id: tenant.into(),
            meter: meter.into(),
            start_time: Some(ts(start)),
            end_time: Some(ts(end)),
            window: window as i32,
            time_zone: zone.into(),
        })
        .await
        .expect("query usage")
        .into_inner()
        .buckets
}

/// The figure of the one window holding `at` (a day in UTC).
async fn day_value(
    client: &mut Client,
    tenant: &str,
    meter: &str,
    at: DateTime<Utc>,
) -> (f64, i64) {
    let buckets = query(
        client,
        tenant,
        meter,
        at,
        at + chrono::Duration::seconds(1),
        UsageWindow::Day,
        "",
    )
    .await;
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    (buckets[0].value, buckets[0].events)
}

fn start_of(b: &UsageBucket) -> DateTime<Utc> {
    let t = b.start_time.expect("start_time");
    DateTime::from_timestamp(t.seconds, t.nanos as u32).expect("time")
}

async fn create_meter(client: &mut Client, name: &str, aggregation: Aggregation) -> Meter {
    client
        .create_meter(CreateMeterRequest {
            meter: Some(Meter {
                name: name.into(),
                description: format!("{name} for tests"),
                aggregation: aggregation as i32,
                unit: "things".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("create meter")
        .into_inner()
        .meter
        .expect("meter")
}

#[tokio::test]
async fn meters_are_listed_created_and_deleted_with_clear_errors() {
    let app = TestApp::api_only().await;
    let mut c = client(&app).await;
    let names = |ms: Vec<Meter>| {
        ms.into_iter()
            .map(|m| (m.aggregation(), m.name, m.builtin))
            .map(|(a, n, b)| (n, a, b))
            .collect::<Vec<_>>()
    };
    let listed = names(
        c.list_meters(ListMetersRequest {})
            .await
            .unwrap()
            .into_inner()
            .meters,
    );
    assert_eq!(
        listed,
        vec![
            ("api_calls".to_owned(), Aggregation::Sum, true),
            ("storage_bytes".to_owned(), Aggregation::Latest, true),
            ("transactions".to_owned(), Aggregation::Sum, true),
            ("users".to_owned(), Aggregation::Latest, true),
        ]
    );

    let made = create_meter(&mut c, "active_users", Aggregation::UniqueCount).await;
    assert_eq!(
        (made.aggregation(), made.builtin, made.unit.as_str()),
        (Aggregation::UniqueCount, false, "things")
    );
    assert!(made.create_time.is_some());
    let again = c
        .create_meter(CreateMeterRequest {
            meter: Some(made.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    let bad = c
        .create_meter(CreateMeterRequest {
            meter: Some(Meter {
                name: "Bad-Name".into(),
                unit: "u".repeat(33),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&bad),
        ["meter.name", "meter.unit", "meter.aggregation"]
    );

    let builtin = c
        .delete_meter(DeleteMeterRequest {
            name: "api_calls".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(builtin.code(), Code::FailedPrecondition, "{builtin:?}");
    assert!(
        builtin.message().contains("built in"),
        "{}",
        builtin.message()
    );
    let missing = c
        .delete_meter(DeleteMeterRequest {
            name: "no_such_meter".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // Deleting a meter takes its usage with it.
    let tenant = app.create("meter-gone", "").await;
    let r = record(
        &mut c,
        vec![UsageEvent {
            subject: "u1".into(),
            ..event("e1", &tenant.id, "active_users", 1.0, None)
        }],
    )
    .await;
    assert_eq!(r[0].1, UsageResult::Accepted, "{r:?}");
    c.delete_meter(DeleteMeterRequest {
        name: "active_users".into(),
    })
    .await
    .expect("delete");
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM usage_events").await,
        0
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM usage_rollups")
            .await,
        0
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM usage_subjects")
            .await,
        0
    );
    let listed = names(
        c.list_meters(ListMetersRequest {})
            .await
            .unwrap()
            .into_inner()
            .meters,
    );
    assert_eq!(listed.len(), 4);
    app.stop().await;
}

#[tokio::test]
async fn repeats_count_once_within_a_call_across_calls_and_across_clients() {
    let app = TestApp::api_only().await;
    let mut c = client(&app).await;
    let tenant = app.create("usage-once", "").await;
    let t = tenant.id.as_str();
    let now = Utc::now();

    let first = record(
        &mut c,
        vec![
            event("a", t, "api_calls", 5.0, None),
            event("a", t, "api_calls", 5.0, None),
            event("a", t, "api_calls", 6.0, None),
            event("b", t, "api_calls", 2.0, Some(now)),
            // The same id on another meter is another event.
            event("a", t, "transactions", 1.0, None),
        ],
    )
    .await;
    let results: Vec<UsageResult> = first.iter().map(|r| r.1).collect();
    assert_eq!(
        results,
        [
            UsageResult::Accepted,
            UsageResult::Duplicate,
            UsageResult::Conflict,
            UsageResult::Accepted,
            UsageResult::Accepted
        ]
    );
    assert!(first[2].2.contains("value 5"), "{first:?}");

    let second = record(
        &mut c,
        vec![
            event("a", t, "api_calls", 5.0, None),
            event("b", t, "api_calls", 2.0, Some(now)),
            event(
                "b",
                t,
                "api_calls",
                2.0,
                Some(now - chrono::Duration::minutes(1)),
            ),
            event("c", t, "api_calls", 1.0, None),
        ],
    )
    .await;
    let results: Vec<UsageResult> = second.iter().map(|r| r.1).collect();
    assert_eq!(
        results,
        [
            UsageResult::Duplicate,
            UsageResult::Duplicate,
            UsageResult::Conflict,
            UsageResult::Accepted
        ]
    );
    assert!(second[2].2.contains("was recorded at"), "{second:?}");
    assert_eq!(day_value(&mut c, t, "api_calls", now).await, (8.0, 3));
    assert_eq!(day_value(&mut c, t, "transactions", now).await, (1.0, 1));

    // Eight clients recording the same ids at once: each counts once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = client(&app).await;
        let t = t.to_owned();
        tasks.push(tokio::spawn(async move {
            let events = (0..50)
                .map(|i| event(&format!("race-{i}"), &t, "api_calls", 10.0, None))
                .collect();
            record(&mut c, events).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        for (_, result, reason) in task.await.unwrap() {
            match result {
                UsageResult::Accepted => accepted += 1,
                UsageResult::Duplicate => {}
                other => panic!("{other:?}: {reason}"),
            }
        }
    }
    assert_eq!(accepted, 50);
    assert_eq!(day_value(&mut c, t, "api_calls", now).await, (508.0, 53));
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) AS n FROM usage_events WHERE tenant_id = '{t}'"
            ))
            .await,
        54
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_events_are_rejected_one_by_one_and_bad_calls_store_nothing() {
    let app = TestApp::api_only().await;
    let mut c = client(&app).await;
    let tenant = app.create("usage-bad", "").await;
    let t = tenant.id.as_str();
    let now = Utc::now();
    let results = record(
        &mut c,
        vec![
            event("nan", t, "api_calls", f64::NAN, None),
            event("inf", t, "api_calls", f64::INFINITY, None),
            event("neg-inf", t, "api_calls", f64::NEG_INFINITY, None),
            event("negative", t, "api_calls", -1.0, None),
            event("unknown-meter", t, "no_such_meter", 1.0, None),
            event(&"x".repeat(129), t, "api_calls", 1.0, None),
            event(
                "no-tenant",
                "0190c5d8-0000-7000-8000-000000000000",
                "api_calls",
                1.0,
                None,
            ),
            event("bad-tenant", "not-a-uuid", "api_calls", 1.0, None),
            event(
                "future",
                t,
                "api_calls",
                1.0,
                Some(now + chrono::Duration::minutes(10)),
            ),
            event(
                "too-late",
                t,
                "api_calls",
                1.0,
                Some(now - chrono::Duration::days(8)),
            ),
            UsageEvent {
                time: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: -5,
                }),
                ..event("bad-time", t, "api_calls", 1.0, None)
            },
            event(
                "late-but-fine",
                t,
                "api_calls",
                3.0,
                Some(now - chrono::Duration::days(6)),
            ),
        ],
    )
    .await;
    let reasons: Vec<(&str, UsageResult, &str)> = results
        .iter()
        .map(|(id, r, why)| (&id[..id.len().min(16)], *r, why.as_str()))
        .collect();
    let expect = [
        ("nan", "finite"),
        ("inf", "finite"),
        ("neg-inf", "finite"),
        ("negative", "at least 0"),
        ("unknown-meter", "unknown meter \"no_such_meter\""),
        ("xxxxxxxxxxxxxxxx", "1 to 128"),
        ("no-tenant", "not found"),
        ("bad-tenant", "UUID"),
        ("future", "ahead"),
        ("too-late", "late window"),
        ("bad-time", "not a valid timestamp"),
    ];
    for (i, (id, why)) in expect.iter().enumerate() {
        assert_eq!(reasons[i].0, *id);
        assert_eq!(reasons[i].1, UsageResult::Rejected, "{:?}", reasons[i]);
        assert!(
            reasons[i].2.contains(why),
            "{:?} should say {why:?}",
            reasons[i]
        );
    }
    assert_eq!(reasons[11].1, UsageResult::Accepted, "{:?}", reasons[11]);
    let six_days_ago = now - chrono::Duration::days(6);
    assert_eq!(
        day_value(&mut c, t, "api_calls", six_days_ago).await,
        (3.0, 1)
    );

    // A call that fails as a whole stores nothing.
    for n in [0, 1001] {
        let events = (0..n)
            .map(|i| event(&format!("bulk-{i}"), t, "api_calls", 1.0, None))
            .collect();
        let err = c
            .record_usage(RecordUsageRequest { events })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{n}: {err:?}");
        assert_eq!(violated_fields(&err), ["events"]);
    }
    assert_eq!(
        app.db.count("SELECT count(*) AS n FROM usage_events").await,
        1
    );

    // Queries and cancellations refuse what they cannot read.
    let q = |tenant: &str, meter: &str, zone: &str, start: DateTime<Utc>, end: DateTime<Utc>| {
        QueryUsageRequest {
            tenant_id: tenant.into(),
            meter: meter.into(),
            start_time: Some(ts(start)),
            end_time: Some(ts(end)),
            window: UsageWindow::Day as i32,
            time_zone: zone.into(),
        }
    };
    let day = chrono::Duration::days(1);
    for (request, code, field) in [
        (
            q(t, "api_calls", "Mars/Olympus_Mons", now - day, now),
            Code::InvalidArgument,
            Some("time_zone"),
        ),
        (
            q(t, "api_calls", "", now, now - day),
            Code::InvalidArgument,
            Some("end_time"),
        ),
        (
            q(t, "api_calls", "", now - day * 3000, now),
            Code::InvalidArgument,
            Some("start_time"),
        ),
        (
            q("nope", "api_calls", "", now - day, now),
            Code::InvalidArgument,
            Some("tenant_id"),
        ),
        (
            q(
                "0190c5d8-0000-7000-8000-000000000000",
                "api_calls",
                "",
                now - day,
                now,
            ),
            Code::NotFound,
            None,
        ),
        (
            q(t, "no_such_meter", "", now - day, now),
            Code::NotFound,
            None,
        ),
    ] {
        let err = c.query_usage(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{request:?}: {err:?}");
        if let Some(field) = field {
            assert_eq!(violated_fields(&err), [field], "{err:?}");
        }
    }
    let err = c
        .cancel_usage(CancelUsageRequest {
            tenant_id: t.into(),
            meter: "api_calls".into(),
            ids: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), violated_fields(&err)),
        (Code::InvalidArgument, vec!["ids".to_owned()])
    );
    app.stop().await;
}

/// The last day before `now` on which Berlin's clocks changed.
fn last_dst_change(now: DateTime<Utc>) -> NaiveDate {
    let mut day = now.with_timezone(&Berlin).date_naive();
    loop {
        day = day.pred_opt().expect("a day");
        let start = Berlin
            .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
            .unwrap();
        let next = Berlin
            .from_local_datetime(&day.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap())
            .unwrap();
        if next - start != chrono::Duration::hours(24) {
            return day;
        }
    }
}

#[tokio::test]
async fn days_follow_the_time_zone_across_a_dst_change() {
    // Long enough to date events on the last DST change, whenever it was.
    let app = TestApp::start_with(
        |c| {
            c.concurrency = 0;
            c.usage_late_window = Duration::from_secs(240 * 24 * 3600);
        },
        tenantd::steps::Registry::new(),
    )
    .await;
    let mut c = client(&app).await;
    let tenant = app.create("usage-dst", "").await;
    let t = tenant.id.as_str();
    let change = last_dst_change(Utc::now());
    let local = |day: NaiveDate, h: u32, m: u32| {
        Berlin
            .from_local_datetime(&day.and_hms_opt(h, m, 0).unwrap())
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    };
    let before = change.pred_opt().unwrap();
    let after = change.succ_opt().unwrap();
    // Late on the day before, just after midnight and late on the day of
    // the change, just after midnight the day after.
    let times = [
        local(before, 23, 30),
        local(change, 0, 30),
        local(change, 23, 30),
        local(after, 0, 30),
    ];
    let events = times
        .iter()
        .enumerate()
        .map(|(i, at)| {
            event(
                &format!("dst-{i}"),
                t,
                "api_calls",
                10f64.powi(i as i32),
                Some(*at),
            )
        })
        .collect();
    assert!(
        record(&mut c, events)
            .await
            .iter()
            .all(|r| r.1 == UsageResult::Accepted)
    );

    let (start, end) = (local(before, 12, 0), local(after, 12, 0));
    let days = query(
        &mut c,
        t,
        "api_calls",
        start,
        end,
        UsageWindow::Day,
        "Europe/Berlin",
    )
    .await;
    let starts: Vec<DateTime<Utc>> = days.iter().map(start_of).collect();
    assert_eq!(
        starts,
        [local(before, 0, 0), local(change, 0, 0), local(after, 0, 0)]
    );
    let length = starts[2] - starts[1];
    assert_ne!(
        length,
        chrono::Duration::hours(24),
        "the change's day is 23 or 25 hours long"
    );
    let values: Vec<(f64, i64)> = days.iter().map(|b| (b.value, b.events)).collect();
    assert_eq!(values, [(1.0, 1), (110.0, 2), (1000.0, 1)]);

    // In UTC the events just after local midnight belong to the day before.
    let utc = query(&mut c, t, "api_calls", start, end, UsageWindow::Day, "UTC").await;
    let values: Vec<f64> = utc.iter().map(|b| b.value).collect();
    assert_eq!(values, [11.0, 1100.0, 0.0], "{utc:?}");

    // Hours in Berlin: the change's day has 23 or 25 of them.
    let hours = query(
        &mut c,
        t,
        "api_calls",
        local(change, 0, 0),
        local(after, 0, 0),
        UsageWindow::Hour,
        "Europe/Berlin",
    )
    .await;
    assert_eq!(hours.len() as i64, length.num_hours(), "{hours:?}");
    assert_eq!(hours.iter().map(|b| b.value).sum::<f64>(), 110.0);
    // The month holds all four.
    let month = query(
        &mut c,
        t,
        "api_calls",
        local(change, 12, 0),
        local(change, 13, 0),
        UsageWindow::Month,
        "Europe/Berlin",
    )
    .await;
    // The change is on a last Sunday: the day before is in its month, the
    // day after may not be.
    let whole = if chrono::Datelike::month(&after) == chrono::Datelike::month(&change) {
        1111.0
    } else {
        111.0
    };
    assert_eq!(
        month.iter().map(|b| b.value).collect::<Vec<_>>(),
        [whole],
        "{month:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn aggregations_read_rollups_and_cancellations_correct_them() {
    let app = TestApp::api_only().await;
    let mut c = client(&app).await;
    create_meter(&mut c, "peak_sessions", Aggregation::Max).await;
    create_meter(&mut c, "active_users", Aggregation::UniqueCount).await;
    create_meter(&mut c, "logins", Aggregation::Count).await;
    let tenant = app.create("usage-agg", "").await;
    let t = tenant.id.as_str();
    // Three quarter hours of yesterday (UTC).
    let yesterday = Utc::now().date_naive().pred_opt().unwrap();
    let base = yesterday.and_hms_opt(12, 0, 0).unwrap().and_utc();
    let at = |minutes: i64| base - chrono::Duration::minutes(minutes);
    let subject = |e: UsageEvent, s: &str| UsageEvent {
        subject: s.into(),
        ..e
    };
    let results = record(
        &mut c,
        vec![
            event("s1", t, "peak_sessions", 7.0, Some(at(0))),
            event("s2", t, "peak_sessions", 12.0, Some(at(20))),
            event("s3", t, "peak_sessions", 9.0, Some(at(40))),
            event("g1", t, "storage_bytes", 100.0, Some(at(40))),
            event("g2", t, "storage_bytes", 300.0, Some(at(0))),
            // Recorded later, dated earlier: not the latest.
            event("g3", t, "storage_bytes", 200.0, Some(at(20))),
            subject(event("u1", t, "active_users", 1.0, Some(at(0))), "alice"),
            subject(event("u2", t, "active_users", 1.0, Some(at(20))), "alice"),
            subject(event("u3", t, "active_users", 1.0, Some(at(40))), "bob"),
            event("l1", t, "logins", 1.0, Some(at(0))),
            event("l2", t, "logins", 1.0, Some(at(40))),
        ],
    )
    .await;
    assert!(
        results.iter().all(|r| r.1 == UsageResult::Accepted),
        "{results:?}"
    );
    assert_eq!(day_value(&mut c, t, "peak_sessions", base).await, (12.0, 3));
    assert_eq!(
        day_value(&mut c, t, "storage_bytes", base).await,
        (300.0, 3)
    );
    assert_eq!(day_value(&mut c, t, "active_users", base).await, (2.0, 3));
    assert_eq!(day_value(&mut c, t, "logins", base).await, (2.0, 2));
    assert!(
        app.db
            .count("SELECT count(*) AS n FROM usage_rollups")
            .await
            >= 4
    );

    let cancel = |meter: &str, ids: &[&str]| CancelUsageRequest {
        tenant_id: t.into(),
        meter: meter.into(),
        ids: ids.iter().map(|s| (*s).to_owned()).collect(),
    };
    let r = c
        .cancel_usage(cancel("peak_sessions", &["s2", "nope"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.cancelled, r.not_found), (1, vec!["nope".to_owned()]));
    assert_eq!(day_value(&mut c, t, "peak_sessions", base).await, (9.0, 2));
    c.cancel_usage(cancel("storage_bytes", &["g2"]))
        .await
        .unwrap();
    assert_eq!(
        day_value(&mut c, t, "storage_bytes", base).await,
        (200.0, 2)
    );
    c.cancel_usage(cancel("active_users", &["u3"]))
        .await
        .unwrap();
    assert_eq!(day_value(&mut c, t, "active_users", base).await, (1.0, 2));
    c.cancel_usage(cancel("active_users", &["u1", "u2"]))
        .await
        .unwrap();
    assert_eq!(day_value(&mut c, t, "active_users", base).await, (0.0, 0));
    // A second cancellation finds nothing; a cancelled id stays seen.
    let again = c
        .cancel_usage(cancel("peak_sessions", &["s2"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.cancelled, again.not_found),
        (0, vec!["s2".to_owned()])
    );
    let repeat = record(
        &mut c,
        vec![event("s2", t, "peak_sessions", 12.0, Some(at(20)))],
    )
    .await;
    assert_eq!(repeat[0].1, UsageResult::Duplicate);
    assert_eq!(day_value(&mut c, t, "peak_sessions", base).await, (9.0, 2));
    // Recounted rollups match a count from the raw events.
    assert_eq!(
        app.db
            .count("SELECT sum(events)::bigint AS n FROM usage_rollups")
            .await,
        app.db
            .count("SELECT count(*) AS n FROM usage_events WHERE cancel_time IS NULL")
            .await
    );

    let err = c
        .cancel_usage(cancel("no_such_meter", &["x"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

/// The latest figure of a LATEST meter today (UTC), once it has one.
async fn sampled(c: &mut Client, tenant: &str, meter: &str, until: impl Fn(f64) -> bool) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = Utc::now();
        let (value, events) = day_value(c, tenant, meter, now).await;
        if events > 0 && until(value) {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{meter} never sampled as expected (last {value}, {events} events)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_and_users_are_sampled_when_active_and_then_every_interval() {
    let app = TestApp::start_with(
        |c| c.schedules.usage_sample_interval = Duration::from_secs(1),
        tenantd::steps::Registry::new(),
    )
    .await;
    let mut c = client(&app).await;
    let created = app.create("sampled", "").await;
    app.wait_for(&created.id, tenantd::proto::TenantState::Active)
        .await;
    let t = created.id.as_str();
    let first = sampled(&mut c, t, "storage_bytes", |v| v > 0.0).await;
    assert_eq!(
        sampled(&mut c, t, "users", |_| true).await,
        1.0,
        "the admin"
    );

    // Rows written into the tenant's schema show at the next sample.
    app.db
        .exec(
            "CREATE TABLE tenant_sampled.documents AS
                 SELECT i, repeat('x', 1000) AS body FROM generate_series(1, 2000) i;
             INSERT INTO tenant_sampled.users (id, email, role_id)
                 SELECT gen_random_uuid(), 'second@sampled.test', min(id) FROM tenant_sampled.roles",
        )
        .await;
    let grown = sampled(&mut c, t, "storage_bytes", |v| v > first + 1_000_000.0).await;
    assert!(grown > first, "{grown} after {first}");
    assert_eq!(sampled(&mut c, t, "users", |v| v == 2.0).await, 2.0);
    // Samples are recorded as events like any other, once per second at most.
    let samples = app
        .db
        .count(&format!("SELECT count(*) AS n FROM usage_events WHERE tenant_id = '{t}' AND meter = 'storage_bytes'"))
        .await;
    assert!(samples >= 2, "{samples}");
    assert_eq!(
        app.db
            .count(&format!("SELECT count(*) AS n FROM usage_events WHERE tenant_id = '{t}' AND id NOT LIKE 'sample:%'"))
            .await,
        0
    );
    app.stop().await;
}

/// The messages of a tenant's USAGE_THRESHOLD_REACHED events.
async fn thresholds(app: &TestApp, tenant: &str) -> Vec<String> {
    app.events(tenant)
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "USAGE_THRESHOLD_REACHED")
        .map(|(_, _, message)| message)
        .collect()
}

#[tokio::test]
async fn limits_bind_meters_thresholds_are_announced_once_and_quotas_answer() {
    let app = TestApp::api_only().await;
    let mut c = client(&app).await;
    // basic: 10,000 API calls a day, 10 users, 1 GiB.
    let tenant = app.create("quota-co", "basic").await;
    let t = tenant.id.as_str();
    let check = |amount: f64| tenantd::proto::CheckQuotaRequest {
        tenant_id: t.into(),
        meter: "api_calls".into(),
        amount,
    };
    let fresh = c.check_quota(check(10_000.0)).await.unwrap().into_inner();
    assert_eq!(
        (fresh.allowed, fresh.remaining, fresh.limit, fresh.used),
        (true, Some(10_000.0), Some(10_000.0), 0.0)
    );

    let r = record(&mut c, vec![event("q1", t, "api_calls", 7_999.0, None)]).await;
    assert_eq!(r[0].1, UsageResult::Accepted);
    assert!(thresholds(&app, t).await.is_empty());
    // Memory follows what this server records, without reading again.
    let after = c.check_quota(check(2_002.0)).await.unwrap().into_inner();
    assert_eq!(
        (after.allowed, after.remaining, after.used),
        (false, Some(2_001.0), 7_999.0)
    );

    record(&mut c, vec![event("q2", t, "api_calls", 1.0, None)]).await;
    let once = thresholds(&app, t).await;
    assert_eq!(once.len(), 1, "{once:?}");
    assert!(
        once[0].starts_with("api_calls reached 80% of the plan's limit: 8000 of 10000"),
        "{once:?}"
    );
    record(&mut c, vec![event("q3", t, "api_calls", 500.0, None)]).await;
    assert_eq!(
        thresholds(&app, t).await.len(),
        1,
        "80% is announced once a day"
    );
    record(
        &mut c,
        vec![
            event("q4", t, "api_calls", 1_500.0, None),
            event("q5", t, "api_calls", 1.0, None),
        ],
    )
    .await;
    let both = thresholds(&app, t).await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both[1].contains("reached 100%"), "{both:?}");
    let full = c.check_quota(check(1.0)).await.unwrap().into_inner();
    assert_eq!(
        (full.allowed, full.remaining, full.used),
        (false, Some(0.0), 10_001.0)
    );
    assert!(
        c.check_quota(check(0.0))
            .await
            .unwrap()
            .into_inner()
            .remaining
            == Some(0.0)
    );

    let summary = c
        .get_usage_summary(tenantd::proto::GetUsageSummaryRequest {
            tenant_id: t.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .meters;
    let by_name = |name: &str| {
        summary
            .iter()
            .find(|m| m.meter == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let calls = by_name("api_calls");
    assert_eq!(
        (calls.value, calls.limit, calls.share),
        (10_001.0, Some(10_000.0), Some(1.0001))
    );
    assert_eq!(by_name("users").limit, Some(10.0));
    assert_eq!(
        by_name("storage_bytes").limit,
        Some(1024.0 * 1024.0 * 1024.0)
    );
    assert_eq!(
        (by_name("transactions").limit, by_name("transactions").share),
        (None, None)
    );
    assert_eq!(summary.len(), 4);

    // Errors: a meter or tenant that is not there, an amount that is not one.
    let bad = |tenant: &str, meter: &str, amount: f64| tenantd::proto::CheckQuotaRequest {
        tenant_id: tenant.into(),
        meter: meter.into(),
        amount,
    };
    let missing = "0190c5d8-0000-7000-8000-000000000000";
    for (request, code) in [
        (bad(t, "no_such_meter", 1.0), Code::NotFound),
        (bad(missing, "api_calls", 1.0), Code::NotFound),
        (bad(t, "api_calls", f64::NAN), Code::InvalidArgument),
        (bad(t, "api_calls", -1.0), Code::InvalidArgument),
        (bad("nope", "api_calls", 1.0), Code::InvalidArgument),
    ] {
        let e = c.check_quota(request.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{request:?}: {e:?}");
    }
    let e = c
        .get_usage_summary(tenantd::proto::GetUsageSummaryRequest {
            tenant_id: missing.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    app.stop().await;
}
