//! GetProvisioningStats: the conversion of its request and response.

use chrono::TimeDelta;

use super::convert::{tenant_state, timestamp};
use crate::db::stats::{PlanTiming, ProvisioningStats, RunningPipeline, StepFailures};
use crate::proto as pb;

/// The requested window, unchecked (the use case bounds it). A duration
/// too large for [`TimeDelta`] saturates, so it is still refused as too long.
pub fn window(d: Option<prost_types::Duration>) -> Option<TimeDelta> {
    d.map(|d| {
        let saturated = if d.seconds < 0 {
            TimeDelta::MIN
        } else {
            TimeDelta::MAX
        };
        TimeDelta::try_seconds(d.seconds)
            .and_then(|s| s.checked_add(&TimeDelta::nanoseconds(d.nanos.into())))
            .unwrap_or(saturated)
    })
}

pub fn response(s: ProvisioningStats) -> pb::GetProvisioningStatsResponse {
    let as_of = s.as_of;
    pb::GetProvisioningStatsResponse {
        window_start_time: Some(timestamp(s.window_start)),
        as_of_time: Some(timestamp(as_of)),
        tenants_by_state: s
            .tenants_by_state
            .into_iter()
            .map(|(state, count)| pb::StateCount {
                state: tenant_state(state) as i32,
                count,
            })
            .collect(),
        pipelines: Some(pb::PipelineOutcomes {
            ended: s.pipelines.ended(),
            succeeded: s.pipelines.succeeded,
            failed: s.pipelines.failed,
            cancelled: s.pipelines.cancelled,
            needs_attention: s.pipelines.needs_attention,
            success_rate: s.pipelines.success_rate(),
        }),
        time_to_active: s.time_to_active.into_iter().map(plan_timing).collect(),
        step_failures: s.step_failures.into_iter().map(step_failures).collect(),
        oldest_running: s.oldest_running.map(|p| oldest(p, as_of)),
        outbox: Some(pb::OutboxBacklog {
            due: s.outbox.due,
            waiting: s.outbox.waiting,
            oldest_due_time: s.outbox.oldest_due.map(timestamp),
        }),
    }
}

fn plan_timing(t: PlanTiming) -> pb::PlanTiming {
    pb::PlanTiming {
        plan: t.plan,
        count: t.count,
        p50: Some(seconds(t.p50_secs)),
        p95: Some(seconds(t.p95_secs)),
    }
}

fn step_failures(f: StepFailures) -> pb::StepFailures {
    pb::StepFailures {
        step: f.step,
        failed_attempts: f.failed_attempts,
        given_up: f.given_up,
    }
}

fn oldest(p: RunningPipeline, as_of: chrono::DateTime<chrono::Utc>) -> pb::OldestPipeline {
    let age = (as_of - p.start_time).max(TimeDelta::zero());
    pb::OldestPipeline {
        tenant_id: p.tenant_id.to_string(),
        slug: p.slug,
        state: tenant_state(p.state) as i32,
        step: p.step,
        compensating: p.compensating,
        start_time: Some(timestamp(p.start_time)),
        age: Some(pb_duration(age)),
    }
}

/// Whole microseconds, the database's precision; negative and non-finite
/// values (which the queries do not produce) become 0.
fn seconds(secs: f64) -> prost_types::Duration {
    let micros = (secs * 1e6).round();
    let micros = if micros.is_finite() && micros > 0.0 {
        micros as i64
    } else {
        0
    };
    pb_duration(TimeDelta::microseconds(micros))
}

fn pb_duration(d: TimeDelta) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.num_seconds(),
        nanos: d.subsec_nanos(),
    }
}
