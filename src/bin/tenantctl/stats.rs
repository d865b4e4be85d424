//! `tenantctl stats`: GetProvisioningStats as a short report, or as JSON.

use std::time::Duration;

use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{GetProvisioningStatsRequest, GetProvisioningStatsResponse};

use crate::errors::Failure;
use crate::output::{self, Format};

/// Provisioning statistics over a recent window.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How far back to count (e.g. `1h`, `7days`); the server's default
    /// (24 hours) when omitted, at most 90 days.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub window: Option<Duration>,
}

pub async fn run(connection: crate::Connection, format: Format, args: Args) -> Result<(), Failure> {
    let request = GetProvisioningStatsRequest {
        window: args.window.map(|w| prost_types::Duration {
            seconds: i64::try_from(w.as_secs()).unwrap_or(i64::MAX),
            nanos: w.subsec_nanos() as i32,
        }),
    };
    let stats = TenantServiceClient::new(connection)
        .get_provisioning_stats(request)
        .await?
        .into_inner();
    match format {
        Format::Json => println!("{}", output::json(&stats, "GetProvisioningStatsResponse")),
        Format::Table => println!("{}", text(&stats)),
    }
    Ok(())
}

/// The report: the window, then one section per figure.
fn text(s: &GetProvisioningStatsResponse) -> String {
    let mut lines = vec![format!(
        "window:          {} to {}",
        time(s.window_start_time.as_ref()),
        time(s.as_of_time.as_ref())
    )];
    lines.push(String::new());
    lines.push(format!("{:<16}  {:>8}", "STATE", "TENANTS"));
    for c in &s.tenants_by_state {
        lines.push(format!("{:<16}  {:>8}", output::state(c.state), c.count));
    }
    let p = s.pipelines.unwrap_or_default();
    lines.push(String::new());
    lines.push(format!(
        "pipelines ended: {} (succeeded {}, failed {}, cancelled {}, needs attention {})",
        p.ended, p.succeeded, p.failed, p.cancelled, p.needs_attention
    ));
    lines.push(format!("success rate:    {:.1}%", p.success_rate * 100.0));
    lines.push(String::new());
    if s.time_to_active.is_empty() {
        lines.push("time to ACTIVE:  no tenant became ACTIVE in the window".to_owned());
    } else {
        lines.push(format!(
            "{:<16}  {:>8}  {:>12}  {:>12}",
            "PLAN", "ACTIVE", "P50", "P95"
        ));
        for t in &s.time_to_active {
            lines.push(format!(
                "{:<16}  {:>8}  {:>12}  {:>12}",
                t.plan,
                t.count,
                duration(t.p50.as_ref()),
                duration(t.p95.as_ref())
            ));
        }
    }
    lines.push(String::new());
    if s.step_failures.is_empty() {
        lines.push("step failures:   none in the window".to_owned());
    } else {
        lines.push(format!(
            "{:<24}  {:>15}  {:>8}",
            "STEP", "FAILED ATTEMPTS", "GAVE UP"
        ));
        for f in &s.step_failures {
            lines.push(format!(
                "{:<24}  {:>15}  {:>8}",
                f.step, f.failed_attempts, f.given_up
            ));
        }
    }
    lines.push(String::new());
    match &s.oldest_running {
        None => lines.push("oldest running:  none".to_owned()),
        Some(o) => {
            let undo = if o.compensating { " (undoing)" } else { "" };
            lines.push(format!("oldest running:  {} ({})", o.slug, o.tenant_id));
            lines.push(format!(
                "                 {} at {}{undo}, started {}, running for {}",
                output::state(o.state),
                o.step,
                time(o.start_time.as_ref()),
                duration(o.age.as_ref())
            ));
        }
    }
    lines.join("\n")
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// To the millisecond under a minute (`2s 345ms`), else to the second
/// (`1h 2m 3s`).
fn duration(d: Option<&prost_types::Duration>) -> String {
    let Some(d) = d else {
        return String::new();
    };
    let millis = d.seconds.max(0) as u64 * 1000 + (d.nanos.max(0) as u64) / 1_000_000;
    let shown = if millis < 60_000 {
        Duration::from_millis(millis)
    } else {
        Duration::from_secs(millis / 1000)
    };
    humantime::format_duration(shown).to_string()
}
