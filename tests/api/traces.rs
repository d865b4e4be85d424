//! Trace export: a real OTLP/gRPC collector receives the server's spans,
//! one per RPC and one per step attempt, with the tenant, step and attempt.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tenantd::proto::CreateTenantRequest;
use tonic::{Request, Response, Status};

use crate::common::process::ServerProcess;
use crate::common::{TestDb, tenant};

/// Keeps every span it is sent, and the service name they came from.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .and_then(|r| text(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|value| match value {
            Value::StringValue(s) => s,
            Value::IntValue(n) => n.to_string(),
            other => format!("{other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_rpcs_and_step_attempts_reach_an_otlp_collector() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let receiver = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(incoming),
    );

    let db = TestDb::new().await;
    let mail = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn_full(
        &db,
        mail.path(),
        5_000,
        8,
        &[("TENANTD_OTLP_ENDPOINT", endpoint.as_str())],
        None,
    )
    .await;
    let mut client = server.client().await;
    let id = client
        .create_tenant(CreateTenantRequest {
            tenant: Some(tenant("traced")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
        .id;
    server.wait_active(&id).await;
    // A graceful stop flushes the spans still buffered.
    server.terminate().await;

    let spans = collector.spans.lock().unwrap().clone();
    receiver.abort();
    assert!(
        spans.iter().all(|(service, _)| service == "tenantd"),
        "service.name"
    );
    let create = spans
        .iter()
        .find(|(_, s)| s.name == "/tenancy.v1.TenantService/CreateTenant")
        .unwrap_or_else(|| panic!("no CreateTenant span among {} spans", spans.len()));
    assert_eq!(
        text(&create.1.attributes, "method").as_deref(),
        Some("/tenancy.v1.TenantService/CreateTenant")
    );
    for step in [
        "create_schema",
        "run_migrations",
        "seed_roles_and_admin",
        "activate",
    ] {
        let attempt = spans
            .iter()
            .find(|(_, s)| s.name == format!("PROVISION {step}"))
            .unwrap_or_else(|| panic!("no span for {step}"));
        let attributes = &attempt.1.attributes;
        assert_eq!(text(attributes, "tenant_id").as_deref(), Some(id.as_str()));
        assert_eq!(text(attributes, "step").as_deref(), Some(step));
        assert_eq!(text(attributes, "attempt").as_deref(), Some("1"));
        assert!(attempt.1.end_time_unix_nano >= attempt.1.start_time_unix_nano);
    }
}
