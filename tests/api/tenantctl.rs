//! The `tenantctl` binary against the real server.

use tenantd::steps::Registry;

use crate::common::TestApp;
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
