//! The `tenantctl` binary against the real server.

use tenantd::steps::Registry;

use crate::common::TestApp;
use crate::common::steps::Scripted;

async fn tenantctl(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantctl"))
        .arg("--endpoint")
        .arg(format!("http://{}", app.addr))
        .args(args)
        .env_remove("TENANTD_TOKEN")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
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
    let (ok, _, err) = tenantctl(&app, &["watch", "doomed", "--from-start"]).await;
    assert!(!ok, "a tenant that ends FAILED makes watch fail");
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
    assert!(!ok && err.contains("NotFound"), "clear error: {err}");
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
