//! `seed_roles_and_admin`: the default roles, the admin user, and a
//! single-use invitation of which only the token's hash is stored.
//!
//! The token that reaches the admin is issued by `send_welcome_email`, which
//! rotates the stored hash right before sending: the email is then the only
//! place a usable token exists, and a resent email supersedes the last one.

use async_trait::async_trait;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Output, Step, StepCtx, StepError};

/// How long an invitation link stays valid.
pub const INVITATION_TTL: &str = "7 days";

/// Default roles of a tenant.
const ROLES: [(&str, &str); 3] = [
    ("admin", "Manages the tenant, its users and settings"),
    ("member", "Uses the product"),
    ("viewer", "Reads, changes nothing"),
];

pub struct SeedRolesAndAdmin;

/// The admin's user id: derived from the tenant id, so that re-running the
/// step finds the same user.
pub fn admin_user_id(tenant_id: Uuid) -> Uuid {
    Uuid::new_v5(&tenant_id, b"admin")
}

/// SHA-256 hex of an invitation token, as stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random invitation token (256 bits, URL-safe).
pub fn new_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[async_trait]
impl Step for SeedRolesAndAdmin {
    fn name(&self) -> &'static str {
        "seed_roles_and_admin"
    }

    fn external_work(&self) -> bool {
        false
    }

    async fn run_in_db(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<Output, StepError> {
        let schema = ctx.names.schema_ident();
        let extra = ctx
            .extra_roles
            .iter()
            .map(|name| (name.as_str(), "added by the tenant's plan"));
        for (name, description) in ROLES.iter().copied().chain(extra) {
            diesel::sql_query(format!(
                "INSERT INTO {schema}.roles (name, description) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
            ))
            .bind::<Text, _>(name)
            .bind::<Text, _>(description)
            .execute(conn)
            .await?;
        }
        let user_id = admin_user_id(ctx.tenant_id);
        diesel::sql_query(format!(
            "INSERT INTO {schema}.users (id, email, display_name, role_id)
             SELECT $1, $2, 'Administrator', id FROM {schema}.roles WHERE name = 'admin'
             ON CONFLICT (id) DO NOTHING"
        ))
        .bind::<SqlUuid, _>(user_id)
        .bind::<Text, _>(&ctx.admin_email)
        .execute(conn)
        .await?;
        diesel::sql_query(format!(
            "INSERT INTO {schema}.invitations (user_id, token_hash, expires_at)
             VALUES ($1, $2, now() + interval '{INVITATION_TTL}')
             ON CONFLICT (user_id) DO NOTHING"
        ))
        .bind::<SqlUuid, _>(user_id)
        .bind::<Text, _>(hash_token(&new_token()))
        .execute(conn)
        .await?;
        // After the admin: the admin is the first user any limit allows.
        for (name, value) in &ctx.limits {
            diesel::sql_query(format!(
                "INSERT INTO {schema}.plan_limits (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
            ))
            .bind::<Text, _>(name)
            .bind::<diesel::sql_types::BigInt, _>(value)
            .execute(conn)
            .await?;
        }
        Ok(Output::from([(
            "admin_user_id".to_owned(),
            user_id.to_string(),
        )]))
    }

    async fn compensate_in_db(
        &self,
        conn: &mut AsyncPgConnection,
        ctx: &StepCtx,
    ) -> Result<(), StepError> {
        let schema = ctx.names.schema_ident();
        let schema_name = ctx.names.schema.clone();
        // The schema may already be gone if compensation is re-run.
        conn.batch_execute(&format!(
            "DO $$ BEGIN
                 IF to_regclass('{schema_name}.invitations') IS NOT NULL THEN
                     UPDATE {schema}.invitations SET revoked_at = now() WHERE revoked_at IS NULL AND used_at IS NULL;
                 END IF;
             END $$;"
        ))
        .await?;
        Ok(())
    }

    fn resources(&self, ctx: &StepCtx) -> Vec<String> {
        vec![format!(
            "invitation of {} in schema {}",
            admin_user_id(ctx.tenant_id),
            ctx.names.schema
        )]
    }
}
