//! `tenancy.v1.UsageService`: meters, usage events and their figures.

use tonic::{Request, Response, Status};

use super::{authorize, authorize_in_tenant, convert};
use crate::auth::Scope;
use crate::domain::usage::{Aggregation, Meter, UsageInput, UsageOutcome, Window};
use crate::error::Error;
use crate::ops::{Ops, QueryInput};
use crate::proto as pb;
use crate::proto::usage_service_server::UsageService;

/// The gRPC face of the usage use cases.
#[derive(Clone)]
pub struct UsageApi {
    ops: Ops,
}

impl UsageApi {
    pub fn new(ops: Ops) -> Self {
        Self { ops }
    }
}

#[tonic::async_trait]
impl UsageService for UsageApi {
    async fn create_meter(
        &self,
        request: Request<pb::CreateMeterRequest>,
    ) -> Result<Response<pb::CreateMeterResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        let m = request
            .into_inner()
            .meter
            .ok_or_else(|| Error::invalid("meter", "is required"))?;
        let meter = self
            .ops
            .create_meter(
                &m.name,
                &m.description,
                aggregation_of(m.aggregation),
                &m.unit,
            )
            .await?;
        Ok(Response::new(pb::CreateMeterResponse {
            meter: Some(meter_pb(meter)),
        }))
    }

    async fn list_meters(
        &self,
        request: Request<pb::ListMetersRequest>,
    ) -> Result<Response<pb::ListMetersResponse>, Status> {
        authorize(&request, Scope::Read)?;
        let meters = self.ops.list_meters().await?;
        Ok(Response::new(pb::ListMetersResponse {
            meters: meters.into_iter().map(meter_pb).collect(),
        }))
    }

    async fn delete_meter(
        &self,
        request: Request<pb::DeleteMeterRequest>,
    ) -> Result<Response<pb::DeleteMeterResponse>, Status> {
        authorize(&request, Scope::Admin)?;
        self.ops.delete_meter(&request.into_inner().name).await?;
        Ok(Response::new(pb::DeleteMeterResponse {}))
    }

    async fn record_usage(
        &self,
        request: Request<pb::RecordUsageRequest>,
    ) -> Result<Response<pb::RecordUsageResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Write)?;
        let events = request.into_inner().events;
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let inputs = events
            .into_iter()
            .map(|e| UsageInput {
                time: convert::time(e.time).transpose(),
                id: e.id,
                tenant_id: e.tenant_id,
                meter: e.meter,
                value: e.value,
                subject: e.subject,
            })
            .collect();
        let outcomes = self.ops.record_usage(&caller, inputs).await?;
        let results = outcomes
            .into_iter()
            .zip(ids)
            .map(|(outcome, id)| result_pb(id, outcome))
            .collect();
        Ok(Response::new(pb::RecordUsageResponse { results }))
    }

    async fn query_usage(
        &self,
        request: Request<pb::QueryUsageRequest>,
    ) -> Result<Response<pb::QueryUsageResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Read)?;
        let r = request.into_inner();
        let start = convert::time(r.start_time).map_err(|e| Error::invalid("start_time", e))?;
        let end = convert::time(r.end_time).map_err(|e| Error::invalid("end_time", e))?;
        let window = match pb::UsageWindow::try_from(r.window) {
            Ok(pb::UsageWindow::Hour) => Window::Hour,
            Ok(pb::UsageWindow::Day | pb::UsageWindow::Unspecified) => Window::Day,
            Ok(pb::UsageWindow::Month) => Window::Month,
            Err(_) => return Err(Error::invalid("window", "is not a UsageWindow").into()),
        };
        let (aggregation, buckets) = self
            .ops
            .query_usage(
                &caller,
                QueryInput {
                    tenant_id: r.tenant_id,
                    meter: r.meter,
                    start,
                    end,
                    window,
                    time_zone: r.time_zone,
                },
            )
            .await?;
        Ok(Response::new(pb::QueryUsageResponse {
            buckets: buckets
                .into_iter()
                .map(|b| pb::UsageBucket {
                    start_time: Some(convert::timestamp(b.start)),
                    value: b.value,
                    events: b.events,
                })
                .collect(),
            aggregation: aggregation_pb(aggregation) as i32,
        }))
    }

    async fn cancel_usage(
        &self,
        request: Request<pb::CancelUsageRequest>,
    ) -> Result<Response<pb::CancelUsageResponse>, Status> {
        authorize(&request, Scope::Write)?;
        let r = request.into_inner();
        let (cancelled, not_found) = self.ops.cancel_usage(&r.tenant_id, &r.meter, r.ids).await?;
        Ok(Response::new(pb::CancelUsageResponse {
            cancelled: cancelled as i64,
            not_found,
        }))
    }

    async fn get_usage_summary(
        &self,
        request: Request<pb::GetUsageSummaryRequest>,
    ) -> Result<Response<pb::GetUsageSummaryResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Read)?;
        let figures = self
            .ops
            .usage_summary(&caller, &request.get_ref().tenant_id)
            .await?;
        Ok(Response::new(pb::GetUsageSummaryResponse {
            meters: figures
                .into_iter()
                .map(|f| pb::MeterUsage {
                    share: f.share(),
                    aggregation: aggregation_pb(f.aggregation) as i32,
                    period_start_time: Some(convert::timestamp(f.period_start)),
                    period: convert::period(f.period).into(),
                    meter: f.meter,
                    unit: f.unit,
                    value: f.value,
                    limit: f.limit,
                })
                .collect(),
        }))
    }

    async fn check_quota(
        &self,
        request: Request<pb::CheckQuotaRequest>,
    ) -> Result<Response<pb::CheckQuotaResponse>, Status> {
        let caller = authorize_in_tenant(&request, Scope::Read)?;
        let r = request.into_inner();
        let (allowed, remaining, limit, used) = self
            .ops
            .check_quota(&caller, &r.tenant_id, &r.meter, r.amount)
            .await?;
        Ok(Response::new(pb::CheckQuotaResponse {
            allowed,
            remaining,
            limit,
            used,
        }))
    }
}

