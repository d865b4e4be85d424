//! GetTenant, ListTenants, UpdateTenant, DeleteTenant.

use std::collections::HashSet;

use tenantd::proto::{
    CreateTenantRequest, DeleteTenantRequest, GetTenantRequest, ListTenantsRequest, Tenant,
    TenantState, UpdateTenantRequest,
};
use tonic::Code;

use crate::common::{TestApp, tenant, violated_fields};

async fn create(app: &TestApp, slug: &str, labels: &[(&str, &str)]) -> Tenant {
    let mut t = tenant(slug);
    t.labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    app.client
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(t),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reports_bad_and_unknown_ids() {
    let app = TestApp::api_only().await;
    let mut client = app.client.clone();
    let err = client
        .get_tenant(GetTenantRequest {
            tenant_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["tenant_id"]);
    let err = client
        .get_tenant(GetTenantRequest {
            tenant_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let unknown = uuid::Uuid::now_v7().to_string();
    let err = client
        .get_tenant(GetTenantRequest {
            tenant_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&unknown));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_walks_every_tenant_once_in_creation_order() {
    let app = TestApp::api_only().await;
    let mut created = Vec::new();
    for i in 0..23 {
        let env = if i % 3 == 0 { "prod" } else { "dev" };
        created.push(
            create(&app, &format!("tenant-{i:02}"), &[("env", env)])
                .await
                .id,
        );
    }
    let mut client = app.client.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_tenants(ListTenantsRequest {
                page_size: 5,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.tenants.len() <= 5);
        assert!(
            page.tenants.iter().all(|t| t.steps.len() == 7),
            "tenants come with their steps"
        );
        seen.extend(page.tenants.into_iter().map(|t| t.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 5);
    assert_eq!(seen, created, "no gap, no duplicate, creation order");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 23);

    // Filters: labels and state, and a token cannot be reused across filters.
    let prod = ListTenantsRequest {
        page_size: 3,
        labels: [("env".to_owned(), "prod".to_owned())].into(),
        ..Default::default()
    };
    let first = client
        .list_tenants(prod.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.tenants.len(), 3);
    assert!(first.tenants.iter().all(|t| t.labels["env"] == "prod"));
    let rest = client
        .list_tenants(ListTenantsRequest {
            page_token: first.next_page_token.clone(),
            page_size: 10,
            ..prod.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.tenants.len(), 5, "8 prod tenants in all");
    let err = client
        .list_tenants(ListTenantsRequest {
            page_token: first.next_page_token,
            page_size: 3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);

    let active = client
        .list_tenants(ListTenantsRequest {
            state: TenantState::Active as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(active.tenants.is_empty());
    let all = client
        .list_tenants(ListTenantsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.into_inner().tenants.len(),
        23,
        "oversized pages are coerced, not refused"
    );

    for (req, field) in [
        (
            ListTenantsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListTenantsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            ListTenantsRequest {
                state: 99,
                ..Default::default()
            },
            "state",
        ),
        (
            ListTenantsRequest {
                plan: "x".repeat(1 << 16),
                ..Default::default()
            },
            "plan",
        ),
        (
            ListTenantsRequest {
                labels: [("Bad Key".to_owned(), "v".to_owned())].into(),
                ..Default::default()
            },
            "labels[\"Bad Key\"]",
        ),
    ] {
        let err = client.list_tenants(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), [field]);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_honours_mask_and_etag() {
    let app = TestApp::api_only().await;
    let mut client = app.client.clone();
    let t = create(&app, "acme", &[("env", "dev")]).await;

    let update = |mask: &[&str], tenant: Tenant| UpdateTenantRequest {
        tenant_id: t.id.clone(),
        tenant: Some(tenant),
        update_mask: Some(prost_types::FieldMask {
            paths: mask.iter().map(|p| (*p).to_owned()).collect(),
        }),
    };
    let changes = Tenant {
        display_name: "Acme Corp".into(),
        admin_email: "ignored@x.test".into(),
        etag: t.etag.clone(),
        ..Default::default()
    };
    let updated = client
        .update_tenant(update(&["display_name"], changes.clone()))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(updated.display_name, "Acme Corp");
    assert_eq!(
        updated.admin_email, t.admin_email,
        "fields outside the mask are untouched"
    );
    assert_eq!(updated.labels, t.labels);
    assert_ne!(updated.etag, t.etag);

    // The old etag is stale now.
    let err = client
        .update_tenant(update(&["display_name"], changes))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);

    let err = client
        .update_tenant(update(
            &["slug"],
            Tenant {
                slug: "other".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["update_mask"]);
    for bad in ["nope", "FjO@69'cK-7#r4bTR8ub", "ops@localhost"] {
        let err = client
            .update_tenant(update(
                &["admin_email"],
                Tenant {
                    admin_email: bad.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), ["tenant.admin_email"], "{bad}");
        assert!(err.message().contains("email address"), "{err:?}");
    }

    let err = client
        .update_tenant(UpdateTenantRequest {
            tenant_id: uuid::Uuid::now_v7().to_string(),
            tenant: Some(tenant("x")),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM events WHERE tenant_id = '{}' AND kind = 'TENANT_UPDATED'",
                t.id
            ))
            .await,
        1
    );
    let stored = app
        .db
        .count("SELECT count(*) FROM tenants WHERE display_name = 'Acme Corp' AND revision = 2")
        .await;
    assert_eq!(stored, 1, "failed updates changed nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_only_takes_finished_tenants_and_frees_the_slug() {
    let app = TestApp::api_only().await;
    let mut client = app.client.clone();
    let t = create(&app, "acme", &[]).await;
    let delete = DeleteTenantRequest {
        tenant_id: t.id.clone(),
        etag: String::new(),
    };

    let err = client.delete_tenant(delete.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("PROVISIONING"), "{}", err.message());

    app.db
        .exec(&format!(
            "UPDATE tenants SET state = 'FAILED' WHERE id = '{}'",
            t.id
        ))
        .await;
    app.db
        .exec(&format!("DELETE FROM outbox WHERE tenant_id = '{}'", t.id))
        .await;
    let err = client
        .delete_tenant(DeleteTenantRequest {
            etag: "\"99\"".into(),
            ..delete.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);

    let deleted = client
        .delete_tenant(delete.clone())
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert!(deleted.delete_time.is_some());
    let err = client
        .get_tenant(GetTenantRequest {
            tenant_id: t.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        client.delete_tenant(delete).await.unwrap_err().code(),
        Code::NotFound
    );
    let listed = client
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tenants.is_empty());

    // The slug is free again; the old tenant's events stay for audit.
    let again = create(&app, "acme", &[]).await;
    assert_ne!(again.id, t.id);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM events WHERE tenant_id = '{}'",
                t.id
            ))
            .await,
        2
    );
    app.stop().await;
}
