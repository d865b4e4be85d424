//! TenantConfigService: plan defaults, typed values that round-trip,
//! resets, validation, plan limits, etags, events, and `tenantctl config`.

use std::time::Duration;

use tenantd::auth::{Scope, Verifier, mint_hs256};
use tenantd::proto::config_setting::Value;
use tenantd::proto::tenant_config_service_client::TenantConfigServiceClient;
use tenantd::proto::{
    ConfigCategory, ConfigSetting, CreateTenantRequest, GetTenantConfigRequest, TenantConfig,
    UpdateTenantConfigRequest,
};
use tenantd::steps::Registry;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::common::{TestApp, tenant, violated_fields};
use crate::tenantctl::run as tenantctl;

type Client = TenantConfigServiceClient<Channel>;

async fn client(app: &TestApp) -> Client {
    TenantConfigServiceClient::new(app.channel().await)
}

async fn get(client: &mut Client, id: &str) -> TenantConfig {
    client
        .get_tenant_config(GetTenantConfigRequest {
            tenant_id: id.into(),
        })
        .await
        .expect("get config")
        .into_inner()
        .config
        .expect("config")
}

fn set(key: &str, value: Value) -> ConfigSetting {
    ConfigSetting {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn text(s: &str) -> Value {
    Value::StringValue(s.into())
}

/// An update of `settings`, with `mask` if given.
fn update(
    id: &str,
    settings: Vec<ConfigSetting>,
    mask: Option<&[&str]>,
) -> UpdateTenantConfigRequest {
    UpdateTenantConfigRequest {
        tenant_id: id.into(),
        settings,
        update_mask: mask.map(|paths| prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        etag: String::new(),
    }
}

fn entry<'a>(config: &'a TenantConfig, key: &str) -> &'a ConfigSetting {
    config
        .settings
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no {key} in {config:#?}"))
}

async fn config_events(app: &TestApp, id: &str) -> Vec<String> {
    app.events(id)
        .await
        .into_iter()
        .filter(|(kind, _, message)| kind == "TENANT_UPDATED" && message.starts_with("config: "))
        .map(|(_, _, message)| message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_shows_its_plans_defaults() {
    let app = TestApp::api_only().await;
    let t = app.create("acme", "team").await;
    let config = get(&mut client(&app).await, &t.id).await;

    assert_eq!(config.tenant_id, t.id);
    assert!(!config.etag.is_empty());
    assert_eq!(config.update_time, t.create_time, "no setting changed yet");
    assert_eq!(config.settings.len(), 11, "every known setting is listed");
    assert!(
        config
            .settings
            .iter()
            .all(|s| s.is_default && !s.description.is_empty())
    );
    assert_eq!(entry(&config, "general.locale").value, Some(text("en")));
    assert_eq!(
        entry(&config, "auth.session_ttl_minutes").value,
        Some(Value::IntValue(240)),
        "a plan's text default is shown as the setting's type"
    );
    assert_eq!(
        entry(&config, "features.audit_log").value,
        Some(Value::BoolValue(true))
    );
    assert_eq!(
        entry(&config, "auth.mfa_required").value,
        None,
        "team has no default"
    );
    assert_eq!(
        entry(&config, "auth.max_users").category,
        ConfigCategory::Auth as i32
    );
    assert_eq!(
        entry(&config, "integrations.webhook_url").category,
        ConfigCategory::Integrations as i32
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_every_type_round_trip_and_reset_to_the_default() {
    let app = TestApp::api_only().await;
    let t = app.create("acme", "team").await;
    let mut client = client(&app).await;
    let before = get(&mut client, &t.id).await;

    let updated = client
        .update_tenant_config(update(
            &t.id,
            vec![
                set("general.timezone", text("Europe/Paris")),
                set("auth.session_ttl_minutes", Value::IntValue(30)),
                set("auth.max_users", text("100")),
                set("auth.mfa_required", Value::BoolValue(true)),
                set("features.beta_dashboard", text("true")),
                set(
                    "integrations.webhook_url",
                    text("https://hooks.acme.test/T0/secret-path"),
                ),
                set("billing.invoice_email", text("billing@acme.test")),
            ],
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_ne!(updated.etag, before.etag);
    let seconds = |c: &TenantConfig| c.update_time.map(|t| (t.seconds, t.nanos));
    assert!(seconds(&updated) > seconds(&before));
    for (key, value) in [
        ("general.timezone", text("Europe/Paris")),
        ("auth.session_ttl_minutes", Value::IntValue(30)),
        ("auth.max_users", Value::IntValue(100)),
        ("auth.mfa_required", Value::BoolValue(true)),
        ("features.beta_dashboard", Value::BoolValue(true)),
        (
            "integrations.webhook_url",
            text("https://hooks.acme.test/T0/secret-path"),
        ),
        ("billing.invoice_email", text("billing@acme.test")),
    ] {
        assert_eq!(entry(&updated, key).value, Some(value), "{key}");
        assert!(!entry(&updated, key).is_default, "{key}");
    }
    assert!(entry(&updated, "general.locale").is_default, "untouched");
    assert_eq!(
        get(&mut client, &t.id).await,
        updated,
        "a read shows the same"
    );
    let events = config_events(&app, &t.id).await;
    assert_eq!(events.len(), 1, "one event per change: {events:?}");
    assert!(
        events[0].contains("auth.session_ttl_minutes 240 (default) -> 30")
            && events[0].contains("auth.mfa_required unset -> true")
            && events[0].contains("\"https://hooks.acme.test/…\""),
        "{}",
        events[0]
    );
    assert!(!events[0].contains("secret-path"), "{}", events[0]);
    assert_eq!(
        app.get(&t.id).await.etag,
        t.etag,
        "the tenant record's etag is not the configuration's"
    );

    // In the mask without a value: back to the plan's default.
    let reset = client
        .update_tenant_config(update(
            &t.id,
            vec![set("general.locale", text("pt-BR"))],
            Some(&[
                "auth.session_ttl_minutes",
                "auth.mfa_required",
                "general.locale",
            ]),
        ))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    let ttl = entry(&reset, "auth.session_ttl_minutes");
    assert_eq!(
        (ttl.value.clone(), ttl.is_default),
        (Some(Value::IntValue(240)), true)
    );
    let mfa = entry(&reset, "auth.mfa_required");
    assert_eq!((mfa.value.clone(), mfa.is_default), (None, true));
    assert_eq!(entry(&reset, "general.locale").value, Some(text("pt-BR")));
    assert_eq!(
        entry(&reset, "auth.max_users").value,
        Some(Value::IntValue(100))
    );
    let events = config_events(&app, &t.id).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[1].contains("auth.session_ttl_minutes 30 -> 240 (default)"),
        "{}",
        events[1]
    );
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM tenant_config WHERE tenant_id = '{}'",
                t.id
            ))
            .await,
        6,
        "only explicit values are stored"
    );

    // The same update again changes nothing: no event, the same etag.
    let again = client
        .update_tenant_config(update(
            &t.id,
            vec![set("general.locale", text("pt-BR"))],
            Some(&["auth.session_ttl_minutes", "general.locale"]),
        ))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(again.etag, reset.etag);
    assert_eq!(config_events(&app, &t.id).await.len(), 2);
    app.stop().await;
}

/// Asserts that a call failed with `code` and left the configuration as it
/// was, with no event written.
async fn unchanged(
    app: &TestApp,
    client: &mut Client,
    id: &str,
    before: &TenantConfig,
    result: Result<tonic::Response<tenantd::proto::UpdateTenantConfigResponse>, Status>,
    code: Code,
) -> Status {
    let status = result.expect_err("the update fails");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(&get(client, id).await, before, "nothing changed");
    assert!(config_events(app, id).await.is_empty(), "no event");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_invalid_arguments_that_name_the_field() {
    let app = TestApp::api_only().await;
    let t = app.create("acme", "team").await;
    let mut client = client(&app).await;
    let before = get(&mut client, &t.id).await;

    for (request, fields) in [
        (
            update(&t.id, vec![set("general.nope", text("x"))], None),
            vec!["settings[0].key"],
        ),
        (
            update(
                &t.id,
                vec![
                    set("general.locale", text("fr")),
                    set("auth.session_ttl_minutes", Value::BoolValue(true)),
                ],
                None,
            ),
            vec!["settings[1].bool_value"],
        ),
        (
            update(
                &t.id,
                vec![
                    set("general.locale", text("english")),
                    set("auth.mfa_required", text("yes")),
                    set("auth.session_ttl_minutes", text("sixty")),
                    set("auth.max_users", Value::IntValue(0)),
                    set("integrations.webhook_url", text("http://plain.test/")),
                    set("general.timezone", Value::IntValue(1)),
                    set("billing.invoice_email", text("FjO@69'cK-7#r4bTR8ub")),
                ],
                None,
            ),
            vec![
                "settings[0].string_value",
                "settings[1].string_value",
                "settings[2].string_value",
                "settings[3].int_value",
                "settings[4].string_value",
                "settings[5].int_value",
                "settings[6].string_value",
            ],
        ),
        (
            update(
                &t.id,
                vec![set("general.locale", text("fr"))],
                Some(&["general.timezone", "general.bogus"]),
            ),
            vec!["update_mask.paths[1]", "settings[0].key"],
        ),
        (
            update(
                &t.id,
                vec![ConfigSetting {
                    key: "general.locale".into(),
                    ..Default::default()
                }],
                None,
            ),
            vec!["settings[0]"],
        ),
        (update(&t.id, vec![], None), vec!["settings"]),
        (
            update("not-a-uuid", vec![set("general.locale", text("fr"))], None),
            vec!["tenant_id"],
        ),
    ] {
        let result = client.update_tenant_config(request).await;
        let status = unchanged(
            &app,
            &mut client,
            &t.id,
            &before,
            result,
            Code::InvalidArgument,
        )
        .await;
        assert_eq!(violated_fields(&status), fields, "{status:?}");
        assert!(
            !status.message().contains("english"),
            "values are not echoed"
        );
    }
    let status = client
        .update_tenant_config(update(&t.id, vec![set("auth.max_users", text("x"))], None))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("must be an integer")
            && status.message().contains("auth.max_users"),
        "a clear reason: {}",
        status.message()
    );
    assert_eq!(app.db.count("SELECT count(*) FROM tenant_config").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_past_the_plans_limits_are_refused_and_name_the_limit() {
    let app = TestApp::api_only().await;
    let team = app.create("acme", "team").await;
    let mut client = client(&app).await;
    let before = get(&mut client, &team.id).await;

    let result = client
        .update_tenant_config(update(
            &team.id,
            vec![
                set("general.locale", text("fr")),
                set("auth.max_users", Value::IntValue(101)),
            ],
            None,
        ))
        .await;
    let status = unchanged(
        &app,
        &mut client,
        &team.id,
        &before,
        result,
        Code::FailedPrecondition,
    )
    .await;
    assert_eq!(
        status.message(),
        "auth.max_users 101 exceeds the plan's max_users limit (100)"
    );
    let violations = status
        .get_details_precondition_failure()
        .unwrap()
        .violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(
        (
            violations[0].r#type.as_str(),
            violations[0].subject.as_str()
        ),
        ("PLAN_LIMIT", "max_users")
    );
    let result = client
        .update_tenant_config(update(
            &team.id,
            vec![set("billing.max_api_calls_per_day", text("100001"))],
            None,
        ))
        .await;
    let status = unchanged(
        &app,
        &mut client,
        &team.id,
        &before,
        result,
        Code::FailedPrecondition,
    )
    .await;
    assert!(
        status
            .message()
            .contains("max_api_calls_per_day limit (100000)"),
        "{status:?}"
    );

    // At the limit is fine.
    client
        .update_tenant_config(update(
            &team.id,
            vec![set("auth.max_users", Value::IntValue(100))],
            None,
        ))
        .await
        .unwrap();

    // The default plan has no limits.
    let unlimited = app.create("globex", "default").await;
    let config = client
        .update_tenant_config(update(
            &unlimited.id,
            vec![
                set("auth.max_users", Value::IntValue(1_000_000)),
                set("billing.max_api_calls_per_day", text("9000000000000")),
            ],
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(
        entry(&config, "auth.max_users").value,
        Some(Value::IntValue(1_000_000))
    );
    assert_eq!(
        entry(&config, "billing.max_api_calls_per_day").value,
        Some(Value::IntValue(9_000_000_000_000))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_etag_is_aborted() {
    let app = TestApp::api_only().await;
    let t = app.create("acme", "basic").await;
    let mut client = client(&app).await;
    let first = get(&mut client, &t.id).await;
    let mut request = update(&t.id, vec![set("general.locale", text("fr"))], None);
    request.etag = first.etag.clone();
    let second = client
        .update_tenant_config(request.clone())
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    request.settings = vec![set("general.locale", text("de"))];
    let result = client.update_tenant_config(request.clone()).await;
    let status = result.expect_err("stale etag");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(get(&mut client, &t.id).await, second, "nothing changed");
    request.etag = second.etag;
    client.update_tenant_config(request).await.unwrap();
    assert_eq!(config_events(&app, &t.id).await.len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_deleted_and_deprovisioned_tenants() {
    let app = TestApp::api_only().await;
    let mut client = client(&app).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = client
        .get_tenant_config(GetTenantConfigRequest {
            tenant_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .update_tenant_config(update(
            &unknown,
            vec![set("general.locale", text("fr"))],
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let t = app.create("acme", "team").await;
    app.db
        .exec(&format!(
            "UPDATE tenants SET state = 'DEPROVISIONED' WHERE id = '{}'",
            t.id
        ))
        .await;
    let before = get(&mut client, &t.id).await;
    let result = client
        .update_tenant_config(update(&t.id, vec![set("general.locale", text("fr"))], None))
        .await;
    let status = unchanged(
        &app,
        &mut client,
        &t.id,
        &before,
        result,
        Code::FailedPrecondition,
    )
    .await;
    assert!(status.message().contains("DEPROVISIONED"), "{status:?}");

    app.db
        .exec(&format!(
            "UPDATE tenants SET delete_time = now() WHERE id = '{}'",
            t.id
        ))
        .await;
    let status = client
        .get_tenant_config(GetTenantConfigRequest {
            tenant_id: t.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plan_defaults_are_skipped_not_fatal() {
    let app = TestApp::api_only().await;
    app.db
        .exec(
            r#"INSERT INTO plans (name, steps, initial_data, limits) VALUES ('odd',
                '[{"name": "create_schema", "critical": true, "max_attempts": 1}]',
                '{"config": {"general.locale": "english", "auth.max_users": "50",
                             "general.unknown": "x", "auth.mfa_required": "true"}}',
                '{"max_users": 10}')"#,
        )
        .await;
    let t = app.create("acme", "odd").await;
    let config = get(&mut client(&app).await, &t.id).await;
    assert_eq!(
        entry(&config, "general.locale").value,
        None,
        "breaks its rule"
    );
    assert_eq!(
        entry(&config, "auth.max_users").value,
        None,
        "past the plan's own limit"
    );
    assert_eq!(
        entry(&config, "auth.mfa_required").value,
        Some(Value::BoolValue(true))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_apply_and_events_name_the_caller() {
    const SECRET: &str = "a config test secret of at least 32 bytes";
    let app = TestApp::start_with(
        |c| {
            c.auth = Some(Verifier::hs256(SECRET.as_bytes(), None, None));
            c.concurrency = 0;
        },
        Registry::new(),
    )
    .await;
    let token = |subject: &str, scope: Scope| -> MetadataValue<Ascii> {
        let token = mint_hs256(
            SECRET.as_bytes(),
            subject,
            &[scope],
            Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        format!("Bearer {token}").parse().unwrap()
    };
    let (alice, reader) = (token("alice", Scope::Write), token("rita", Scope::Read));
    let mut tenants = app.client.clone();
    let mut t = tenant("acme");
    t.plan = "team".into();
    let id = tenants
        .create_tenant(with(
            CreateTenantRequest {
                tenant: Some(t),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
        .id;

    let mut client = client(&app).await;
    let status = client
        .get_tenant_config(GetTenantConfigRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    client
        .get_tenant_config(with(
            GetTenantConfigRequest {
                tenant_id: id.clone(),
            },
            &reader,
        ))
        .await
        .unwrap();
    let status = client
        .update_tenant_config(with(
            update(&id, vec![set("general.locale", text("fr"))], None),
            &reader,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    client
        .update_tenant_config(with(
            update(&id, vec![set("general.locale", text("fr"))], None),
            &alice,
        ))
        .await
        .unwrap();
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM events WHERE tenant_id = '{id}' AND kind = 'TENANT_UPDATED' AND actor = 'alice'"
            ))
            .await,
        1
    );
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM tenant_config WHERE tenant_id = '{id}' AND actor = 'alice'"
            ))
            .await,
        1
    );
    app.stop().await;
}

fn with<T>(message: T, bearer: &MetadataValue<Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenantctl_gets_and_sets_settings() {
    let app = TestApp::api_only().await;
    let t = app.create("acme", "team").await;
    let id = t.id.as_str();

    let (code, out, err) = tenantctl(&app, &["config", "get", id]).await;
    assert_eq!(code, Some(0), "{err}");
    let line = |out: &str, key: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert!(out.starts_with("KEY"), "{out}");
    assert_eq!(
        line(&out, "auth.session_ttl_minutes"),
        ["auth.session_ttl_minutes", "auth", "240", "yes"]
    );
    assert_eq!(
        line(&out, "auth.mfa_required"),
        ["auth.mfa_required", "auth", "-", "yes"]
    );

    let (code, out, err) = tenantctl(
        &app,
        &[
            "config",
            "set",
            id,
            "auth.mfa_required=true",
            "auth.max_users=42",
            "general.timezone=Europe/Paris",
            "--reset",
            "features.audit_log",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        line(&out, "auth.mfa_required"),
        ["auth.mfa_required", "auth", "true", "no"]
    );
    assert_eq!(
        line(&out, "auth.max_users"),
        ["auth.max_users", "auth", "42", "no"]
    );
    assert_eq!(line(&out, "general.timezone")[2], "Europe/Paris");
    let etag = out
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("etag line")
        .to_owned();

    let (code, out, err) = tenantctl(&app, &["config", "get", id, "-o", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(json["config"]["etag"], etag.as_str());
    let max_users = json["config"]["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "auth.max_users")
        .unwrap();
    assert_eq!(
        max_users["intValue"], "42",
        "proto3 JSON: int64 as a string"
    );
    assert_eq!(max_users["category"], "CONFIG_CATEGORY_AUTH");

    let (code, _, err) = tenantctl(&app, &["config", "set", id, "auth.max_users=500"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("over the plan's limit (FailedPrecondition)")
            && err.contains("auth.max_users 500 exceeds the plan's max_users limit (100)")
            && err.contains("max_users: plan team v2 allows auth.max_users up to 100"),
        "{err}"
    );
    let (code, _, err) = tenantctl(&app, &["config", "set", id, "auth.max_users=many"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("invalid request (InvalidArgument)")
            && err.contains("settings[0].string_value"),
        "{err}"
    );
    let (code, _, err) = tenantctl(
        &app,
        &[
            "config",
            "set",
            id,
            "general.locale=fr",
            "--etag",
            "\"stale\"",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("conflict (Aborted)") && err.contains("tenantctl config get"),
        "{err}"
    );
    let (code, _, err) = tenantctl(
        &app,
        &["config", "set", id, "general.locale=fr", "--etag", &etag],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = tenantctl(&app, &["config", "set", id]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("nothing to change"), "{err}");
    let (code, _, _) = tenantctl(&app, &["config", "set", id, "no-equals-sign"]).await;
    assert_eq!(code, Some(2), "a usage error");
    app.stop().await;
}
