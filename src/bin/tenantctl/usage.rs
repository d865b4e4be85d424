//! `tenantctl usage` and `tenantctl meter` (UsageService): record and read
//! what tenants use, and manage meters.

use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use tenantd::proto::usage_service_client::UsageServiceClient;
use tenantd::proto::{
    Aggregation, CreateMeterRequest, DeleteMeterRequest, GetUsageSummaryRequest, ListMetersRequest,
    Meter, QueryUsageRequest, RecordUsageRequest, UsageEvent, UsageWindow,
};

use crate::Connection;
use crate::errors::{self, Failure};
use crate::output::{self, Format};

/// Width of the longest bar of `usage query`.
const BAR_WIDTH: usize = 40;

#[derive(Debug, Subcommand)]
pub enum UsageCmd {
    /// Record one usage event (RecordUsage); prints its result.
    Record {
        /// The tenant's id.
        tenant_id: String,
        /// The meter's name, e.g. `api_calls`.
        meter: String,
        /// The value, a finite number at least 0.
        value: f64,
        /// The idempotency key; a random one when omitted (so running the
        /// command twice counts twice).
        #[arg(long)]
        id: Option<String>,
        /// When it happened (RFC 3339); now when omitted.
        #[arg(long)]
        time: Option<DateTime<Utc>>,
        /// What a UNIQUE_COUNT meter counts.
        #[arg(long, default_value = "")]
        subject: String,
    },
    /// A tenant's usage on one meter, one line and bar per window.
    Query {
        /// The tenant's id.
        tenant_id: String,
        /// The meter's name.
        meter: String,
        /// The windows' length.
        #[arg(long, value_enum, default_value_t = Window::Day)]
        window: Window,
        /// An IANA time zone such as `Europe/Berlin`; UTC when omitted.
        #[arg(long, default_value = "")]
        time_zone: String,
        /// The first window holds this time (RFC 3339); 30 windows back
        /// when omitted.
        #[arg(long)]
        start: Option<DateTime<Utc>>,
        /// The last window holds the instant before this time; now when
        /// omitted.
        #[arg(long)]
        end: Option<DateTime<Utc>>,
    },
    /// Every meter's figure for the tenant's current period, against the
    /// plan's limits.
    Summary {
        /// The tenant's id.
        tenant_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MeterCmd {
    /// List meters, built-in ones included.
    List,
    /// Define a meter.
    Create {
        /// `^[a-z][a-z0-9_]{1,62}$`.
        name: String,
        /// How events become a figure.
        #[arg(long, value_enum)]
        aggregation: AggregationArg,
        /// The values' unit, e.g. `calls`.
        #[arg(long, default_value = "")]
        unit: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a meter and the usage recorded on it.
    Delete { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Window {
    Hour,
    Day,
    Month,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AggregationArg {
    Sum,
    Count,
    Max,
    Latest,
    UniqueCount,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn failure(status: tonic::Status) -> Failure {
    Failure::Rpc(errors::describe(&status, "tenantctl meter list"))
}

pub async fn run_usage(
    connection: Connection,
    format: Format,
    cmd: UsageCmd,
) -> Result<(), Failure> {
    let mut client = UsageServiceClient::new(connection);
    match cmd {
        UsageCmd::Record {
            tenant_id,
            meter,
            value,
            id,
            time,
            subject,
        } => {
            let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let response = client
                .record_usage(RecordUsageRequest {
                    events: vec![UsageEvent {
                        id,
                        tenant_id,
                        meter,
                        value,
                        time: time.map(ts),
                        subject,
                    }],
                })
                .await
                .map_err(failure)?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&response, "RecordUsageResponse")),
                Format::Table => {
                    for r in &response.results {
                        let result = r.result().as_str_name().trim_start_matches("USAGE_RESULT_");
                        if r.reason.is_empty() {
                            println!("{} {result}", r.id);
                        } else {
                            println!("{} {result}: {}", r.id, r.reason);
                        }
                    }
                }
            }
            // A refused event fails the command, so scripts notice.
            if let Some(r) = response.results.iter().find(|r| {
                matches!(
                    r.result(),
                    tenantd::proto::UsageResult::Rejected | tenantd::proto::UsageResult::Conflict
                )
            }) {
                return Err(Failure::Rpc(format!(
                    "event {} not counted: {}",
                    r.id, r.reason
                )));
            }
        }
        UsageCmd::Query {
            tenant_id,
            meter,
            window,
            time_zone,
            start,
            end,
        } => {
            let window = match window {
                Window::Hour => UsageWindow::Hour,
                Window::Day => UsageWindow::Day,
                Window::Month => UsageWindow::Month,
            };
            let response = client
                .query_usage(QueryUsageRequest {
                    tenant_id,
                    meter,
                    start_time: start.map(ts),
                    end_time: end.map(ts),
                    window: window as i32,
                    time_zone: time_zone.clone(),
                })
                .await
                .map_err(failure)?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&response, "QueryUsageResponse")),
                Format::Table => println!("{}", bars(&response.buckets, window, &time_zone)),
            }
        }
        UsageCmd::Summary { tenant_id } => {
            let response = client
                .get_usage_summary(GetUsageSummaryRequest { tenant_id })
                .await
                .map_err(failure)?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&response, "GetUsageSummaryResponse")),
                Format::Table => {
                    println!(
                        "{:<24}  {:>16}  {:>16}  {:>7}  UNIT",
                        "METER", "VALUE", "LIMIT", "USED"
                    );
                    for m in &response.meters {
                        let limit = m.limit.map_or("-".to_owned(), |l| l.to_string());
                        let used = m
                            .share
                            .map_or("-".to_owned(), |s| format!("{:.1}%", s * 100.0));
                        println!(
                            "{:<24}  {:>16}  {limit:>16}  {used:>7}  {}",
                            m.meter, m.value, m.unit
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// One line per window: its start in the zone, the figure and a bar
/// scaled to the largest figure.
fn bars(buckets: &[tenantd::proto::UsageBucket], window: UsageWindow, zone: &str) -> String {
    let tz: chrono_tz::Tz = if zone.is_empty() {
        chrono_tz::UTC
    } else {
        zone.parse().unwrap_or(chrono_tz::UTC)
    };
    let pattern = match window {
        UsageWindow::Hour => "%Y-%m-%d %H:%M",
        UsageWindow::Month => "%Y-%m",
        _ => "%Y-%m-%d",
    };
    let largest = buckets.iter().map(|b| b.value).fold(0.0_f64, f64::max);
    let mut lines = vec![format!("{:<16}  {:>14}  {:>8}", "START", "VALUE", "EVENTS")];
    for b in buckets {
        let start = b
            .start_time
            .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32))
            .map(|t| t.with_timezone(&tz).format(pattern).to_string())
            .unwrap_or_default();
        let width = if largest > 0.0 {
            ((b.value / largest) * BAR_WIDTH as f64).round() as usize
        } else {
            0
        };
        lines.push(format!(
            "{start:<16}  {:>14}  {:>8}  {}",
            b.value,
            b.events,
            "#".repeat(width)
        ));
    }
    lines.join("\n")
}

pub async fn run_meter(
    connection: Connection,
    format: Format,
    cmd: MeterCmd,
) -> Result<(), Failure> {
    let mut client = UsageServiceClient::new(connection);
    match cmd {
        MeterCmd::List => {
            let response = client
                .list_meters(ListMetersRequest {})
                .await
                .map_err(failure)?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&response, "ListMetersResponse")),
                Format::Table => println!("{}", meter_table(&response.meters)),
            }
        }
        MeterCmd::Create {
            name,
            aggregation,
            unit,
            description,
        } => {
            let aggregation = match aggregation {
                AggregationArg::Sum => Aggregation::Sum,
                AggregationArg::Count => Aggregation::Count,
                AggregationArg::Max => Aggregation::Max,
                AggregationArg::Latest => Aggregation::Latest,
                AggregationArg::UniqueCount => Aggregation::UniqueCount,
            };
            let response = client
                .create_meter(CreateMeterRequest {
                    meter: Some(Meter {
                        name,
                        description,
                        aggregation: aggregation as i32,
                        unit,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(failure)?
                .into_inner();
            match format {
                Format::Json => println!("{}", output::json(&response, "CreateMeterResponse")),
                Format::Table => println!(
                    "{}",
                    meter_table(&response.meter.into_iter().collect::<Vec<_>>())
                ),
            }
        }
        MeterCmd::Delete { name } => {
            client
                .delete_meter(DeleteMeterRequest { name: name.clone() })
                .await
                .map_err(failure)?;
            if matches!(format, Format::Table) {
                println!("meter {name} deleted");
            }
        }
    }
    Ok(())
}

fn meter_table(meters: &[Meter]) -> String {
    let mut lines = vec![format!(
        "{:<24}  {:<12}  {:<12}  {:<7}  DESCRIPTION",
        "NAME", "AGGREGATION", "UNIT", "BUILTIN"
    )];
    for m in meters {
        let aggregation = m
            .aggregation()
            .as_str_name()
            .trim_start_matches("AGGREGATION_")
            .to_owned();
        lines.push(format!(
            "{:<24}  {:<12}  {:<12}  {:<7}  {}",
            m.name,
            aggregation,
            m.unit,
            if m.builtin { "yes" } else { "no" },
            m.description
        ));
    }
    lines.join("\n")
}
