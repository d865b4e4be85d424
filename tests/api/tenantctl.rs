//! The `tenantctl` binary against the real server.

use std::time::Duration;

use tenantd::proto::webhook_service_client::WebhookServiceClient;
use tenantd::proto::{Endpoint, GetEndpointRequest};
use tenantd::steps::Registry;
use tonic::transport::Channel;

use crate::common::TestApp;
use crate::common::receiver::Receiver;
use crate::common::steps::Scripted;

async fn tenantctl(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = run(app, args).await;
    (code == Some(0), out, err)
}

/// The exit code, stdout and stderr of `tenantctl args` against `app`.
pub(crate) async fn run(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantctl"))
        .arg("--endpoint")
        .arg(format!("http://{}", app.addr))
        .args(args)
        .env_remove("TENANTD_TOKEN")
        .env_remove("TENANTD_ENDPOINT")
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_watch_and_tear_down_from_the_command_line() {
    let broken = Scripted::new("broken");
    broken
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut steps = Registry::new();
    steps.register(broken);
    let app = TestApp::start_with(|_| {}, steps).await;
    app.add_plan("doomed", &[("broken", true, 2)]).await;

    let (ok, out, err) = tenantctl(
        &app,
        &[
            "create",
            "acme",
            "--display-name",
            "Acme",
            "--admin-email",
            "a@acme.test",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("slug:         acme"), "{out}");
    let (ok, out, err) = tenantctl(&app, &["watch", "acme", "--from-start"]).await;
    assert!(ok, "watching to ACTIVE succeeds: {err}");
    assert!(
        out.contains("STEP_SUCCEEDED") && out.contains("ACTIVE: provisioning complete"),
        "{out}"
    );

    let (ok, _, err) = tenantctl(
        &app,
        &[
            "create",
            "doomed",
            "--display-name",
            "D",
            "--admin-email",
            "d@x.test",
            "--plan",
            "doomed",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (code, _, err) = run(&app, &["watch", "doomed", "--from-start"]).await;
    assert_eq!(code, Some(3), "a tenant that ends FAILED makes watch fail");
    assert!(err.contains("FAILED"), "{err}");

    let (ok, out, _) = tenantctl(&app, &["list"]).await;
    assert!(
        ok && out.contains("acme") && out.contains("FAILED"),
        "{out}"
    );
    let acme = out
        .lines()
        .find(|l| l.contains(" acme "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let (ok, out, err) =
        tenantctl(&app, &["deprovision", &acme, "--purge", "--reason", "done"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("DEPROVISIONING"), "{out}");
    let (ok, _, err) = tenantctl(&app, &["get", "00000000-0000-7000-8000-000000000000"]).await;
    assert!(
        !ok && err.contains("not found (NotFound)") && err.contains("tenant 00000000-"),
        "clear error: {err}"
    );
    let (ok, _, err) = tenantctl(
        &app,
        &[
            "create",
            "Bad Slug",
            "--display-name",
            "x",
            "--admin-email",
            "nope",
        ],
    )
    .await;
    assert!(
        !ok && err.contains("tenant.slug") && err.contains("tenant.admin_email"),
        "violations listed: {err}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_updates_and_error_hints() {
    let app = TestApp::start().await;
    let (code, out, err) = run(
        &app,
        &[
            "create",
            "acme",
            "--display-name",
            "Acme",
            "--admin-email",
            "a@acme.test",
            "--label",
            "env=prod",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(created["tenant"]["slug"], "acme");
    assert_eq!(created["tenant"]["state"], "TENANT_STATE_PROVISIONING");
    assert_eq!(created["tenant"]["labels"]["env"], "prod");
    let id = created["tenant"]["id"].as_str().unwrap().to_owned();

    // Not a terminal: one JSON object per stream message.
    let (code, out, err) = run(&app, &["watch", &id, "--from-start", "-o", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let messages: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect(line))
        .collect();
    assert!(messages[0].get("snapshot").is_some(), "{out}");
    assert_eq!(
        messages.last().unwrap()["event"]["state"],
        "TENANT_STATE_ACTIVE",
        "{out}"
    );
    assert_eq!(messages[1]["event"]["kind"], "EVENT_KIND_TENANT_CREATED");

    let (code, out, _) = run(&app, &["list", "--state", "active", "-o", "json"]).await;
    assert_eq!(code, Some(0));
    let page: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(page["tenants"].as_array().map(Vec::len), Some(1), "{out}");
    let (code, _, err) = run(&app, &["list", "--state", "sleeping"]).await;
    assert_eq!(code, Some(2), "a usage error");
    assert!(err.contains("not a tenant state"), "{err}");

    let (code, out, err) = run(
        &app,
        &[
            "update",
            &id,
            "--display-name",
            "Acme Two",
            "--label",
            "tier=gold",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("display name: Acme Two"), "{out}");
    assert!(
        out.contains("label:        tier=gold") && !out.contains("env=prod"),
        "{out}"
    );
    let (code, _, err) = run(
        &app,
        &[
            "update",
            &id,
            "--admin-email",
            "b@acme.test",
            "--etag",
            "\"1\"",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("conflict (Aborted)") && err.contains("hint: "),
        "{err}"
    );
    assert_eq!(
        app.get(&id).await.admin_email,
        "a@acme.test",
        "nothing changed"
    );
    let (code, _, err) = run(&app, &["update", &id]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("nothing to update"), "{err}");
    let (code, _, err) = run(&app, &["update", &id, "--admin-email", "nope"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("invalid request (InvalidArgument)") && err.contains("tenant.admin_email"),
        "{err}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_weak_token_is_explained() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let app = TestApp::start_with(
        |c| {
            c.auth = Some(tenantd::auth::Verifier::hs256(
                SECRET.as_bytes(),
                None,
                None,
            ))
        },
        Registry::new(),
    )
    .await;
    let (code, _, err) = run(&app, &["list"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("not authenticated (Unauthenticated)") && err.contains("--token"),
        "{err}"
    );
    let reader = tenantd::auth::mint_hs256(
        SECRET.as_bytes(),
        "reader",
        &[tenantd::auth::Scope::Read],
        std::time::Duration::from_secs(60),
        None,
        None,
    )
    .unwrap();
    let (code, _, err) = run(
        &app,
        &[
            "--token",
            &reader,
            "delete",
            "00000000-0000-7000-8000-000000000000",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("permission denied (PermissionDenied)"),
        "{err}"
    );
    let (code, out, err) = run(&app, &["--token", &reader, "list"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("ID"), "{out}");
    app.stop().await;
}

/// `tenantctl args` with no server flag of ours: `env` sets
/// `TENANTD_ENDPOINT` if given.
async fn bare(args: &[&str], env: Option<&str>) -> (Option<i32>, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantctl"));
    command
        .args(args)
        .env_remove("TENANTD_TOKEN")
        .env_remove("TENANTD_ENDPOINT");
    if let Some(server) = env {
        command.env("TENANTD_ENDPOINT", server);
    }
    let output = command.output().await.unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The value after `key:` on a `key: value` line of `out`.
fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .trim()
        .to_owned()
}

/// `tenantctl args -o json` until `done` holds for its answer (at most
/// 30 s).
async fn json_until(
    app: &TestApp,
    args: &[&str],
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = run(app, &args).await;
        assert_eq!(code, Some(0), "{err}");
        let answer: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
        if done(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`tenantctl {}` never answered what was awaited; last: {out}",
            args.join(" ")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The endpoint `billing` as the server has it.
async fn billing(client: &mut WebhookServiceClient<Channel>) -> Endpoint {
    client
        .get_endpoint(GetEndpointRequest {
            name: "billing".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap()
}

fn deliveries(page: &serde_json::Value) -> &[serde_json::Value] {
    page["deliveries"].as_array().map_or(&[], Vec::as_slice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_endpoints_are_managed_from_the_command_line() {
    let app = TestApp::start_with(crate::webhooks::webhooks, Registry::new()).await;
    let mut client = WebhookServiceClient::new(app.channel().await);
    let receiver = Receiver::start().await;
    let url = receiver.url("/billing");

    // Create: the endpoint, then its secret, once.
    let (code, out, err) = run(
        &app,
        &[
            "endpoint",
            "create",
            "billing",
            "--url",
            &url,
            "--description",
            "Billing",
            "--event-type",
            "tenant.created",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(field(&out, "name"), "billing");
    assert_eq!(field(&out, "url"), url);
    assert_eq!(field(&out, "event types"), "tenant.created");
    assert!(out.contains("shown only once"), "{out}");
    assert_eq!(out.matches("whsec_").count(), 1, "the secret, once: {out}");
    let secret = field(&out, "secret");
    assert!(secret.starts_with("whsec_"), "{out}");

    let (code, out, err) = run(
        &app,
        &[
            "endpoint",
            "create",
            "crm",
            "--url",
            "https://crm.example.com/hooks",
            "--event-type",
            "tenant.deprovisioned",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(created["endpoint"]["name"], "crm");
    assert_eq!(created["endpoint"]["url"], "https://crm.example.com/hooks");
    assert_eq!(
        created["endpoint"]["eventTypes"],
        serde_json::json!(["tenant.deprovisioned"])
    );
    assert_eq!(created["endpoint"]["etag"], "\"1\"");
    let crm_secret = created["secret"].as_str().expect(&out);
    assert!(
        crm_secret.starts_with("whsec_") && crm_secret != secret,
        "{out}"
    );
    assert!(
        err.contains("shown only once"),
        "said on stderr, off the JSON: {err}"
    );

    // Get: never the secret.
    let (code, out, err) = run(&app, &["endpoint", "get", "billing"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(field(&out, "description"), "Billing");
    assert_eq!(field(&out, "disabled"), "no");
    assert_eq!(field(&out, "etag"), "\"1\"");
    assert!(!out.contains("whsec_"), "{out}");

    // List: by name, a page at a time or all of them.
    let (code, out, err) = run(&app, &["endpoint", "list"]).await;
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["billing", "enabled", "tenant.created", url.as_str()],
            vec![
                "crm",
                "enabled",
                "tenant.deprovisioned",
                "https://crm.example.com/hooks",
            ],
        ],
        "{out}"
    );
    let (code, out, _) = run(&app, &["endpoint", "list", "--page-size", "1"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("billing") && !out.contains("crm"), "{out}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("next page: --page-token "))
        .expect(&out)
        .to_owned();
    let (code, out, _) = run(
        &app,
        &[
            "endpoint",
            "list",
            "--page-size",
            "1",
            "--page-token",
            &token,
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(code, Some(0));
    let page: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(page["endpoints"][0]["name"], "crm", "{out}");
    assert_eq!(page["endpoints"].as_array().map(Vec::len), Some(1), "{out}");
    assert!(page.get("nextPageToken").is_none(), "the last page: {out}");
    let (code, out, _) = run(&app, &["endpoint", "list", "--page-size", "1", "--all"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("billing") && out.contains("crm") && !out.contains("next page"),
        "{out}"
    );

    // Rotate: a new secret; a delivery is signed with both printed ones.
    let (code, out, err) = run(&app, &["endpoint", "rotate", "billing"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("shown only once"), "{out}");
    let rotated = field(&out, "secret");
    assert!(rotated.starts_with("whsec_") && rotated != secret, "{out}");
    app.create("acme", "").await;
    let received = receiver
        .wait("a tenant.created delivery", |r| !r.is_empty())
        .await;
    crate::webhooks::verify(&rotated, &received[0]).expect("signed with the new secret");
    crate::webhooks::verify(&secret, &received[0]).expect("and with the old one");

    // Update: the mask is the flags given.
    let before = billing(&mut client).await;
    let (code, out, err) = run(
        &app,
        &[
            "endpoint",
            "update",
            "billing",
            "--description",
            "Stripe bridge",
            "--disabled",
            "true",
            "--etag",
            &before.etag,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(field(&out, "disabled"), "yes");
    let after = billing(&mut client).await;
    assert_eq!(after.description, "Stripe bridge");
    assert!(after.disabled);
    assert_eq!(after.url, before.url, "not in the mask");
    assert_eq!(after.event_types, ["tenant.created"], "not in the mask");
    assert_ne!(after.etag, before.etag);

    let (code, _, err) = run(
        &app,
        &[
            "endpoint",
            "update",
            "billing",
            "--clear-event-types",
            "--disabled",
            "false",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let cleared = billing(&mut client).await;
    assert!(
        cleared.event_types.is_empty() && !cleared.disabled,
        "{cleared:?}"
    );
    assert_eq!(cleared.description, "Stripe bridge");

    let (code, out, err) = run(
        &app,
        &[
            "endpoint",
            "update",
            "billing",
            "--url",
            "https://billing.example.com/v2",
            "--event-type",
            "tenant.active",
            "--event-type",
            "tenant.failed",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let updated: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(
        updated["endpoint"]["eventTypes"],
        serde_json::json!(["tenant.active", "tenant.failed"])
    );
    let current = billing(&mut client).await;
    assert_eq!(current.url, "https://billing.example.com/v2");

    // A stale etag: the server's ABORTED message, nothing changed.
    let (code, _, err) = run(
        &app,
        &[
            "endpoint",
            "update",
            "billing",
            "--url",
            "https://other.example.com/",
            "--etag",
            &before.etag,
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("conflict (Aborted)")
            && err.contains(&format!(
                "endpoint billing changed: its etag is {}, not {}",
                current.etag, before.etag
            ))
            && err.contains(
                "hint: it changed or is busy: read it again (`tenantctl endpoint get billing`)"
            ),
        "{err}"
    );
    assert_eq!(billing(&mut client).await, current, "nothing changed");

    // No change asked for: a usage error before any call.
    for args in [
        &["endpoint", "update", "billing"][..],
        &["endpoint", "update", "billing", "--etag", "\"9\""],
    ] {
        let (code, _, err) = run(&app, args).await;
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains("required arguments were not provided") && err.contains("--url"),
            "{err}"
        );
    }
    assert_eq!(billing(&mut client).await, current, "nothing changed");

    // Delete: the etag is checked, then it is gone.
    let (code, _, err) = run(&app, &["endpoint", "delete", "crm", "--etag", "\"9\""]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("conflict (Aborted)"), "{err}");
    let (code, out, err) = run(&app, &["endpoint", "delete", "crm"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "deleted");
    let (code, out, err) = run(&app, &["endpoint", "delete", "billing", "-o", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "{}");
    assert_eq!(
        app.db.count("SELECT count(*) FROM webhook_endpoints").await,
        0
    );

    // Unknown names: NOT_FOUND, exit 1.
    for args in [
        &["endpoint", "get", "crm"][..],
        &["endpoint", "rotate", "crm"],
        &["endpoint", "update", "crm", "--description", "x"],
        &["endpoint", "delete", "crm"],
    ] {
        let (code, out, err) = run(&app, args).await;
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains("not found (NotFound): endpoint crm not found"),
            "{args:?}: {err}"
        );
        assert!(out.is_empty(), "{out}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_webhook_deliveries_are_listed_and_retried_from_the_command_line() {
    let app = TestApp::start_with(crate::webhooks::webhooks, Registry::new()).await;
    let server = format!("http://{}", app.addr);
    let server = server.as_str();
    // One attempt and the three retries of `webhooks()`'s schedule fail.
    let down = Receiver::start().await;
    down.answer(&[500, 500, 500, 500]);
    let up = Receiver::start().await;
    for (name, receiver) in [("down", &down), ("up", &up)] {
        let (code, _, err) = run(
            &app,
            &[
                "endpoint",
                "create",
                name,
                "--url",
                &receiver.url("/"),
                "--event-type",
                "tenant.created",
            ],
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
    }
    let tenant = app.create("acme", "").await;
    down.wait("four attempts", |r| r.len() >= 4).await;

    // `--endpoint` after `deliveries` is the webhook endpoint (the server
    // was given as `--endpoint` before it).
    let page = json_until(
        &app,
        &["deliveries", "--status", "failed", "--endpoint", "down"],
        |page| !deliveries(page).is_empty(),
    )
    .await;
    let failed = deliveries(&page);
    assert_eq!(failed.len(), 1, "{page}");
    let id = failed[0]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("msg_"), "{page}");
    assert_eq!(failed[0]["endpoint"], "down");
    assert_eq!(failed[0]["tenantId"], tenant.id.as_str());
    assert_eq!(failed[0]["type"], "tenant.created");
    assert_eq!(failed[0]["status"], "DELIVERY_STATUS_FAILED");
    assert_eq!(failed[0]["attempts"], 4);
    assert_eq!(failed[0]["lastHttpStatus"], 500);

    let (code, out, err) = run(
        &app,
        &["deliveries", "--status", "failed", "--endpoint", "down"],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "a header and the delivery: {out}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("STATUS") && lines[0].ends_with("LAST"),
        "{out}"
    );
    let columns: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        columns[..6],
        [
            id.as_str(),
            "down",
            tenant.id.as_str(),
            "tenant.created",
            "FAILED",
            "4"
        ],
        "{out}"
    );
    assert_eq!(
        columns[8..],
        ["-", "HTTP", "500"],
        "created, no next attempt, the last answer: {out}"
    );

    // The other filters.
    json_until(
        &app,
        &["deliveries", "--endpoint", "up", "--status", "delivered"],
        |page| deliveries(page).len() == 1,
    )
    .await;
    let (code, out, err) = run(&app, &["deliveries", "--tenant", &tenant.id]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.contains(" down ") && out.contains(" up ") && out.contains("DELIVERED"),
        "{out}"
    );
    let (code, out, _) = run(&app, &["deliveries", "--endpoint", "up"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains(" up ") && !out.contains(" down "), "{out}");
    for args in [
        &[
            "deliveries",
            "--tenant",
            "00000000-0000-7000-8000-000000000000",
        ][..],
        &["deliveries", "--endpoint", "down", "--status", "delivered"],
        &["deliveries", "--endpoint", "up", "--status", "pending"],
    ] {
        let (code, out, err) = run(&app, args).await;
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out.lines().count(), 1, "only the header: {args:?}: {out}");
    }

    // The server's address in every other spelling.
    let (code, out, err) = bare(&["endpoint", "get", "down", "--endpoint", server], None).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(field(&out, "name"), "down");
    for (args, env) in [
        (
            &["deliveries", "--endpoint", "down", "--server", server][..],
            None,
        ),
        (
            &["--server", server, "deliveries", "--endpoint", "down"],
            None,
        ),
        (&["deliveries", "--endpoint", "down"], Some(server)),
    ] {
        let (code, out, err) = bare(args, env).await;
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(
            out.contains(&id) && !out.contains(" up "),
            "{args:?}: {out}"
        );
    }

    // Retry: PENDING again, then delivered under the same id.
    let (code, out, err) = run(&app, &["deliveries", "retry", &id]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(field(&out, "id"), id);
    assert_eq!(field(&out, "status"), "PENDING");
    let page = json_until(
        &app,
        &["deliveries", "--endpoint", "down", "--status", "delivered"],
        |page| !deliveries(page).is_empty(),
    )
    .await;
    let delivered = deliveries(&page);
    assert_eq!(delivered[0]["id"], id.as_str());
    assert_eq!(delivered[0]["attempts"], 1, "a fresh schedule");
    let received = down.received();
    assert_eq!(received.len(), 5);
    assert!(received.iter().all(|r| r.header("webhook-id") == id));

    // Bad input.
    let (code, _, err) = run(&app, &["deliveries", "retry", &id]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("(FailedPrecondition)")
            && err.contains("only a FAILED delivery can be retried"),
        "{err}"
    );
    let (code, _, err) = run(&app, &["deliveries", "retry", "msg_nothing"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("not found (NotFound): delivery msg_nothing not found"),
        "{err}"
    );
    let (code, _, err) = run(&app, &["deliveries", "--tenant", "acme"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("invalid request (InvalidArgument)") && err.contains("tenant_id"),
        "{err}"
    );
    let (code, _, err) = run(&app, &["deliveries", "--status", "sleeping"]).await;
    assert_eq!(code, Some(2), "a usage error: {err}");
    assert!(
        err.contains("possible values: pending, delivered, failed"),
        "{err}"
    );
    app.stop().await;
}

#[tokio::test]
async fn usage_is_recorded_read_and_summed_from_the_command_line() {
    let app = TestApp::api_only().await;
    let tenant = app.create("usage-cli", "basic").await;
    let t = tenant.id.as_str();

    let (ok, out, err) = tenantctl(
        &app,
        &[
            "meter",
            "create",
            "reports",
            "--aggregation",
            "count",
            "--unit",
            "reports",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("reports") && out.contains("COUNT"), "{out}");
    let (ok, out, _) = tenantctl(&app, &["meter", "list"]).await;
    assert!(ok);
    for name in [
        "api_calls",
        "reports",
        "storage_bytes",
        "transactions",
        "users",
    ] {
        assert!(out.contains(name), "{name} missing: {out}");
    }

    let (ok, out, err) = tenantctl(
        &app,
        &["usage", "record", t, "api_calls", "250", "--id", "cli-1"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "cli-1 ACCEPTED");
    let (ok, out, _) = tenantctl(
        &app,
        &["usage", "record", t, "api_calls", "250", "--id", "cli-1"],
    )
    .await;
    assert!(ok);
    assert_eq!(out.trim(), "cli-1 DUPLICATE");
    // A refused event fails the command and says why.
    let (ok, _, err) = tenantctl(
        &app,
        &["usage", "record", t, "api_calls", "7", "--id", "cli-1"],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("was recorded with value 250"), "{err}");
    let (ok, _, err) = tenantctl(&app, &["usage", "record", t, "no_such_meter", "1"]).await;
    assert!(!ok);
    assert!(err.contains("unknown meter"), "{err}");
    let (ok, _, _) = tenantctl(
        &app,
        &["usage", "record", t, "api_calls", "750", "--id", "cli-2"],
    )
    .await;
    assert!(ok);

    let (ok, out, err) = tenantctl(
        &app,
        &[
            "usage",
            "query",
            t,
            "api_calls",
            "--time-zone",
            "Europe/Berlin",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 31, "a header and 30 days: {out}");
    let today = lines.last().unwrap();
    assert!(
        today.contains("1000") && today.ends_with(&"#".repeat(40)),
        "{today}"
    );
    assert!(lines[1..30].iter().all(|l| !l.contains('#')), "{out}");
    let (ok, out, _) = tenantctl(
        &app,
        &[
            "--output",
            "json",
            "usage",
            "query",
            t,
            "api_calls",
            "--window",
            "hour",
        ],
    )
    .await;
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["buckets"].as_array().unwrap().len(), 30, "{json}");

    let (ok, out, err) = tenantctl(&app, &["usage", "summary", t]).await;
    assert!(ok, "{err}");
    let calls = out.lines().find(|l| l.starts_with("api_calls")).unwrap();
    assert!(
        calls.contains("1000") && calls.contains("10000") && calls.contains("10.0%"),
        "{calls}"
    );

    let (ok, _, err) = tenantctl(&app, &["meter", "delete", "api_calls"]).await;
    assert!(!ok);
    assert!(err.contains("built in"), "{err}");
    let (ok, out, _) = tenantctl(&app, &["meter", "delete", "reports"]).await;
    assert!(ok);
    assert!(out.contains("deleted"), "{out}");
    app.stop().await;
}
