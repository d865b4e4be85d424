//! Webhook steps in plans: a step that calls the operator's own service,
//! against real HTTP receivers on loopback. Signatures are checked with the
//! Standard Webhooks reference implementation.

use tenantd::proto::plan_service_client::PlanServiceClient;
use tenantd::proto::webhook_service_client::WebhookServiceClient;
use tenantd::proto::{
    CreatePlanRequest, CreateTenantRequest, DeleteEndpointRequest, DeletePlanRequest,
    GetEndpointRequest, GetPlanRequest, Plan, PlanStep, StepStatus, TenantState, UpdatePlanRequest,
    WebhookStep,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::receiver::{Received, Receiver};
use crate::common::{TestApp, tenant, violated_fields};
use crate::webhooks::{create, endpoint, start, verify};

fn builtin(name: &str) -> PlanStep {
    PlanStep {
        name: name.into(),
        critical: true,
        max_attempts: 3,
        ..Default::default()
    }
}

/// A critical webhook step with quick retries.
fn call(name: &str, endpoint: &str, compensate: bool, max_attempts: i32) -> PlanStep {
    PlanStep {
        name: name.into(),
        critical: true,
        max_attempts,
        retry_base: Some(prost_types::Duration {
            seconds: 0,
            nanos: 20_000_000,
        }),
        webhook: Some(WebhookStep {
            endpoint: endpoint.into(),
            compensate,
        }),
        ..Default::default()
    }
}

async fn plans(app: &TestApp) -> PlanServiceClient<Channel> {
    PlanServiceClient::new(app.channel().await)
}

async fn create_plan(app: &TestApp, name: &str, steps: Vec<PlanStep>) -> Plan {
    plans(app)
        .await
        .create_plan(CreatePlanRequest {
            plan: Some(Plan {
                name: name.into(),
                steps,
                ..Default::default()
            }),
        })
        .await
        .expect("create plan")
        .into_inner()
        .plan
        .unwrap()
}

fn step<'a>(t: &'a tenantd::proto::Tenant, name: &str) -> &'a tenantd::proto::Step {
    t.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name} in {t:#?}"))
}