fn aggregation_of(value: i32) -> Option<Aggregation> {
    match pb::Aggregation::try_from(value).ok()? {
        pb::Aggregation::Unspecified => None,
        pb::Aggregation::Sum => Some(Aggregation::Sum),
        pb::Aggregation::Count => Some(Aggregation::Count),
        pb::Aggregation::Max => Some(Aggregation::Max),
        pb::Aggregation::Latest => Some(Aggregation::Latest),
        pb::Aggregation::UniqueCount => Some(Aggregation::UniqueCount),
    }
}

fn aggregation_pb(a: Aggregation) -> pb::Aggregation {
    match a {
        Aggregation::Sum => pb::Aggregation::Sum,
        Aggregation::Count => pb::Aggregation::Count,
        Aggregation::Max => pb::Aggregation::Max,
        Aggregation::Latest => pb::Aggregation::Latest,
        Aggregation::UniqueCount => pb::Aggregation::UniqueCount,
    }
}

fn meter_pb(m: Meter) -> pb::Meter {
    pb::Meter {
        name: m.name,
        description: m.description,
        aggregation: aggregation_pb(m.aggregation) as i32,
        unit: m.unit,
        builtin: m.builtin,
        create_time: Some(convert::timestamp(m.create_time)),
    }
}

fn result_pb(id: String, outcome: UsageOutcome) -> pb::UsageEventResult {
    let (result, reason) = match outcome {
        UsageOutcome::Accepted => (pb::UsageResult::Accepted, String::new()),
        UsageOutcome::Duplicate => (pb::UsageResult::Duplicate, String::new()),
        UsageOutcome::Conflict(reason) => (pb::UsageResult::Conflict, reason),
        UsageOutcome::Rejected(reason) => (pb::UsageResult::Rejected, reason),
    };
    pb::UsageEventResult {
        id,
        result: result as i32,
        reason,
    }
}