async fn delete_endpoint(
    hooks: &mut WebhookServiceClient<Channel>,
    name: &str,
) -> Result<tonic::Response<tenantd::proto::DeleteEndpointResponse>, tonic::Status> {
    hooks
        .delete_endpoint(DeleteEndpointRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
}

fn of_type<'a>(received: &'a [Received], kind: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.json()["type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_step_runs_signed_and_its_answer_becomes_outputs() {
    let (app, mut hooks) = start().await;
    let billing = Receiver::start().await;
    billing.reply_body(r#"{"billing_customer_id": "cus_123", "seats": 5, "trial": true}"#);
    let (_, secret) = create(&mut hooks, endpoint("billing", &billing.url("/run"), &[])).await;
    let plan = create_plan(
        &app,
        "billing",
        vec![
            builtin("create_schema"),
            call("create_billing_customer", "billing", true, 3),
            builtin("activate"),
        ],
    )
    .await;
    let shown = plan.steps[1].webhook.as_ref().expect("the plan shows it");
    assert_eq!(
        (shown.endpoint.as_str(), shown.compensate),
        ("billing", true)
    );

    let created = app.create("acme", "billing").await;
    let active = app.wait_for(&created.id, TenantState::Active).await;
    assert_eq!(active.outputs["billing_customer_id"], "cus_123");
    assert_eq!(active.outputs["seats"], "5");
    assert_eq!(active.outputs["trial"], "true");
    let s = step(&active, "create_billing_customer");
    assert_eq!(s.status, StepStatus::Succeeded as i32);
    assert_eq!(s.webhook_endpoint, "billing");
    assert_eq!(s.output["billing_customer_id"], "cus_123");
    assert_eq!(step(&active, "create_schema").webhook_endpoint, "");

    let received = billing.received();
    assert_eq!(received.len(), 1, "one call, no subscription deliveries");
    let run = &received[0];
    verify(&secret, run).expect("signed with the endpoint's secret");
    let body = run.json();
    assert_eq!(body["type"], "tenant.step.run");
    assert_eq!(body["data"]["step"], "create_billing_customer");
    assert_eq!(body["data"]["attempt"], 1);
    assert_eq!(body["data"]["tenant"]["id"], created.id);
    assert_eq!(body["data"]["tenant"]["slug"], "acme");
    assert_eq!(body["data"]["tenant"]["plan"], "billing");
    assert_eq!(body["data"]["tenant"]["state"], "PROVISIONING");
    assert!(
        body["data"]["outputs"]["schema_name"].is_string(),
        "earlier steps' outputs are sent: {body}"
    );
    let succeeded = app
        .events(&created.id)
        .await
        .into_iter()
        .find(|(kind, step, _)| kind == "STEP_SUCCEEDED" && step == "create_billing_customer")
        .expect("a STEP_SUCCEEDED event");
    assert!(
        succeeded.2.contains("billing_customer_id=cus_123"),
        "{succeeded:?}"
    );

    // validate_only shows the webhook step a new tenant would run.
    let mut request = CreateTenantRequest {
        tenant: Some(tenant("preview")),
        validate_only: true,
        ..Default::default()
    };
    request.tenant.as_mut().unwrap().plan = "billing".into();
    let preview = app
        .client
        .clone()
        .create_tenant(request)
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(
        step(&preview, "create_billing_customer").webhook_endpoint,
        "billing"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_calls_retry_with_one_webhook_id() {
    let (app, mut hooks) = start().await;
    let billing = Receiver::start().await;
    billing.answer(&[500, 500]);
    create(&mut hooks, endpoint("billing", &billing.url("/"), &[])).await;
    create_plan(
        &app,
        "billing",
        vec![
            call("create_billing_customer", "billing", false, 5),
            builtin("activate"),
        ],
    )
    .await;
    let created = app.create("acme", "billing").await;
    let active = app.wait_for(&created.id, TenantState::Active).await;
    assert_eq!(step(&active, "create_billing_customer").attempts, 3);
    let calls = billing.received();
    assert_eq!(calls.len(), 3);
    let ids: Vec<&str> = calls.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids[0].starts_with("msg_"), "{ids:?}");
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one webhook-id: {ids:?}"
    );
    let attempts: Vec<i64> = calls
        .iter()
        .map(|r| r.json()["data"]["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    let retries = app
        .events(&created.id)
        .await
        .into_iter()
        .filter(|(kind, _, message)| kind == "STEP_RETRYING" && message.contains("HTTP 500"))
        .count();
    assert_eq!(retries, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_fails_at_once_and_the_saga_calls_compensate() {
    let (app, mut hooks) = start().await;
    let billing = Receiver::start().await;
    billing.reply_body(r#"{"billing_customer_id": "cus_123"}"#);
    let crm = Receiver::start().await;
    crm.answer_with(400, r#"{"error": "the admin email is not allowed"}"#);
    create(&mut hooks, endpoint("billing", &billing.url("/"), &[])).await;
    create(&mut hooks, endpoint("crm", &crm.url("/"), &[])).await;
    create_plan(
        &app,
        "billing",
        vec![
            builtin("create_schema"),
            call("create_billing_customer", "billing", true, 5),
            call("create_crm_record", "crm", true, 5),
            builtin("activate"),
        ],
    )
    .await;
    let created = app.create("acme", "billing").await;
    let failed = app.wait_for(&created.id, TenantState::Failed).await;
    let refused = step(&failed, "create_crm_record");
    assert_eq!(refused.status, StepStatus::Failed as i32);
    assert_eq!(refused.attempts, 1, "a 400 is not retried");
    assert!(
        refused.last_error.contains("HTTP 400")
            && refused
                .last_error
                .contains("the admin email is not allowed"),
        "{}",
        refused.last_error
    );
    assert_eq!(crm.received().len(), 1);
    assert_eq!(
        step(&failed, "create_billing_customer").status,
        StepStatus::Compensated as i32
    );
    assert_eq!(
        step(&failed, "create_schema").status,
        StepStatus::Compensated as i32
    );
    let schema = &failed.outputs["schema_name"];
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"
            ))
            .await,
        0,
        "the schema was dropped"
    );
    let received = billing.received();
    let undo = of_type(&received, "tenant.step.compensate");
    assert_eq!(undo.len(), 1, "the compensate call was received once");
    let body = undo[0].json();
    assert_eq!(body["data"]["step"], "create_billing_customer");
    assert_eq!(
        body["data"]["outputs"],
        serde_json::json!({"billing_customer_id": "cus_123"}),
        "the step's own outputs"
    );
    let run = of_type(&received, "tenant.step.run");
    assert_ne!(
        run[0].header("webhook-id"),
        undo[0].header("webhook-id"),
        "the undo is a message of its own"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_refused_leaves_needs_attention_naming_the_endpoint() {
    let (app, mut hooks) = start().await;
    let billing = Receiver::start().await;
    billing.answer(&[200]);
    billing.answer_with(422, "customer has invoices");
    let crm = Receiver::start().await;
    crm.answer(&[403]);
    create(&mut hooks, endpoint("billing", &billing.url("/"), &[])).await;
    create(&mut hooks, endpoint("crm", &crm.url("/"), &[])).await;
    create_plan(
        &app,
        "billing",
        vec![
            call("create_billing_customer", "billing", true, 5),
            call("create_crm_record", "crm", false, 5),
            builtin("activate"),
        ],
    )
    .await;
    let created = app.create("acme", "billing").await;
    let stuck = app.wait_for(&created.id, TenantState::NeedsAttention).await;
    assert!(
        stuck.state_reason.contains("billing") && stuck.state_reason.contains("HTTP 422"),
        "{}",
        stuck.state_reason
    );
    assert!(
        stuck
            .leftover_resources
            .iter()
            .any(|r| r.contains("create_billing_customer") && r.contains("endpoint billing")),
        "{:?}",
        stuck.leftover_resources
    );
    assert_eq!(billing.received().len(), 2, "one run, one refused undo");

    // While the tenant may still need the endpoint, it cannot be deleted.
    let plans_using = delete_endpoint(&mut hooks, "billing").await.unwrap_err();
    assert_eq!(plans_using.code(), Code::FailedPrecondition);
    // A new plan version without the webhook step: the tenant still has it.
    plans(&app)
        .await
        .update_plan(UpdatePlanRequest {
            plan: Some(Plan {
                name: "billing".into(),
                steps: vec![builtin("create_schema"), builtin("activate")],
                ..Default::default()
            }),
        })
        .await
        .expect("update plan");
    let tenants_using = delete_endpoint(&mut hooks, "billing").await.unwrap_err();
    assert_eq!(tenants_using.code(), Code::FailedPrecondition);
    assert!(
        tenants_using.message().contains("1 tenant"),
        "{}",
        tenants_using.message()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_with_bad_webhook_steps_are_refused_and_nothing_is_written() {
    let (app, mut hooks) = start().await;
    let billing = Receiver::start().await;
    create(&mut hooks, endpoint("billing", &billing.url("/"), &[])).await;
    let mut client = plans(&app).await;
    for (steps, field) in [
        (
            vec![call("create_billing_customer", "nobody", false, 3)],
            "plan.steps[0].webhook.endpoint",
        ),
        (
            vec![call("create_schema", "billing", false, 3)],
            "plan.steps[0].name",
        ),
        (
            vec![builtin("activate"), call("Bad-Name", "billing", false, 3)],
            "plan.steps[1].name",
        ),
        (
            vec![call("crm", "Not_A_Name", false, 3)],
            "plan.steps[0].webhook.endpoint",
        ),
    ] {
        let status = client
            .create_plan(CreatePlanRequest {
                plan: Some(Plan {
                    name: "billing".into(),
                    steps,
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_fields(&status), [field], "{status:?}");
        let missing = client
            .get_plan(GetPlanRequest {
                name: "billing".into(),
                version: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "nothing was written");
    }

    create_plan(
        &app,
        "billing",
        vec![call("create_billing_customer", "billing", false, 3)],
    )
    .await;
    let in_use = delete_endpoint(&mut hooks, "billing").await.unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition);
    assert!(in_use.message().contains("billing"), "{}", in_use.message());
    hooks
        .get_endpoint(GetEndpointRequest {
            name: "billing".into(),
        })
        .await
        .expect("the endpoint is still there");
    client
        .delete_plan(DeletePlanRequest {
            name: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    delete_endpoint(&mut hooks, "billing")
        .await
        .expect("no plan uses it any more");
    app.stop().await;
}
